"""Layout boxes and attention overlays through the whole script lifecycle of the fake WebUI host (real tiny UNet,
k-diffusion samplers, gradio components)."""

import pytest
import torch
from modules import infotext_utils, processing, scripts

from segret_lib.settings.params import UI_FIELDS
from segret_lib.ui import xyz_axes
from tests.test_webui_extension import assert_clean, latents, without_extension
from tests.webui_host import Host

ON = {"enabled": True, "concepts": "cat, dog"}
BOXES = '{"cat": [0, 0, 0.5, 1], "dog": [0.5, 0.1, 1, 0.9]}'


@pytest.fixture(scope="module")
def host():
    return Host("sd1")


def info_of(res, i=0):
    return infotext_utils.parse_generation_parameters(res.infotexts[i])


def test_layout_is_applied_written_and_overlays_follow_each_image(host):
    p, res = host.txt2img(prompt=["a cat and a dog", "a dog and a cat"],
                          script_args=host.args(**ON, layout=BOXES, layout_strength=3.0, show_maps=True),
                          steps=4, batch_size=2)
    assert len(res.images) == 4 and len(res.infotexts) == 4
    info = info_of(res)
    assert info["A-STAR layout"] == "cat: 0 0 0.5 1; dog: 0.5 0.1 1 0.9"
    assert info["A-STAR layout strength"] == "3"
    assert "in box" in info["A-STAR result"] and info["A-STAR result"].startswith("first pass: 4/4 steps")
    # one overlay sheet per image (combined + one panel per concept), with that image's own infotext
    for k in (0, 1):
        sheet = res.images[2 + k]
        assert sheet.size == (3 * 384 + 2 * 4, 384)
        assert res.infotexts[2 + k] == res.infotexts[k]
    assert_clean(host, p)


def test_layout_changes_the_image_and_show_maps_does_not(host):
    _, plain_astar = host.txt2img(script_args=host.args(**ON), steps=4)
    _, boxed = host.txt2img(script_args=host.args(**ON, layout=BOXES), steps=4)
    _, boxed_maps = host.txt2img(script_args=host.args(**ON, layout=BOXES, show_maps=True, maps_view="both"),
                                 steps=4)
    assert not torch.equal(latents(plain_astar), latents(boxed))
    assert torch.equal(latents(boxed), latents(boxed_maps))  # collecting maps for the overlays changes nothing
    assert len(boxed_maps.images) == 3  # image, overlay sheet, before/after grid


@pytest.mark.parametrize(("view", "extra"), [("overlay", 1), ("grid", 1), ("both", 2)])
def test_maps_view_setting(host, view, extra):
    _, res = host.txt2img(script_args=host.args(**ON, show_maps=True, maps_view=view), steps=4)
    assert len(res.images) == 1 + extra
    if view == "grid":  # the before/after grid of four steps, as before overlays existed
        assert res.images[1].size[0] > 4 * 128
    else:
        assert res.images[1].size == (3 * 384 + 2 * 4, 384)


def test_bad_layout_warns_names_the_box_and_generates_unchanged(host, capsys):
    plain = without_extension(host, steps=3)
    p, res = host.txt2img(script_args=host.args(**ON, layout='{"bird": [0, 0, 0.5, 1]}'), steps=3)
    assert torch.equal(latents(res), latents(plain))
    assert "A-STAR warnings: \"not applied: layout box 'bird' names no concept (concepts: cat, dog)\"" in (
        res.infotexts[0])
    assert "[A-STAR] not applied: layout box 'bird'" in capsys.readouterr().out
    assert_clean(host, p)


def test_disabled_with_boxes_is_bit_identical(host):
    plain = without_extension(host, steps=3)
    _, res = host.txt2img(script_args=host.args(concepts="cat, dog", layout=BOXES, show_maps=True), steps=3)
    assert torch.equal(latents(res), latents(plain)) and len(res.images) == 1


