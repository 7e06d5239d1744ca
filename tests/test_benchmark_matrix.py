"""The seed-level statistics, the step rules' arithmetic, the generated prompt sets and the matrix command."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from quality import matrix, prompt_sets
from quality.evaluate import read_prompts
from quality.stats import seed_test, sign_test_p, variance_shares, wilcoxon_p
from segret_lib.engine.losses import loss_terms, retention_loss, segregation_loss
from segret_lib.engine.step_rule import (
    RULES,
    StepRule,
    budget_factor,
    fade_factor,
    get_rule,
    keep_rms,
    lowpass,
)
from segret_lib.settings.params import ParamError, SegretParams


def test_wilcoxon_matches_scipy_exact_and_handles_ties_and_zeros():
    rng = np.random.default_rng(3)
    for n in (5, 9, 16):
        d = rng.normal(0.3, 1.0, size=n)
        assert wilcoxon_p(d) == pytest.approx(scipy_stats.wilcoxon(d, method="exact").pvalue, rel=1e-9)
    assert wilcoxon_p([1.0] * 6) == pytest.approx(2 / 64)  # all six up: the most extreme of 2^6 patterns
    assert wilcoxon_p([0.0, 0.0, 0.5, -0.5]) == 1.0  # zeros dropped, a symmetric tie
    assert wilcoxon_p([]) == 1.0
    assert sign_test_p(6, 0) == pytest.approx(2 / 64)


def test_seed_test_is_over_seeds_not_pairs():
    # 8 seeds x 20 prompts; the variant is better on 5 seeds for every prompt, worse on 3 for every prompt:
    # 160 pairs look decisive (100 vs 60) but the seeds, the real samples, are 5 up and 3 down
    plain, variant = {}, {}
    for seed, prompt in itertools.product(range(8), range(20)):
        plain[(f"p{prompt}", seed)] = 0.0 if seed < 5 else 1.0
        variant[(f"p{prompt}", seed)] = 1.0 if seed < 5 else 0.0
    t = seed_test(variant, plain)
    assert (t["seeds"], t["seeds_up"], t["seeds_down"]) == (8, 5, 3)
    assert t["wilcoxon_p"] > 0.5 and t["sign_p"] > 0.5
    assert sign_test_p(100, 60) < 0.01
    assert t["ci95"][0] < t["mean_diff"] < t["ci95"][1]


def test_variance_shares_find_the_factor_that_varies():
    values = {(m, f"p{p}", s): float(s % 2) for m in ("plain", "astar") for p in range(4) for s in range(6)}
    shares = variance_shares(values)
    assert shares["seed"] == pytest.approx(1.0) and shares["prompt"] == pytest.approx(0.0)
    values = {(m, f"p{p}", s): float(m == "astar") + 0.5 * float(p == 0)
              for m in ("plain", "astar") for p in range(4) for s in range(6)}
    shares = variance_shares(values)
    assert shares["method"] > 0.5 and shares["prompt"] > 0.1 and shares["seed"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="every"):
        variance_shares({("plain", "p", 0): 1.0, ("astar", "q", 1): 0.0})


def test_normalised_losses_are_means_and_terms_stay_sums():
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = (maps > 0.5).float()
    raw, terms = loss_terms("astar", maps, masks)
    norm, norm_terms = loss_terms("astar", maps, masks, normalise=True)
    seg, ret = segregation_loss(maps), retention_loss(maps, masks)
    assert raw.item() == pytest.approx((seg + ret).item())
    assert norm.item() == pytest.approx((seg / 6 + ret / 4).item())  # 6 pairs, 4 concepts
    assert terms["seg"].item() == pytest.approx(norm_terms["seg"].item())


def test_budget_and_lowpass():
    rule = get_rule("balanced")
    assert budget_factor(rule, 5) == 1.0 and budget_factor(rule, rule.budget) == 1.0
    assert budget_factor(rule, 4 * rule.budget) == pytest.approx(0.5)  # sqrt(budget / T)
    assert budget_factor(StepRule("full", budget=10), 40) == pytest.approx(0.25)  # power 1: a fixed total push
    assert budget_factor(get_rule("v1"), 50) == 1.0
    flat = torch.full((1, 3, 32, 32), 2.0)
    torch.testing.assert_close(lowpass(flat, (8, 8), 0.5), flat)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]).remainder(2).float()[None, None] * 2 - 1
    blurred = lowpass(checker.expand(2, 3, 32, 32).contiguous(), (8, 8), 0.5)
    assert blurred.shape == (2, 3, 32, 32) and blurred.abs().max() < 0.05 * checker.abs().max()
    assert torch.equal(lowpass(checker, (32, 32), 0.5), checker)  # capture as fine as the latent: nothing to cut
    with pytest.raises(ValueError, match="step_rule"):
        get_rule("nope")


def test_fade_of_a_candidate_rule():
    fading = StepRule("fading", fade=1.0)
    assert [fade_factor(fading, t, 4) for t in range(4)] == [1.0, 0.75, 0.5, 0.25]  # (T - t) / T
    assert fade_factor(StepRule("sq", fade=2.0), 2, 4) == pytest.approx(0.25)
    assert all(fade_factor(get_rule(n), 7, 10) == 1.0 for n in ("v1", "balanced"))  # the shipped rules: no fade


def test_keep_rms_rescales_each_image_to_its_rms_before_the_update():
    old = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 5.0]).reshape(
        3, 1, 1, 1)
    new = old + 0.5 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    kept = keep_rms(new, old)
    rms = lambda t: t.pow(2).mean(dim=(1, 2, 3)).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(kept), rms(old))
    assert (rms(new) - rms(old)).abs().min() > 1e-3  # the update did change the norm
    cos = torch.nn.functional.cosine_similarity(kept.flatten(1), new.flatten(1))
    torch.testing.assert_close(cos, torch.ones(3))  # the direction of the updated latent is kept


def test_step_rule_setting_infotext_and_old_infotexts():
    p = SegretParams.create(enabled=True, concepts="cat, dog")
    assert p.step_rule == "early" and p.to_infotext()["A-STAR step rule"] == "early"
    assert SegretParams.from_infotext(p.to_infotext()) == p
    old = {"A-STAR concepts": "cat, dog", "A-STAR step size": "10", "A-STAR seg weight": "1"}
    q = SegretParams.from_infotext(old)  # written before the rule existed: v1, as it was made
    assert (q.step_rule, q.step_size) == ("v1", 10.0) and "A-STAR step rule" not in q.to_infotext()
    assert SegretParams.create(enabled=True, concepts="a, b", method="aae").step_rule == "v1"
    assert SegretParams.create(enabled=True, concepts="a, b", step_size=12).step_size == 12.0  # explicit wins
    with pytest.raises(ParamError, match="step_rule"):
        SegretParams.create(enabled=True, concepts="a, b", step_rule="fast")
    # one spelling: a rule typed in another case is the same rule, and v1 stays out of the infotext
    assert SegretParams.create(enabled=True, concepts="a, b", step_rule=" Balanced ").step_rule == "balanced"
    assert "A-STAR step rule" not in SegretParams.create(enabled=True, concepts="a, b", step_rule="V1").to_infotext()
    assert SegretParams.from_infotext({**old, "A-STAR step rule": "Balanced"}).step_rule == "balanced"
    # an image made with balanced (the default before steady) pastes as balanced, which keeps no norm
    made = SegretParams.from_infotext({**old, "A-STAR step size": "30", "A-STAR step rule": "balanced"})
    assert (made.step_rule, made.step_size, get_rule(made.step_rule).keep_norm) == ("balanced", 30.0, False)
    assert get_rule("steady").keep_norm and get_rule("steady").blur == get_rule("balanced").blur


def test_generated_prompt_sets_are_disjoint_and_reproducible(tmp_path, monkeypatch):
    sets = {name: read_prompts(prompt_sets.PROMPTS / f"{name}.txt") for name in prompt_sets.SETS}
    for name, (n, nouns, count, _held) in prompt_sets.SETS.items():
        specs = sets[name]
        assert len(specs) == count and all(len(s.objects) == n for s in specs)
        assert all(len(s.concepts) == n for s in specs)
        if nouns:
            assert all(set(s.concepts) == {o[1] for o in s.objects} for s in specs)
    for a, b in itertools.combinations(prompt_sets.SETS, 2):
        if prompt_sets.SETS[a][1] == prompt_sets.SETS[b][1]:
            assert not ({frozenset(s.objects) for s in sets[a]} & {frozenset(s.objects) for s in sets[b]}), (a, b)
    monkeypatch.setattr(prompt_sets, "PROMPTS", tmp_path)
    for name in prompt_sets.WRITTEN:
        (tmp_path / name).write_text((matrix.PROMPTS / name).read_text())
    prompt_sets.main()
    for name in prompt_sets.SETS:
        assert (tmp_path / f"{name}.txt").read_text() == (matrix.PROMPTS / f"{name}.txt").read_text()


def test_rotation_gives_each_seed_its_prompts():
    specs = list(range(5))
    pairs = matrix.jobs_for(specs, [10, 11, 12], 2)
    assert pairs == [(0, 10), (1, 10), (2, 11), (3, 11), (4, 12), (0, 12)]
    assert len(matrix.jobs_for(specs, [1, 2], 0)) == 10


def test_matrix_command_runs_a_tiny_matrix(tmp_path, capsys):
    before = dict(RULES)
    try:
        report = matrix.main(["--family", "tune", "--counts", "3", "--samplers", "euler_a,ddim", "--steps", "2",
                              "--seeds", "3", "--per-seed", "0", "--jobs", "1",
                              "--rule", "t:normalise=1,budget=1,blur=1",
                              "--variants", "astar,mine:step_rule=t;step_size=5", "--out", str(tmp_path)])
    finally:
        RULES.clear()
        RULES.update(before)
    text = capsys.readouterr().out
    assert "#### astar" in text and "#### mine" in text and "| **pooled** |" in text
    cells = report["cells"]
    assert set(cells) == {"3 objects, euler_a 2", "3 objects, ddim 2"}
    n = 3 * len(read_prompts(matrix.prompt_file("tune", "3")))
    for by_variant in cells.values():
        for r in by_variant.values():
            assert r["n"] == n and r["seeds"] == 3
            assert r["colours"]["fixed"] + r["colours"]["broken"] <= n
            assert 0.0 <= r["colours"]["seed"]["wilcoxon_p"] <= 1.0 and set(r["passes"]) == set(matrix.CRITERIA)
    assert report["variance"]  # crossed design: the variance shares are reported
    saved = json.loads((tmp_path / "matrix.json").read_text())
    assert saved["pooled"]["astar"]["n"] == 2 * n
    # the whole matrix tested over seeds: each of the 3 seeds is one unit across both cells
    pooled_seed = saved["pooled"]["astar"]["seed"]
    assert set(pooled_seed) == {"colours", "objects", "stray", "grain"}
    assert {"grain", "cells_passing_stray"} <= set(saved["pooled"]["astar"])
    assert all(t["seeds"] == 3 and t["seeds_up"] + t["seeds_down"] <= 3 for t in pooled_seed.values())
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| 3 objects, ") == 2 and "**pooled**" in summary and "| mine |" in summary
    # cached: a second run samples nothing
    matrix.main(["--family", "tune", "--counts", "3", "--samplers", "euler_a,ddim", "--steps", "2", "--seeds", "3",
                 "--per-seed", "0", "--jobs", "1", "--variants", "astar", "--out", str(tmp_path)])
    assert "0 to run" in capsys.readouterr().out
    assert StepRule("x").budget == 0
    # a variant against another (not plain) at the seed level: attribute binding against A-STAR
    report = matrix.main(["--family", "tune", "--counts", "3", "--samplers", "ddim", "--steps", "2", "--seeds", "3",
                          "--per-seed", "1", "--jobs", "1", "--variants", "astar,astar_bind",
                          "--versus", "astar_bind:astar", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert "| astar_bind vs astar |" in text and "| all cells | 3 |" in text and "| 3 objects | 3 |" in text
    assert all(t["seeds"] == 3 for t in report["versus"]["seed"].values())


def test_grain_follows_noise_not_the_number_of_objects():
    from quality.detector import grain_calibration

    table = grain_calibration(noise=(0.0, 0.02, 0.05), counts=(1, 3), scenes=12)
    for n in (1, 3):
        assert table[(n, 0.0)] < 0.002 < table[(n, 0.02)] < table[(n, 0.05)]
        assert table[(n, 0.05)] == pytest.approx(0.85 * 0.05, rel=0.1)
    assert table[(3, 0.05)] == pytest.approx(table[(1, 0.05)], rel=0.05)  # three objects read as one does


def test_cells_of_records_without_grain_fall_back_to_stray():
    from quality.evaluate import Record

    def recs(stray, grain=None):
        return [Record(f"p{i}", s, [True], True, True, None, None, stray, True, grain)
                for i in range(2) for s in range(4)]

    old = matrix.cell_summary(recs(0.05), recs(0.04), 0.1, 0.1)  # records made before grain: stray decides
    assert "grain" not in old and not matrix.passes(old) and not matrix.passes(old, matrix.PASS_WITH_STRAY)
    new = matrix.cell_summary(recs(0.05, 0.010), recs(0.04, 0.010), 0.1, 0.1)  # outlines up, noise the same
    assert matrix.passes(new) and not matrix.passes(new, matrix.PASS_WITH_STRAY)
    grainy = matrix.cell_summary(recs(0.04, 0.012), recs(0.04, 0.010), 0.1, 0.1)
    assert not matrix.passes(grainy) and matrix.passes(grainy, matrix.PASS_WITH_STRAY)


def test_timing_prints_interleaved_ratios(capsys):
    from quality import timing

    result = timing.main(["--images", "2", "--steps", "2", "--rounds", "1", "--variants", "plain,astar,aae"])
    assert set(result) == {"plain", "astar", "aae"} and all(t > 0 for t in result.values())
    out = capsys.readouterr().out
    assert "| astar |" in out and "x A&E" in out


def test_job_keys_follow_the_defaults_a_variant_runs_with():
    """A variant that leaves the rule or Both's excite weight to the defaults keys its cached jobs on them; one
    that sets them, plain, and Attend-and-Excite (its own v1 rule) do not."""
    from segret_lib.settings.params import BOTH_EXCITE_WEIGHT

    assert matrix.defaults_in_key(None) == {} and matrix.defaults_in_key({"method": "aae"}) == {}
    astar = matrix.defaults_in_key({})
    assert set(astar) == {"default_rule"} and astar["default_rule"]["name"] == "early"
    assert matrix.defaults_in_key({"step_rule": "steady"}) == {}
    both = matrix.defaults_in_key({"method": "both"})
    assert both["default_excite_weight"] == BOTH_EXCITE_WEIGHT and "default_rule" in both
    assert "default_excite_weight" not in matrix.defaults_in_key({"method": "both", "excite_weight": 1.0})
