"""Adding a setting is one row of the settings table: a new "example weight" row (a stand-in; the real
binding weight is one row of SETTINGS) shows up in validation, the infotext (written and read), paste, the API
dict, the positional list (at the end), the accordion and
the X/Y/Z axes, while the real table, and every infotext without the new key, stay as they were."""

import html
import json
import re

import gradio as gr
import pytest
from modules.ui_components import InputAccordion

from segret_lib.settings.params import SETTINGS, UI_FIELDS, ParamError, SegretParams
from segret_lib.settings.table import Axis, Control, Setting, SettingsTable
from segret_lib.ui import accordion, xyz_axes
from segret_lib.ui.script_args import params_from_args, switch_method
from tests.settings_golden import DEFAULT_UI, INFOTEXTS

EXAMPLE = Setting("example_weight", "float", 0.0, bounds=(0.0, 10.0),
                  by_method={"astar": 0.0, "aae": 0.0, "both": 0.5}, position=len(UI_FIELDS),
                  label="Example weight", control=Control("slider", 0.0, 2.0, 0.05),
                  tip="How strongly each attribute's attention is pulled onto its object's.",
                  infotext="example weight", xyz=Axis("[A-STAR] Example weight", float))
TABLE = SETTINGS.with_rows(EXAMPLE)
Params = TABLE.params
ON = {"enabled": True, "concepts": "cat, dog"}
# today's full positional list: the recorded one, then the defaults of the rows added since it was recorded
FULL_UI = [*DEFAULT_UI, *(getattr(SegretParams(), n) for n in UI_FIELDS[len(DEFAULT_UI):])]


def test_the_row_is_a_validated_field_with_the_methods_default():
    assert Params().example_weight == 0.0 and not hasattr(SegretParams(), "example_weight")
    assert Params.create(**ON, method="Both").example_weight == 0.5
    assert Params.create(**ON, example_weight="1.25").example_weight == 1.25
    with pytest.raises(ParamError, match=re.escape("example_weight must be in [0.0, 10.0], got 11.0")):
        Params.create(**ON, example_weight=11)
    with pytest.raises(ParamError, match="example_weight must be a finite number, got nan"):
        Params.create(**ON, example_weight="nan")
    with pytest.raises(ParamError, match="example_weight: cannot read 'strong' as float"):
        Params.create(**ON, example_weight="strong")
    with pytest.raises(ParamError, match=rf"known: .*, {UI_FIELDS[-1]}, example_weight$"):
        Params.create(bindng_weight=1)


def test_infotext_writes_it_when_set_and_reads_it_back():
    p = Params.create(**ON, example_weight=0.75)
    info = p.to_infotext()
    assert list(info)[-1] == "A-STAR example weight" and info["A-STAR example weight"] == "0.75"
    assert Params.from_infotext(info) == p
    both = Params.create(**ON, method="both", example_weight=0.0)  # differs from Both's default 0.5: written
    assert both.to_infotext()["A-STAR example weight"] == "0" and Params.from_infotext(both.to_infotext()) == both
    # at the default the infotext is today's, and infotexts without the key read as before
    for method in ("astar", "aae", "both"):
        new, old = Params.create(**ON, method=method), SegretParams.create(**ON, method=method)
        assert new.to_infotext() == old.to_infotext()
    for info in INFOTEXTS:
        try:
            old = SegretParams.from_infotext(info)
        except ParamError as e:
            with pytest.raises(ParamError, match=re.escape(str(e))):
                Params.from_infotext(info)
            continue
        new = Params.from_infotext(info)
        assert {n: getattr(new, n) for n in SETTINGS.names} == {n: getattr(old, n) for n in SETTINGS.names}
        assert new.example_weight == (0.5 if old.method == "both" else 0.0)


def test_api_dict_positional_list_and_overrides_take_it():
    assert TABLE.positional == (*UI_FIELDS, "example_weight") and "example_weight" in TABLE.api_keys
    assert params_from_args([{**ON, "example_weight": 0.7}], table=TABLE).example_weight == 0.7
    assert params_from_args([{**ON, "method": "Both"}], table=TABLE).example_weight == 0.5
    with pytest.raises(ParamError, match="example_weight must be in"):
        params_from_args([{**ON, "example_weight": -1}], table=TABLE)
    assert params_from_args([*FULL_UI, 0.3], table=TABLE).example_weight == 0.3
    assert params_from_args(FULL_UI, table=TABLE).example_weight == 0.0  # an older, shorter list
    assert params_from_args([*FULL_UI, 0.3], {"example_weight": 1.5}, table=TABLE).example_weight == 1.5
    with pytest.raises(ParamError, match=f"at most {len(UI_FIELDS) + 1} args"):
        params_from_args([*FULL_UI, 0.3, 1], table=TABLE)
    with pytest.raises(ParamError, match=f"at most {len(UI_FIELDS)} args"):
        params_from_args([*FULL_UI, 0.3])  # the real table does not know it
    # the UI's method switch moves it like the other method-dependent settings
    assert switch_method({"example_weight": 0.0}, "astar", "both", TABLE)["example_weight"] == 0.5
    assert switch_method({"example_weight": 0.2}, "astar", "both", TABLE)["example_weight"] == 0.2


