"""Golden record of the settings' behaviour: positional lists, API dicts, infotexts (earlier versions' too), what
paste restores, the UI's controls and the X/Y/Z axes. `capture()` runs today's code on fixed inputs;
`python -m tests.settings_golden` writes tests/fixtures/settings_golden.json (done once, before the settings
table), and tests/test_settings_golden.py checks that the code still gives every recorded output."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "settings_golden.json"
if str(ROOT / "tests" / "fake_webui") not in sys.path:  # the fake WebUI's InputAccordion
    sys.path.insert(0, str(ROOT / "tests" / "fake_webui"))

OLD12 = [True, "cat, dog", 1.0, 1.0, 20.0, 0, "fraction", 0.5, False, False, False, False]
DEFAULT_UI = [True, "cat, dog", 1.0, 1.0, 30.0, 0, "fraction", 0.5, False, False, False, False, "A-STAR", "", 1.0,
              False, "overlay", "auto"]
BOX = '{"cat": [0, 0.2, 0.5, 0.9], "dog": [0.5, 0, 1, 1]}'

# (positional list, X/Y/Z overrides or None): every length used by a release, and the X/Y/Z switches
POSITIONAL: list[tuple[list[Any], dict[str, Any] | None]] = [
    ([], None),
    ([False], None),
    (OLD12, None),
    (OLD12, {"method": "Attend-and-Excite"}),
    (OLD12, {"step_size": 33.0, "last_step": 2}),
    ([*OLD12[:8], True, *OLD12[9:]], {"method": "both"}),
    ([*OLD12, "Attend-and-Excite"], None),
    ([*OLD12, "Both"], None),
    ([*OLD12, "A-STAR", BOX, 2.0, True], None),
    ([*OLD12, "A-STAR", BOX, 2.0, True, "grid"], None),
    ([*OLD12, "A-STAR", BOX, 2.0, True, "both", "v1"], None),
    (DEFAULT_UI, None),
    (DEFAULT_UI, {"method": "aae"}),
    (DEFAULT_UI, {"method": "Attend-and-Excite", "step_rule": "v1"}),
    ([*DEFAULT_UI[:13], BOX, *DEFAULT_UI[14:]], {"layout_on": "Off"}),
    ([*DEFAULT_UI[:13], BOX, *DEFAULT_UI[14:]], {"layout_on": "On", "layout_strength": 3}),
    ([*DEFAULT_UI[:13], BOX, *DEFAULT_UI[14:]], {"layout_on": "maybe"}),
    ([*DEFAULT_UI[:6], "otsu", *DEFAULT_UI[7:]], None),
    ([*DEFAULT_UI[:4], "12.5", "7", *DEFAULT_UI[6:17], "Balanced"], None),
    ([*DEFAULT_UI[:12], "Attend-and-Excite", *DEFAULT_UI[13:]], None),
    ([*DEFAULT_UI[:12], "excite", *DEFAULT_UI[13:]], None),
    ([*DEFAULT_UI, "extra"], None),
    ([True, "", *DEFAULT_UI[2:]], None),
    ([*DEFAULT_UI[:2], -1.0, *DEFAULT_UI[3:]], None),
    ([*DEFAULT_UI[:7], 1.0, *DEFAULT_UI[8:]], None),
    ([*DEFAULT_UI[:16], "mosaic", "auto"], None),
    ([*DEFAULT_UI[:17], "v3"], None),
    ([*DEFAULT_UI[:13], '{"cat": [0.5, 0, 0.2, 1]}', *DEFAULT_UI[14:]], None),
    ([*DEFAULT_UI[:13], '{"bird": [0, 0, 1, 1]}', *DEFAULT_UI[14:]], None),
]

API: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
    ({}, None),
    ({"concepts": "cat, dog"}, None),
    ({"concepts": "cat, dog", "enabled": False}, None),
    ({"concepts": "cat, dog", "enabled": "no"}, None),
    ({"concepts": ["cat", " traffic  light ", "Cat"]}, None),
    ({"concepts": "cat, dog", "method": "Attend-and-Excite"}, None),
    ({"concepts": "cat, dog", "method": "a&e", "step_size": 10}, None),
    ({"concepts": "cat, dog", "method": "ae", "iterative": False, "last_step": 30}, None),
    ({"concepts": "cat, dog", "method": "A-STAR + Attend-and-Excite"}, None),
    ({"concepts": "cat, dog", "method": "astar+aae", "iterative": True}, None),
    ({"concepts": "cat, dog"}, {"method": "aae"}),
    ({"concepts": "cat, dog", "iterative": False}, {"method": "aae"}),
    ({"concepts": "cat, dog", "threshold_mode": "Otsu"}, None),
    ({"concepts": "cat, dog", "threshold": "0.3"}, None),
    ({"concepts": "cat, dog", "threshold": 1.5}, None),
    ({"concepts": "cat, dog", "threshold_mode": "median"}, None),
    ({"concepts": "cat, dog", "layout": BOX, "layout_strength": 2, "layout_exclusive": "yes"}, None),
    ({"concepts": "cat, dog", "layout": {"cat": [0, 0, 0.5, 1]}}, None),
    ({"concepts": "cat, dog", "layout": BOX}, {"layout_on": "Off"}),
    ({"concepts": "cat, dog", "layout": "[[1, 2]]"}, None),
    ({"concepts": "cat, dog", "step_rule": "V1"}, None),
    ({"concepts": "cat, dog", "step_rule": " Balanced "}, None),
    ({"concepts": "cat, dog", "step_rule": "auto", "method": "aae"}, None),
    ({"concepts": "cat, dog", "step_rule": "fast"}, None),
    ({"concepts": "cat, dog", "iterative": True, "iterative_steps": "0, 5;9", "iterative_target": "0.3 0.2",
      "iterative_max": 7}, None),
    ({"concepts": "cat, dog", "iterative_steps": "1,x"}, None),
    ({"concepts": "cat, dog", "iterative_target": ""}, None),
    ({"concepts": "cat, dog", "iterative_target": 0.4}, None),
    ({"concepts": "cat, dog", "iterative_target": "0.2, -1"}, None),
    ({"concepts": "cat, dog", "iterative_max": 0}, None),
    ({"concepts": "cat, dog", "step_siz": 3}, None),
    ({"concepts": "cat, dog", "last_step": "ten"}, None),
    ({"concepts": "cat, dog", "last_step": 2.5}, None),
    ({"concepts": "cat, dog", "last_step": -3}, None),
    ({"concepts": "cat, dog", "step_size": "inf"}, None),
    ({"concepts": "cat, dog", "step_size": float("nan")}, None),
    ({"concepts": "cat, dog", "seg_weight": 0, "ret_weight": 0}, None),
    ({"concepts": "cat, dog", "seg_weight": 0, "ret_weight": 0, "method": "aae"}, None),
    ({"concepts": "cat, dog", "ret_weight": 1e9}, None),
    ({"concepts": "cat, dog", "smooth_kernel": 4}, None),
    ({"concepts": "cat, dog", "smooth_kernel": 5, "smooth_sigma": 1.5, "softmax_temperature": 50}, None),
    ({"concepts": "cat, dog", "softmax_temperature": 0}, None),
    ({"concepts": "cat, dog", "token_combine": "MAX"}, None),
    ({"concepts": "cat, dog", "token_combine": "median"}, None),
    ({"concepts": "cat, dog", "maps_view": "grid", "show_maps": 1}, None),
    ({"concepts": "cat, dog", "maps_view": "mosaic"}, None),
    ({"concepts": "cat, dog", "hires": "true", "low_vram": "on", "early_exit": "off"}, None),
    ({"concepts": "cat, dog", "method": "nope"}, None),
    ({"concepts": ",".join(f"w{i}" for i in range(9))}, None),
    ({"concepts": "cat, dog", "layout_strength": -1}, None),
    ({"concepts": "cat, dog", "layout_strength": "nan"}, None),
    ({"concepts": "cat, dog"}, {"step_size": 12.0, "step_rule": "v1", "layout_strength": 4}),
]

# infotexts as written by this and earlier versions (parsed "key: value" pairs)
INFOTEXTS: list[dict[str, str]] = [
    {"Steps": "20"},
    {"A-STAR concepts": "cat, dog", "A-STAR seg weight": "1", "A-STAR ret weight": "1", "A-STAR step size": "20",
     "A-STAR last step": "0", "A-STAR threshold": "0.5"},  # v1, before the method and the step rule
    {"A-STAR concepts": "cat, dog", "A-STAR iterative": "steps 0 10 20; target 0.2; max 20"},
    {"A-STAR concepts": "cat, dog", "A-STAR seg weight": "1.5", "A-STAR ret weight": "0.25",
     "A-STAR step size": "12.5", "A-STAR last step": "7", "A-STAR threshold": "otsu", "A-STAR hires": "True",
     "A-STAR iterative": "steps 0 5; target 0.3; max 7"},
    {"A-STAR concepts": "cat, dog", "A-STAR step size": "20", "A-STAR method": "Attend-and-Excite",
     "A-STAR iterative": "steps auto; target 0.95 0.5 0.2; max 20"},
    {"A-STAR concepts": "cat, dog", "A-STAR method": "Attend-and-Excite", "A-STAR iterative": "off",
     "A-STAR last step": "10"},
    {"A-STAR concepts": "cat, dog", "A-STAR method": "Attend-and-Excite"},
    {"A-STAR concepts": "cat, dog", "A-STAR method": "Both", "A-STAR step rule": "balanced",
     "A-STAR step size": "30"},
    {"A-STAR concepts": "cat, dog", "A-STAR method": "Both"},
    {"A-STAR concepts": "cat, dog", "A-STAR step size": "30", "A-STAR step rule": "balanced"},
    {"A-STAR concepts": "cat, dog", "A-STAR step rule": "Balanced"},
    {"A-STAR concepts": "cat, dog", "A-STAR layout": "cat: 0 0.2 0.5 0.9; dog: 0.5 0 1 1",
     "A-STAR layout strength": "2", "A-STAR layout exclusive": "True", "A-STAR step rule": "balanced"},
    {"A-STAR concepts": "cat, dog", "A-STAR layout": BOX},
    {"A-STAR concepts": "cat, dog", "A-STAR layout strength": "3"},  # strength without a layout: ignored
    {"A-STAR concepts": "cat, dog", "A-STAR layout": "garbage [1 2"},
    {"A-STAR concepts": "cat, dog", "A-STAR layout": "cat: 0 0.2 0.5 0.9", "A-STAR layout strength": "0.5",
     "A-STAR method": "Both", "A-STAR iterative": "steps 3; target 0.1; max 4", "A-STAR step rule": "v1"},
    {"A-STAR concepts": "cat, dog", "A-STAR threshold": "0.35", "A-STAR last step": "12"},
    {"A-STAR concepts": "cat, dog", "A-STAR method": "nonsense"},
    {"A-STAR concepts": "cat, dog", "A-STAR threshold": "lots"},
    {"A-STAR seg weight": "2", "A-STAR step rule": "v1"},  # no concepts: disabled
    {"A-STAR concepts": "cat", "A-STAR method": "A&E", "A-STAR iterative": "steps 2 4; target 0.9 0.4; max 5",
     "A-STAR step rule": "v1", "A-STAR hires": "False"},
]


def _value(v: Any) -> str:
    return repr(v)


def _params(p) -> dict[str, str]:
    return {f.name: _value(getattr(p, f.name)) for f in dataclasses.fields(p)}


def _outcome(fn) -> dict[str, Any]:
    from segret_lib.settings.params import ParamError

    try:
        p = fn()
    except ParamError as e:
        return {"error": str(e)}
    return {"params": _params(p), "infotext": [list(kv) for kv in p.to_infotext().items()]}


def _components(parts, tab: str) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Name every control by its elem_id (minus the tab prefix) and describe it."""
    names: dict[int, str] = {}
    desc = []
    prefix = f"segret_{tab}_"
    for comp in parts.components:
        names[id(comp)] = comp.elem_id.removeprefix(prefix) if comp.elem_id.startswith(prefix) else comp.elem_id
    for comp, _ in parts.infotext_fields:
        names.setdefault(id(comp), (comp.elem_id or "").removeprefix(prefix))
    for comp in parts.components:
        entry = {"name": names[id(comp)], "class": type(comp).__name__, "elem_id": comp.elem_id}
        for attr in ("label", "value", "minimum", "maximum", "step", "choices", "visible", "info", "placeholder",
                     "lines"):
            if hasattr(comp, attr):
                entry[attr] = _value(getattr(comp, attr))
        chain, parent = [], getattr(comp, "parent", None)
        while parent is not None:
            chain.append(f"{type(parent).__name__}:{getattr(parent, 'elem_id', None)}")
            parent = getattr(parent, "parent", None)
        entry["parents"] = chain
        desc.append(entry)
    return names, desc


