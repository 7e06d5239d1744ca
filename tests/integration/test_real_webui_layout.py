"""Layout boxes and attention overlays in the real AUTOMATIC1111 WebUI v1.10.1, over its HTTP API.

Skipped unless SEGRET_WEBUI_DIR names the WebUI tree (see conftest.py).
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.integration.test_real_webui import params, record, request, result_counts

BOXES = {"cat": [0.0, 0.0, 0.5, 1.0], "dog": [0.5, 0.1, 1.0, 0.9]}


@pytest.fixture(scope="module")
def plain(webui):
    return webui.txt2img(**request())


def test_layout_with_overlays_in_a_batch(webui):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "layout": BOXES, "layout_strength": 3,
                                 "show_maps": True}]}}
    res = webui.txt2img(**request(batch_size=2, alwayson_scripts=args))
    info = params(res, 1)
    record(webui, "layout + overlays, batch 2", info)
    assert "A-STAR warnings" not in info, info
    assert info["A-STAR layout"] == "cat: 0 0 0.5 1; dog: 0.5 0.1 1 0.9", info
    assert info["A-STAR layout strength"] == "3", info
    assert "in box" in info["A-STAR result"] and result_counts(info["A-STAR result"]) == [(6, 6)], info
    # the two images (the API makes no grid unless save_images), then one overlay sheet per image (combined, cat,
    # dog panels), each with its own image's infotext
    images = [Image.open(io.BytesIO(base64.b64decode(i))) for i in res["images"]]
    assert len(images) == 4, [im.size for im in images]
    assert [im.size for im in images[2:]] == [(3 * 384 + 2 * 4, 384)] * 2
    infotexts = res["info"]["infotexts"]
    assert infotexts[2] == infotexts[0] and infotexts[3] == infotexts[1] and infotexts[0] != infotexts[1]


def test_layout_in_the_positional_list_and_a_bad_box(webui, plain):
    ui = [True, "cat, dog", 1.0, 1.0, 20.0, 0, "fraction", 0.5, False, False, False, False, "A-STAR"]
    res = webui.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [*ui, '{"cat": [0, 0, 0.5, 1]}', 2.0]}}))
    info = params(res)
    assert info["A-STAR layout"] == "cat: 0 0 0.5 1" and info["A-STAR layout strength"] == "2", info
    assert res["pixels"][0] != plain["pixels"][0]
    bad = webui.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady",
                                                                         "layout": {"cat": [0.6, 0, 0.2, 1]}}]}}))
    info = params(bad)
    assert "layout box 'cat' needs x0 < x1 and y0 < y1" in info["A-STAR warnings"], info
    assert bad["pixels"][0] == plain["pixels"][0]  # not applied: the plain image
    again = webui.txt2img(**request())
    assert again["pixels"][0] == plain["pixels"][0]


def test_layout_axes_and_panel_are_registered(webui):
    config = str(webui.get("/config"))
    assert "[A-STAR] Layout" in config and "[A-STAR] Layout strength" in config
    assert "segret_txt2img_layout_editor" in config and "segret_img2img_layout" in config
