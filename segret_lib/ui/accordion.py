"""The A-STAR accordion: controls, tooltips, the method switch, and the infotext fields that paste restores
(gradio only).

The host passes its InputAccordion class, so this module imports no host code.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..settings.params import (  # noqa: F401 (ACCORDION_LABEL and the paste functions: re-exported)
    ACCORDION_LABEL,
    SETTINGS,
    iterative_from,
    layout_from,
    method_label_from,
)
from ..settings.table import Setting, SettingsTable
from .script_args import switch_method

TIPS = SETTINGS.tips()

# Where the accordion puts the controls: each tuple is one line (a gr.Row when it holds more than one). A setting
# with a control that is not named here goes on its own line at the end of its Control.group.
MAIN_LINES = (("step_size", "show_maps"),)
ADVANCED_LINES = (("seg_weight", "ret_weight", "bind_weight"), ("excite_weight",), ("threshold_mode", "threshold"),
                  ("step_rule", "last_step"), ("iterative", "hires", "low_vram"), ("maps_view",))
LAYOUT_LINES = (("layout",), ("layout_strength", "layout_exclusive"))
_HEADER = ("enabled", "concepts", "method")


def tooltip_holder(tab: str, table: SettingsTable = SETTINGS) -> str:
    """A hidden element carrying every control's tooltip by elem_id; javascript/segret.js turns them into
    hover titles (the accordion's under its own id)."""
    tips = table.tips()
    fields = table.positional
    tips = {f"segret_{tab}": tips[fields[0]], **{f"segret_{tab}_{name}": tips[name] for name in fields[1:]}}
    return f'<span class="segret-tips" hidden data-tips="{html.escape(json.dumps(tips), quote=True)}"></span>'


@dataclass
class UiParts:
    """What Script.ui returns (components in UI_FIELDS order) and the Script's paste attributes."""

    components: list[Any]
    infotext_fields: list[tuple[Any, Any]]
    paste_field_names: list[str]


def control(row: Setting, tab: str, is_img2img: bool) -> Any:
    """The gradio control of one setting, as its row describes it."""
    c, elem_id, value = row.control, f"segret_{tab}_{row.name}", row.ui_value()
    if c.kind == "slider":
        return gr.Slider(c.minimum, c.maximum, value, step=c.step, label=row.label, elem_id=elem_id)
    if c.kind == "checkbox":
        return gr.Checkbox(value, label=row.label, elem_id=elem_id, visible=not (c.txt2img_only and is_img2img))
    if c.kind == "radio":
        return gr.Radio(list(row.ui_choices() or ()), value=value, label=row.label, elem_id=elem_id)
    if c.kind == "textbox":
        return gr.Textbox(label=row.label, placeholder=c.placeholder, lines=1, elem_id=elem_id,
                          info=row.tip if c.info else None)
    raise ValueError(f"setting {row.name}: unknown control kind {c.kind!r}")


def _lines(table: SettingsTable, group: str, placed: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """The group's lines, then every positional setting of that group the layout does not place."""
    named = {n for line in (*MAIN_LINES, *ADVANCED_LINES, *LAYOUT_LINES) for n in line} | set(_HEADER)
    extra = [(r.name,) for r in table.rows if r.position is not None and r.control is not None
             and r.control.group == group and r.name not in named]
    return [*placed, *extra]


def build_ui(is_img2img: bool, input_accordion: type, table: SettingsTable = SETTINGS) -> UiParts:
    """Build the accordion inside the current gradio Blocks context; every control comes from a row of `table`."""
    tab = "img2img" if is_img2img else "txt2img"
    made: dict[str, Any] = {}

    def put(lines: list[tuple[str, ...]]) -> None:
        for line in lines:
            if len(line) == 1:
                made[line[0]] = control(table.row(line[0]), tab, is_img2img)
                continue
            with gr.Row():
                for name in line:
                    made[name] = control(table.row(name), tab, is_img2img)

    enabled_row = table.row("enabled")
    with input_accordion(enabled_row.default, label=enabled_row.label, elem_id=f"segret_{tab}") as enabled:
        made["enabled"] = enabled
        made["concepts"] = control(table.row("concepts"), tab, is_img2img)
        gr.HTML(tooltip_holder(tab, table), elem_id=f"segret_{tab}_chips", elem_classes=["segret-chips"])
        made["method"] = control(table.row("method"), tab, is_img2img)
        # the method the controls' defaults were last set for (hidden; paste sets it with the method)
        previous_method = gr.Textbox(table.row("method").ui_value(), visible=False,
                                     elem_id=f"segret_{tab}_previous_method")
        # what most users touch first: concepts, method, step size, the maps, the layout; the rest in "Advanced"
        put(_lines(table, "main", MAIN_LINES))
        with gr.Accordion("Advanced", open=False, elem_id=f"segret_{tab}_advanced"):
            put(_lines(table, "advanced", ADVANCED_LINES))
        with gr.Accordion("Layout", open=False, elem_id=f"segret_{tab}_layout_panel"):
            # javascript/segret_layout.js draws the box editor here and keeps it in sync with the textbox
            gr.HTML('<div class="segret-layout-editor"></div>', elem_id=f"segret_{tab}_layout_editor",
                    elem_classes=["segret-layout"])
            put(_lines(table, "layout", LAYOUT_LINES))
    # user input only (not paste, which sets every control from the infotext): the method's defaults
    switched = switched_by_method(table)
    made["method"].input(method_switch(switched, table),
                         inputs=[made["method"], previous_method, *(made[n] for n in switched)],
                         outputs=[*(made[n] for n in switched), previous_method], show_progress=False)
    infotext_fields = []
    for name, source in table.paste_fields():
        infotext_fields.append((made[name], source))
        if name == "method":
            infotext_fields.append((previous_method, source))
    return UiParts([made[name] for name in table.positional], infotext_fields, table.paste_field_names())


def switched_by_method(table: SettingsTable = SETTINGS) -> tuple[str, ...]:
    """The controls whose default depends on the method (rows with by_method and a place in the UI): the
    handler's first three (iterative, step size, step rule) in their historical order, then table order."""
    names = [r.name for r in table.rows if r.by_method is not None and r.position is not None]
    first = [n for n in ("iterative", "step_size", "step_rule") if n in names]
    return (*first, *(n for n in names if n not in first))


def method_switch(names: tuple[str, ...], table: SettingsTable = SETTINGS):
    """The Method radio's input handler: (method, previous, *values of `names`) -> (an update per name, the new
    previous). A control still at the previous method's default takes the new method's
    (script_args.switch_method); one the user changed stays."""

    def on_input(method: str, previous: str, *values: Any):
        try:
            out = switch_method(dict(zip(names, values, strict=True)), previous or "astar", method, table)
        except ValueError:  # an unknown label cannot come from the radio; leave everything as it is
            return (*(gr.update() for _ in names), previous)
        return (*(gr.update(value=out[n]) for n in names), method)

    return on_input


on_method_input = method_switch(switched_by_method())  # the accordion's (step size, iterative, step rule)