def _ui(tab: str) -> dict[str, Any]:
    import gradio as gr
    from modules.ui_components import InputAccordion

    from segret_lib.ui.accordion import build_ui, tooltip_holder

    with gr.Blocks():
        parts = build_ui(tab == "img2img", InputAccordion)
    names, desc = _components(parts, tab)
    paste = []
    for info in INFOTEXTS:
        got = {}
        for comp, key in parts.infotext_fields:
            v = key(info) if callable(key) else info.get(key)
            if v is not None:
                got[names[id(comp)]] = _value(v)
        paste.append(got)
    fields = [[names[id(c)], k if isinstance(k, str) else "<function>"] for c, k in parts.infotext_fields]
    return {"components": desc, "paste": paste, "infotext_fields": fields,
            "paste_field_names": parts.paste_field_names, "tooltips": tooltip_holder(tab)}


def _xyz() -> list[dict[str, Any]]:
    from segret_lib.ui import xyz_axes

    class AxisOption:
        def __init__(self, label, type, apply, **kwargs):
            self.label, self.type, self.apply, self.kwargs = label, type, apply, kwargs

    class Data:
        script_class = type("Script", (), {"__module__": "xyz_grid.py"})
        module = type("xyz", (), {"AxisOption": AxisOption, "axis_options": []})

    xyz_axes.add_xyz_axes([Data])
    out = []
    for o in Data.module.axis_options:
        p = type("P", (), {})()
        o.apply(p, "value", ["value"])
        choices = o.kwargs.get("choices")
        out.append({"label": o.label, "type": o.type.__name__, "choices": choices() if choices else None,
                    "overrides": getattr(p, "segret_overrides", None)})
    return out


def capture() -> dict[str, Any]:
    """Every recorded output of today's code."""
    from segret_lib.settings.params import UI_FIELDS, SegretParams
    from segret_lib.ui.script_args import looks_enabled, params_from_args

    return {
        "ui_fields": list(UI_FIELDS),
        "positional": [{"args": _value(a), "overrides": _value(o), "looks_enabled": looks_enabled(a),
                        **_outcome(lambda a=a, o=o: params_from_args(a, o))} for a, o in POSITIONAL],
        "api": [{"args": _value(d), "overrides": _value(o), "looks_enabled": looks_enabled([d]),
                 **_outcome(lambda d=d, o=o: params_from_args([d], o))} for d, o in API],
        "infotext": [{"info": info, **_outcome(lambda info=info: SegretParams.from_infotext(info))}
                     for info in INFOTEXTS],
        "ui": {tab: _ui(tab) for tab in ("txt2img", "img2img")},
        "xyz": _xyz(),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(capture(), indent=1, sort_keys=False) + "\n")
    print(f"wrote {FIXTURE}")
