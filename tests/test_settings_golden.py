"""Today's settings behaviour, recorded before the settings table (tests/settings_golden.py), is reproduced
exactly: positional lists of every length, API dicts, earlier versions' infotexts, paste, the controls, X/Y/Z."""

import json

import pytest

from tests.settings_golden import FIXTURE, capture

RECORDED = json.loads(FIXTURE.read_text())
NOW = capture()


@pytest.mark.parametrize("section", ["ui_fields", "positional", "api", "infotext", "xyz"])
def test_settings_match_the_recorded_behaviour(section):
    assert len(NOW[section]) == len(RECORDED[section])
    for i, (now, recorded) in enumerate(zip(NOW[section], RECORDED[section], strict=True)):
        assert now == recorded, f"{section}[{i}]"


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
@pytest.mark.parametrize("part", ["components", "paste", "infotext_fields", "paste_field_names", "tooltips"])
def test_ui_matches_the_recorded_controls_and_paste(tab, part):
    now, recorded = NOW["ui"][tab][part], RECORDED["ui"][tab][part]
    if isinstance(recorded, list):
        assert len(now) == len(recorded)
        for i, (a, b) in enumerate(zip(now, recorded, strict=True)):
            assert a == b, f"{tab} {part}[{i}]"
    else:
        assert now == recorded