def test_accordion_shows_and_pastes_it():
    with gr.Blocks():
        parts = accordion.build_ui(False, InputAccordion, TABLE)
    control = parts.components[-1]
    assert len(parts.components) == len(TABLE.positional)
    assert isinstance(control, gr.Slider) and control.elem_id == "segret_txt2img_example_weight"
    assert (control.label, control.value, control.minimum, control.maximum) == ("Example weight", 0.0, 0.0, 2.0)
    parent = control.parent
    while parent is not None and getattr(parent, "elem_id", None) != "segret_txt2img_advanced":
        parent = parent.parent
    assert parent is not None  # placed in "Advanced" by its Control.group
    holder = next(b for b in parent.parent.children if getattr(b, "elem_id", None) == "segret_txt2img_chips")
    tips = json.loads(html.unescape(re.search(r'data-tips="([^"]*)"', holder.value).group(1)))
    assert tips["segret_txt2img_example_weight"] == EXAMPLE.tip
    source = dict((id(c), k) for c, k in parts.infotext_fields)[id(control)]
    assert source({"A-STAR concepts": "cat", "A-STAR example weight": "0.4"}) == "0.4"
    assert source({"A-STAR concepts": "cat"}) == 0.0  # an A-STAR infotext without it: the default...
    assert source({"A-STAR concepts": "cat", "A-STAR method": "Both"}) == 0.5  # ...of its method
    assert source({"Steps": "20"}) is None  # not an A-STAR infotext: left as it is
    assert parts.paste_field_names[-1] == "A-STAR example weight"


def test_method_switch_moves_it_in_the_accordion():
    with gr.Blocks() as blocks:
        parts = accordion.build_ui(False, InputAccordion, TABLE)
    control, method = parts.components[-1], parts.components[TABLE.positional.index("method")]
    dep = next(d for d in blocks.dependencies if method._id in d["inputs"])
    assert control._id in dep["inputs"] and control._id in dep["outputs"]
    names = accordion.switched_by_method(TABLE)
    assert names[-1] == "example_weight"
    assert set(names) == {"step_size", "iterative", "step_rule", "excite_weight", "example_weight"}
    handler = accordion.method_switch(names, TABLE)
    values = {"step_size": 30.0, "iterative": False, "step_rule": "balanced", "excite_weight": 1.0,
              "example_weight": 0.0}
    *updates, previous = handler("Both", "A-STAR", *(values[n] for n in names))
    assert previous == "Both" and updates[-1]["value"] == 0.5
    assert updates[names.index("excite_weight")]["value"] == 0.25  # Both's own default
    *updates, _ = handler("Both", "A-STAR", *(values[n] for n in names[:-1]), 0.3)  # set by the user: kept
    assert updates[-1]["value"] == 0.3


def test_xyz_axis_is_registered_and_overrides_it():
    class AxisOption:
        def __init__(self, label, type, apply, **kwargs):
            self.label, self.type, self.apply = label, type, apply

    class Data:
        script_class = type("Script", (), {"__module__": "xyz_grid.py"})
        module = type("xyz", (), {"AxisOption": AxisOption, "axis_options": []})

    assert xyz_axes.add_xyz_axes([Data], TABLE)
    axis = Data.module.axis_options[-1]
    assert (axis.label, axis.type) == ("[A-STAR] Example weight", float)
    assert [o.label for o in Data.module.axis_options[:-1]] == [a[0] for a in xyz_axes.XYZ_AXES]
    p = type("P", (), {})()
    axis.apply(p, 1.75, [1.75])
    assert params_from_args([*FULL_UI, 0.3], p.segret_overrides, table=TABLE).example_weight == 1.75


def test_a_table_that_breaks_old_lists_or_keys_is_refused():
    with pytest.raises(ValueError, match="positions"):
        SETTINGS.with_rows(Setting("x", "float", 0.0, position=3))
    with pytest.raises(ValueError, match="infotext keys"):
        SETTINGS.with_rows(Setting("x", "float", 0.0, infotext="step size"))
    with pytest.raises(ValueError, match="infotext keys"):
        SETTINGS.with_rows(Setting("x", "float", 0.0, infotext="warnings"))
    with pytest.raises(ValueError, match="one name"):
        SettingsTable((*SETTINGS.rows, SETTINGS.row("seg_weight")))