def test_paste_restores_the_boxes_and_clears_them_for_an_infotext_without(host):
    _, res = host.txt2img(script_args=host.args(**ON, layout=BOXES, layout_strength=2.5, layout_exclusive=True),
                          steps=3)
    controls = dict(zip(UI_FIELDS, host.script.controls, strict=True))
    pasted = {id(c): v for c, v in infotext_utils.apply_infotext(info_of(res), host.runner.infotext_fields)}
    assert pasted[id(controls["layout"])] == '{"cat": [0.0, 0.0, 0.5, 1.0], "dog": [0.5, 0.1, 1.0, 0.9]}'
    assert float(pasted[id(controls["layout_strength"])]) == 2.5
    assert pasted[id(controls["layout_exclusive"])] is True
    # the pasted JSON is what the next generation gets: same boxes, same image
    _, again = host.txt2img(script_args=host.args(**ON, layout=pasted[id(controls["layout"])], layout_strength=2.5,
                                                  layout_exclusive=True), steps=3)
    assert torch.equal(latents(again), latents(res))
    _, res = host.txt2img(script_args=host.args(**ON), steps=3)
    pasted = {id(c): v for c, v in infotext_utils.apply_infotext(info_of(res), host.runner.infotext_fields)}
    assert pasted[id(controls["layout"])] == "" and pasted[id(controls["layout_exclusive"])] is False


def test_api_dict_layout(host):
    from modules.api import api

    args = api.init_script_args({"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady",
                                                      "layout": {"cat": [0, 0, 0.5, 1], "dog": [0.5, 0.1, 1, 0.9]}}]}},
                                host.runner)
    _, by_dict = host.txt2img(script_args=args, steps=3)
    _, by_list = host.txt2img(script_args=host.args(**ON, layout=BOXES), steps=3)
    assert torch.equal(latents(by_dict), latents(by_list))


def test_xyz_layout_axis_switches_the_boxes(host):
    class AxisOption:
        def __init__(self, label, type, apply, **kwargs):
            self.label, self.type, self.apply, self.choices = label, type, apply, kwargs.get("choices")

    xyz_module = type("xyz", (), {"AxisOption": AxisOption, "axis_options": []})
    xyz_class = type("Script", (scripts.Script,), {"__module__": "xyz_grid.py"})
    scripts.scripts_data.append(scripts.ScriptClassData(xyz_class, "xyz_grid.py", "", xyz_module))
    try:
        assert xyz_axes.add_xyz_axes(scripts.scripts_data)
    finally:
        scripts.scripts_data.pop()
    axis = next(o for o in xyz_module.axis_options if o.label == "[A-STAR] Layout")
    assert axis.choices() == ["On", "Off"]
    cells = {}
    for value in ("On", "Off"):
        p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat and a dog", sd_model=host.model,
                                                        scripts=host.runner, script_args=host.args(**ON, layout=BOXES),
                                                        steps=3, width=256, height=256)
        axis.apply(p, value, ["On", "Off"])
        cells[value] = processing.run_generation(p)
    _, unboxed = host.txt2img(script_args=host.args(**ON), steps=3)
    _, boxed = host.txt2img(script_args=host.args(**ON, layout=BOXES), steps=3)
    assert torch.equal(latents(cells["Off"]), latents(unboxed))
    assert torch.equal(latents(cells["On"]), latents(boxed))
    assert "A-STAR layout" not in cells["Off"].infotexts[0] and "A-STAR layout" in cells["On"].infotexts[0]


def test_hires_pass_gets_the_boxes_at_its_own_resolution(host):
    p, res = host.txt2img(script_args=host.args(**ON, layout=BOXES, hires=True, show_maps=True), steps=3,
                          enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5, width=256,
                          height=192)
    result = info_of(res)["A-STAR result"]
    first, hires = result.split("; ")
    assert "in box" in first and "in box" in hires, result
    assert len(res.images) == 2
    assert_clean(host, p)
