"""End to end, for correctness (not quality): procedural dataset -> committed weights -> sampling through
SegretSession (Euler and DDIM) -> detector -> table. Training is not part of CI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from quality import dataset, evaluate
from quality.detector import detect, judge
from quality.model import WEIGHTS, load
from segret_lib.settings.params import SegretParams


def test_scenes_are_deterministic_and_respect_held_out_pairs():
    a, b = dataset.sample_scene(5, 17), dataset.sample_scene(5, 17)
    assert a == b and np.array_equal(dataset.render(a), dataset.render(b))
    seen = set()
    for i in range(400):
        scene = dataset.sample_scene(5, i)
        assert 1 <= len(scene.objects) <= 2
        assert len({o.colour for o in scene.objects}) == len(scene.objects)
        assert scene.caption.startswith("a ") and all(o.phrase in scene.caption for o in scene.objects)
        seen.update((o.colour, o.shape) for o in scene.objects)
    assert not seen & dataset.HELD_OUT
    assert {(o.colour, o.shape) for i in range(400)
                                for o in dataset.sample_scene(5, i, train=False).objects} >= dataset.HELD_OUT


def test_detector_reads_ground_truth_and_rejects_wrong_shapes():
    for i in range(60):
        scene = dataset.sample_scene(99, i, train=False)
        found = detect(dataset.render(scene))
        wanted = [(o.colour, o.shape) for o in scene.objects]
        assert sorted((f.colour, f.shape) for f in found) == sorted(wanted), (i, scene, found)
        wrong = [(c, next(s for s in dataset.SHAPES if s != sh)) for c, sh in wanted]
        assert not any(judge(found, wrong).present)
    blank = np.full((dataset.SIZE, dataset.SIZE, 3), dataset.BACKGROUND, dtype=np.float32)
    assert detect(blank) == []


def test_committed_weights_match_their_hash():
    meta = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == meta["sha256"]
    assert WEIGHTS.stat().st_size < 25 * 2**20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared CPU (10x slower with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine():
    return evaluate.Engine(load())


def test_seeds_are_paired_independently_of_batching():
    torch.testing.assert_close(evaluate.seed_noise([3]), evaluate.seed_noise([1, 3])[1:])


def test_start_noise_has_no_mean_colour_and_unit_rms_per_image():
    unit, raw = evaluate.seed_noise(range(8)), evaluate.seed_noise(range(8), "raw")
    rms = unit.pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones(8))
    assert unit.mean(dim=(2, 3)).abs().max() < 1e-6 and raw.mean(dim=(2, 3)).abs().max() < 1e-6
    raw_rms = raw.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert raw_rms.std() > 0.003  # the raw draws' RMS varies from seed to seed; unit noise is raw rescaled
    torch.testing.assert_close(unit, raw / raw_rms.reshape(-1, 1, 1, 1))
    draws = evaluate.seed_noise_sampler([0, 1])(None, None)
    torch.testing.assert_close(draws.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.ones(2))
    with pytest.raises(ValueError, match="noise"):
        evaluate.seed_noise([0], "pink")


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_refinement_runs_through_the_engine_and_moves_the_image(engine, sampler):
    spec = evaluate.PromptSpec("a red circle and a blue square", ("red circle", "blue square"),
                               (("red", "circle"), ("blue", "square")))
    params = SegretParams(enabled=True, concepts=spec.concepts, step_rule="steady")  # every step refined
    plain, none = engine.sample([spec, spec], [0, 1], sampler, 4, 4.0, None)
    again, _ = engine.sample([spec, spec], [0, 1], sampler, 4, 4.0, None)
    refined, session = engine.sample([spec, spec], [0, 1], sampler, 4, 4.0, params)
    assert none is None and torch.equal(plain, again)  # deterministic
    assert plain.shape == refined.shape == (2, 3, dataset.SIZE, dataset.SIZE)
    assert float(refined.min()) >= 0.0 and float(refined.max()) <= 1.0
    results = session.passes[0].results
    assert len(results) == 4 and all(r.updates == 1 for r in results) and not session.warnings
    assert 0.0 < results[0].parts["seg"] / 2 <= 0.5
    assert (refined - plain).abs().max() > 1e-3
    assert session.capture.installed is False  # hooks removed


def test_evaluate_command_writes_table_json_and_grid(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# comment\na red circle and a blue square | red circle, blue square\n"
                       "a green triangle and a yellow square | triangle, square\n")
    out = tmp_path / "r.json"
    report = evaluate.main(["--prompts", str(prompts), "--seeds", "2", "--steps", "3",
                            "--variants", "astar,ret_only", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| plain | 4 |" in text and "| astar | 4 |" in text and "| ret_only | 4 |" in text
    saved = json.loads(out.read_text())
    assert saved["summaries"] == json.loads(json.dumps(report["summaries"]))
    for name, s in saved["summaries"].items():
        assert s["n"] == 4 and 0.0 <= s["all_present"] <= 1.0 and 0.0 <= s["object_recall"] <= 1.0
        if name != "plain":
            assert 0 <= s["fixed"] + s["broken"] <= 4
    assert saved["summaries"]["astar"]["seg_first"] is not None
    assert saved["summaries"]["ret_only"]["seg_first"] is None  # no segregation term computed
    plain = {(r["prompt"], r["seed"]) for r in saved["records"]["plain"]}
    assert plain == {(r["prompt"], r["seed"]) for r in saved["records"]["astar"]}
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(ValueError, match="no '<colour> <shape>' object"):
        evaluate.read_prompts(_write(tmp_path / "bad.txt", "a cat and a dog | cat, dog\n"))


def _write(path, text):
    path.write_text(text)
    return path


def test_sign_test_p_is_the_exact_two_sided_binomial_tail():
    assert evaluate.sign_test_p(0, 0) == 1.0 and evaluate.sign_test_p(4, 4) == 1.0
    assert evaluate.sign_test_p(5, 0) == evaluate.sign_test_p(0, 5) == 2 / 32
    assert abs(evaluate.sign_test_p(8, 2) - 2 * 56 / 1024) < 1e-12  # C(10,0)+C(10,1)+C(10,2) = 56


def test_detector_reads_grainy_scenes_and_imperfect_shapes():
    from quality.detector import accuracy, classify

    grainy = accuracy(scenes=60, seed=98, grain=0.1)  # per-pixel grain like the model's samples
    assert grainy["object_recall"] >= 0.95 and grainy["wrong_shape_rejected"] >= 0.95, grainy
    yy, xx = np.mgrid[-6:7, -6:7]
    octagon = (np.abs(xx) + np.abs(yy) <= 9) & (np.abs(xx) <= 6) & (np.abs(yy) <= 6)  # a circle drawn with corners cut
    pinched = np.abs(xx) + 0.0 * yy <= 6
    pinched &= ~((np.abs(yy) <= 3) & (np.abs(xx) == 6))  # a square whose sides bow in
    diamond = np.abs(xx) + np.abs(yy) <= 6
    assert classify(octagon) == "circle" and classify(pinched) == "square"
    assert classify(diamond) == "other"
    triangle = np.abs(xx) <= (yy + 6) / 2
    assert classify(triangle) == "triangle"
