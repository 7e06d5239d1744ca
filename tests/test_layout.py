"""Layout boxes (paper section 5): parsing and validation, box -> mask at any capture size, the layout loss on the
real tiny UNet and on the trained shapes model, and the overlays."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from segret_lib.engine.attention_maps import capture_hw
from segret_lib.engine.layout import box_mask, image_target, in_box_fraction, layout_terms
from segret_lib.engine.map_history import MapAccumulator
from segret_lib.engine.schedule import latent_scale
from segret_lib.engine.session import PassInfo
from segret_lib.render.overlays import combined_overlay, overlay_sheet
from segret_lib.settings.layout_boxes import layout_json, layout_text, parse_layout
from segret_lib.settings.params import ParamError, SegretParams
from segret_lib.ui.script_args import params_from_args
from tests.helpers import make_rig

PROMPT = "a cat and a dog"
HALVES = "cat: 0 0 0.5 1; dog: 0.5 0 1 1"


def layout_loss(method, maps, prev_masks, target, seg_weight, ret_weight, strength):
    """layout_terms with the terms read as floats."""
    loss, terms = layout_terms(method, maps, prev_masks, target, seg_weight, ret_weight, strength)
    return loss, {k: float(v) for k, v in terms.items()}


# ------------------------------------------------------------------------------------------------- parsing
def test_layout_forms_parse_to_the_same_boxes():
    want = (("cat", (0.0, 0.2, 0.5, 0.9)), ("traffic light", (0.5, 0.0, 1.0, 1.0)))
    forms = [
        {"cat": [0, 0.2, 0.5, 0.9], "traffic  light": [0.5, 0, 1, 1]},
        '{"cat": [0, 0.2, 0.5, 0.9], "traffic light": [0.5, 0, 1, 1]}',
        "cat: 0 0.2 0.5 0.9; traffic light: 0.5 0 1 1",
        [("cat", "0, 0.2, 0.5, 0.9"), ("traffic light", {"x0": 0.5, "y0": 0, "x1": 1, "y1": 1})],
    ]
    for form in forms:
        assert parse_layout(form) == want, form
    assert parse_layout(layout_text(want)) == want
    assert parse_layout(layout_json(want)) == want
    assert parse_layout("") == parse_layout(None) == parse_layout({}) == parse_layout("{}") == ()
    assert parse_layout({"cat": [0.123456, 0, 1, 1]})[0][1][0] == 0.1235  # kept at 1e-4


@pytest.mark.parametrize(("layout", "needle"), [
    ({"bird": [0, 0, 1, 1]}, "layout box 'bird' names no concept (concepts: cat, dog)"),
    ({"cat": [0.5, 0, 0.4, 1]}, "layout box 'cat' needs x0 < x1 and y0 < y1"),
    ({"cat": [0, 0, 1.2, 1]}, "layout box 'cat' must lie inside the image"),
    ({"dog": [0, 0, 1]}, "layout box 'dog' must be 4 numbers"),
    ({"dog": ["a", 0, 1, 1]}, "layout box 'dog' must be 4 numbers"),
    ({"dog": [0, 0, float("nan"), 1]}, "layout box 'dog' has a non-finite number"),
    ({"cat": [0, 0, 1, 1], "CAT": [0, 0, 1, 1]}, "layout box 'CAT' is given twice"),
    ("{cat", "layout is not valid JSON"),
    ("cat 0 0 1 1", "layout entry 'cat 0 0 1 1' must read 'concept: x0 y0 x1 y1'"),
    (42, "layout must be a dict of boxes"),
])
def test_bad_layouts_name_the_bad_box(layout, needle):
    with pytest.raises(ParamError, match="^" + needle.replace("(", r"\(").replace(")", r"\)")):
        params_from_args([{"concepts": "cat, dog", "layout": layout}])


def test_layout_args_positional_and_dict_and_infotext_round_trip():
    old = [True, "cat, dog", 1.0, 1.0, 20.0, 0, "fraction", 0.5, False, False, False, False, "A-STAR"]
    assert params_from_args(old).layout == ()
    full = params_from_args([*old, '{"cat": [0, 0, 0.5, 1]}', 2.5, True, "both"])
    by_dict = params_from_args([{"concepts": "cat, dog", "method": "A-STAR", "step_size": 20,
                                 "layout": {"cat": [0, 0, 0.5, 1]},
                                 "layout_strength": 2.5, "layout_exclusive": True, "maps_view": "both"}])
    assert full == by_dict and full.layout == (("cat", (0.0, 0.0, 0.5, 1.0)),)
    info = full.to_infotext()
    assert info["A-STAR layout"] == "cat: 0 0 0.5 1"
    assert info["A-STAR layout strength"] == "2.5" and info["A-STAR layout exclusive"] == "True"
    back = SegretParams.from_infotext(info)
    assert (back.layout, back.layout_strength, back.layout_exclusive) == (full.layout, 2.5, True)
    assert "A-STAR layout" not in params_from_args(old).to_infotext()
    with pytest.raises(ParamError, match="maps_view"):
        params_from_args([{"concepts": "cat", "maps_view": "tiles"}])
    with pytest.raises(ParamError, match="layout_strength"):
        params_from_args([{"concepts": "cat", "layout_strength": -1}])
    # the X/Y/Z layout axis switches the boxes off (and refuses other values)
    assert params_from_args([*old, '{"cat": [0, 0, 0.5, 1]}'], {"layout_on": "Off"}).layout == ()
    assert params_from_args([*old, '{"cat": [0, 0, 0.5, 1]}'], {"layout_on": "On"}).layout == full.layout
    with pytest.raises(ParamError, match="On or Off"):
        params_from_args(old, {"layout_on": "maybe"})
    # weights 0 with a layout: the layout term still has something to optimise
    assert params_from_args([{"concepts": "cat", "seg_weight": 0, "ret_weight": 0,
                              "layout": {"cat": [0, 0, 0.5, 1]}}]).layout


# ------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize(("latent", "cells"), [
    ((64, 64), (16, 16)),      # SD1 512 px
    ((128, 128), (32, 32)),    # SDXL 1024 px, or the hires pass of 512 px x2
    ((65, 97), (17, 25)),      # odd sizes (520 x 776 px): the last cell covers 1 of 4 latent pixels
    ((96, 144), (24, 36)),     # hires 1.5x of 512 x 768
    ((32, 32), (8, 8)),        # the test UNet and the shapes model
])
def test_box_mask_at_every_capture_size(latent, cells):
    assert capture_hw(*latent) == cells
    left = box_mask((0.0, 0.0, 0.5, 1.0), latent)
    assert left.shape == cells and set(left.unique().tolist()) <= {0.0, 1.0}
    cols = left[0]
    # a cell is in the mask when at least half of its in-image width lies in the box
    for j in range(cells[1]):
        lo, hi = 4 * j, min(4 * j + 4, latent[1])
        inside = max(0.0, min(hi, latent[1] / 2) - lo) / (hi - lo)
        assert bool(cols[j]) == (inside >= 0.5), (j, inside)
    assert bool(left[:, 0].all()) and not left[:, -1].any()
    full = box_mask((0, 0, 1, 1), latent)
    assert bool(full.all())
    # a box smaller than a cell still has its centre's cell
    tiny = box_mask((0.9, 0.1, 0.905, 0.105), latent)
    assert tiny.sum() == 1 and tiny[int(0.1025 * latent[0] / 4), int(0.9025 * latent[1] / 4)] == 1


def test_odd_size_last_cell_counts_its_image_part_only():
    # 65 latent px: cell 16 covers latent px 64..65 only; a box over the last 2 % of the image covers it fully
    m = box_mask((0.985, 0.0, 1.0, 1.0), (65, 65))
    assert m[:, 16].all() and not m[:, 15].any()


def test_image_target_only_for_boxed_concepts_and_exclusive_regions():
    layout = parse_layout(HALVES)
    assert image_target(layout, ["sofa"], (64, 64)) is None
    t = image_target(layout, ["Dog", "sofa", "cat"], (64, 64), exclusive=True)
    assert t.boxed.tolist() == [True, False, True] and t.shape == (3, 16, 16)
    assert t.masks[1].sum() == 0 and t.masks[0][:, 8:].all() and t.masks[2][:, :8].all()
    assert torch.equal(t.others[0], t.masks[2]) and torch.equal(t.others[2], t.masks[0])
    assert t.others[1].all()  # an unboxed concept is kept out of every box


def test_layout_loss_terms():
    layout = parse_layout(HALVES)
    t = image_target(layout, ["cat", "dog"], (32, 32), exclusive=True)
    inside = t.masks.clone()  # each concept exactly on its box
    swapped = t.masks.flip(0)
    good, parts = layout_loss("astar", inside, None, t, 1.0, 1.0, 1.0)
    bad, bad_parts = layout_loss("astar", swapped, None, t, 1.0, 1.0, 1.0)
    assert parts["inbox"] == pytest.approx(1.0) and bad_parts["inbox"] == pytest.approx(0.0)
    assert parts["outside"] == pytest.approx(0.0) and bad_parts["outside"] == pytest.approx(2.0)
    assert float(good) < float(bad)
    # strength 0: the layout terms are reported but do not count
    zero, _ = layout_loss("astar", swapped, None, t, 1.0, 1.0, 0.0)
    seg_only, _ = layout_loss("astar", swapped, None, t, 1.0, 1.0, 0.0)
    assert float(zero) == pytest.approx(float(seg_only))
    # Attend-and-Excite keeps its own loss and gets the box term added
    _, aae_parts = layout_loss("aae", swapped, None, t, 1.0, 1.0, 1.0)
    assert set(aae_parts) >= {"aae", "layout", "inbox"} and "seg" not in aae_parts


# ------------------------------------------------------------------------------------------------- engine
def _fixed_latent_run(rig, layout, seed, updates=5, step_size=200.0):
    # the raw gradient (v1): the balanced rule's low-pass smooths away most of a random UNet's gradient
    kw = {"step_size": step_size, "step_rule": "v1", **({"layout": layout} if layout else {})}
    session = rig.session([PROMPT], **kw)
    sigma = rig.denoiser.get_sigmas(20)[4]
    session.begin_pass(PassInfo((32, 32), 20))
    cond = rig.encoder([PROMPT])

    def run(xm, s, rows):
        return rig.denoiser(xm, s, cond={"c_crossattn": [cond[list(rows)]]})

    def forward_maps(xm):
        return session._forward_maps(xm, sigma.reshape(1), [0], torch.tensor([0]), run)

    masks = image_target(parse_layout(HALVES), ["cat", "dog"], (32, 32)).masks
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(seed)) * sigma
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    fractions = []
    try:
        for _ in range(updates + 1):
            with torch.no_grad():
                fractions.append(float(in_box_fraction(forward_maps(x)[0], masks).mean()))
            x, _ = session.refiner.refine(x, s, 4, 20, forward_maps)
    finally:
        session.close()
    return fractions


def test_refining_with_boxes_moves_map_mass_into_the_boxes_on_the_tiny_unet():
    """Random weights give nearly uniform maps (about half of the mass in each half), so the effect is small,
    but with the boxes every update moves mass into them, and without them it does not move that way."""
    rig = make_rig()
    layout = parse_layout(HALVES)
    for seed in range(3):
        plain = _fixed_latent_run(rig, (), seed)
        boxed = _fixed_latent_run(rig, layout, seed)
        assert plain[0] == boxed[0]
        assert all(b > a for a, b in itertools.pairwise(boxed)), boxed
        assert boxed[-1] - boxed[0] > 5e-4 and boxed[-1] > plain[-1] + 5e-4, (plain, boxed)


def test_layout_during_sampling_on_the_trained_shapes_model():
    """Over whole samplings (Euler, 10 steps) of the trained shapes model: each concept's map, averaged over the
    refined steps, has more of its mass in its box with the layout than without (A-STAR defaults otherwise)."""
    from quality.dataset import SIZE
    from quality.evaluate import Engine, PromptSpec
    from quality.model import load

    torch.set_num_threads(1)
    engine = Engine(load())
    specs = [PromptSpec("a red circle and a blue square", ("red circle", "blue square"),
                        (("red", "circle"), ("blue", "square"))),
             PromptSpec("a green triangle and a yellow square", ("green triangle", "yellow square"),
                        (("green", "triangle"), ("yellow", "square")))]
    seeds = [0, 1, 2]
    gains, first_step, last_step = [], [], []
    for spec in specs:
        for boxes in (((0, 0, 0.5, 1), (0.5, 0, 1, 1)), ((0.5, 0, 1, 1), (0, 0, 0.5, 1))):
            layout = parse_layout(dict(zip(spec.concepts, boxes, strict=True)))
            masks = image_target(layout, spec.concepts, (SIZE, SIZE)).masks
            mass = {}
            for name, extra in (("astar", {}), ("layout", {"layout": layout})):
                params = SegretParams.create(enabled=True, concepts=spec.concepts, show_maps=True, **extra)
                _, session = engine.sample([spec] * len(seeds), seeds, "euler", 10, 4.0, params)
                mass[name] = torch.stack([in_box_fraction(m.maps, masks) for m in session.overlay_maps.result()])
                if name == "layout":  # the boxed concepts' in-box share at the first and the last refined step
                    first_step.append(session.passes[0].results[0].parts["inbox"] / len(seeds))
                    last_step.append(session.passes[0].results[-1].parts["inbox"] / len(seeds))
            gains.append(mass["layout"] - mass["astar"])
    gain = torch.cat(gains)  # [24 (image, concept)]
    assert float(gain.mean()) > 0.05 and float((gain > 0).float().mean()) >= 0.75, gain
    assert sum(last_step) / len(last_step) > sum(first_step) / len(first_step) + 0.03, (first_step, last_step)


# ------------------------------------------------------------------------------------------------- overlays
def test_map_accumulator_keeps_sums_until_the_result():
    acc = MapAccumulator(2)
    a, b = torch.rand(2, 4, 4), torch.rand(2, 4, 4)
    acc.add([a], [1], [["cat", "dog"]])
    acc.add([b], [1], [["cat", "dog"]])
    acc.add([torch.full((2, 4, 4), float("nan"))], [1], [["cat", "dog"]])  # skipped
    res = acc.result()
    assert res[0] is None and res[1].steps == 2 and torch.allclose(res[1].maps, (a + b) / 2)
    assert acc.sums == [None, None]
    acc.add([a], [0], [["cat", "dog"]])
    acc.add([b[:1]], [0], [["cat"]])  # the concepts changed (prompt editing): start again
    assert acc.result()[0].words == ["cat"]


def test_overlay_pictures_show_each_concept_in_its_colour_and_box():
    image = Image.new("RGB", (96, 64), (128, 128, 128))
    maps = torch.zeros(2, 4, 6)
    maps[0, :, :3] = 1.0  # cat on the left
    maps[1, :, 3:] = 1.0  # dog on the right
    layout = parse_layout(HALVES)
    combined = combined_overlay(image, maps, ["cat", "dog"], layout)
    assert combined.size == (384, 256)
    px = combined.load()
    left, right = px[60, 128], px[320, 128]
    assert left[0] > left[2] + 60 and right[2] > right[0] + 60  # red-ish left (cat), blue-ish right (dog)
    from segret_lib.engine.map_history import ImageMaps
    sheet = overlay_sheet(image, ImageMaps(["cat", "dog"], maps, 5), layout)
    assert sheet.size == (3 * 384 + 2 * 4, 256)
