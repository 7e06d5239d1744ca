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

from ..settings.layout_boxes import LayoutError, layout_json, parse_layout
from ..settings.params import (
    AUTO,
    INFOTEXT_PREFIX,
    MAPS_VIEWS,
    METHOD_DEFAULTS,
    METHOD_LABELS,
    UI_FIELDS,
    SegretParams,
    canonical_method,
    step_rule_in,
)
from ..settings.params import STEP_RULE_CHOICES as CHOICES
from .script_args import switch_method, threshold_from, threshold_mode_from

ACCORDION_LABEL = "A-STAR (segregation & retention)"

TIPS = {
    "enabled": "Keep the concepts below apart (segregation) and stop them from fading (retention) while sampling.",
    "concepts": "Words or phrases from the prompt, comma-separated (e.g. 'cat, dog' or 'red car, traffic light'). "
                "Click a chip below to add or remove a word.",
    "method": "A-STAR: keep the concepts' attention apart and on their regions (every step). Attend-and-Excite: "
              "raise the attention peak of the most neglected concept (first half of the steps, iterative "
              "refinement at 3 steps). Both: the two losses summed, with A-STAR's schedule. Switching sets the "
              "method's default for Iterative refinement unless you changed it.",
    "seg_weight": "Weight of the segregation loss (A-STAR and Both): how strongly overlapping attention of "
                  "different concepts is pushed apart. 0 turns it off.",
    "ret_weight": "Weight of the retention loss (A-STAR and Both): how strongly each concept keeps the region it "
                  "attended to at the previous step. 0 turns it off.",
    "step_size": "Scale of the latent update (alpha = step size x sqrt(1 -> 0.5) over the steps). "
                 "Higher is stronger; too high gives artefacts.",
    "step_rule": "How the step size becomes an update. auto: the method's rule (balanced for A-STAR and Both, "
                 "v1 for Attend-and-Excite). balanced: the losses are means over concept pairs and concepts, "
                 "beyond 10 steps each step's push shrinks (50 steps push about twice as far as 10, not five "
                 "times) and the update is smoothed at the attention maps' scale (less grain). v1: the paper's "
                 "sums at every step, as before; infotexts without a step rule were made with it.",
    "last_step": "Last sampling step that is refined. 0 = the method's default: every step for A-STAR and Both, "
                 "the first half for Attend-and-Excite. Refining only the first steps is faster but concepts can "
                 "fade again later.",
    "threshold_mode": "How the retention mask is made from the previous step's map: a fraction of its maximum, "
                      "or Otsu's automatic threshold.",
    "threshold": "Retention mask = attention >= this fraction of the map's maximum (fraction mode only).",
    "iterative": "Repeat the update at a few steps until the loss reaches a target (at most 20 times). A-STAR, Both: "
                 "steps 1, 11, 21, loss 0.2. Attend-and-Excite (on by default): steps 1, 11, 21 of 50 (scaled to "
                 "your step count) until every concept's attention peaks at 0.05, 0.5, 0.8. Slower.",
    "show_maps": "Add each concept's attention (averaged over the refined steps) over the generated image, and "
                 "one picture with all concepts in their own colours (Maps view: also the before/after grid).",
    "maps_view": "What Show attention maps adds: overlays on the image, the before/after grid at four steps, "
                 "or both.",
    "layout": "Boxes per concept as fractions of the image (x0, y0, x1, y1), origin top left; drawn in the editor "
              "above or typed as JSON: {\"cat\": [0, 0.2, 0.5, 0.9]}. A boxed concept's retention target is its "
              "box; concepts without a box keep the normal one.",
    "layout_strength": "Retention weight of the boxed concepts: how strongly their attention is pulled into their "
                       "box (every method, from the first step).",
    "layout_exclusive": "Also push each concept's attention out of the other concepts' boxes.",
    "hires": "Also refine the hires-fix second pass (off by default: the first pass already fixes the layout).",
    "low_vram": "Recompute the UNet's activations in the refinement's backward pass instead of keeping them: "
                "almost no VRAM beyond normal sampling, each refined step about 1.5x slower. Switched on by itself "
                "if the GPU runs out of memory.",
}


def tooltip_holder(tab: str) -> str:
    """A hidden element carrying every control's tooltip by elem_id; javascript/segret.js turns them into
    hover titles (the accordion's under its own id)."""
    tips = {f"segret_{tab}": TIPS["enabled"], **{f"segret_{tab}_{name}": TIPS[name] for name in UI_FIELDS[1:]}}
    return f'<span class="segret-tips" hidden data-tips="{html.escape(json.dumps(tips), quote=True)}"></span>'


@dataclass
class UiParts:
    """What Script.ui returns (components in UI_FIELDS order) and the Script's paste attributes."""

    components: list[Any]
    infotext_fields: list[tuple[Any, Any]]
    paste_field_names: list[str]


def build_ui(is_img2img: bool, input_accordion: type) -> UiParts:
    """Build the accordion inside the current gradio Blocks context."""
    tab = "img2img" if is_img2img else "txt2img"
    d = SegretParams()
    with input_accordion(False, label=ACCORDION_LABEL, elem_id=f"segret_{tab}") as enabled:
        concepts = gr.Textbox(label="Concepts", placeholder="cat, dog", lines=1, elem_id=f"segret_{tab}_concepts",
                              info=TIPS["concepts"])
        gr.HTML(tooltip_holder(tab), elem_id=f"segret_{tab}_chips", elem_classes=["segret-chips"])
        method = gr.Radio(list(METHOD_LABELS.values()), value=METHOD_LABELS[d.method], label="Method",
                          elem_id=f"segret_{tab}_method")
        # the method the controls' defaults were last set for (hidden; paste sets it with the method)
        previous_method = gr.Textbox(METHOD_LABELS[d.method], visible=False, elem_id=f"segret_{tab}_previous_method")
        # what most users touch first: concepts, method, step size, the maps, the layout; the rest in "Advanced"
        with gr.Row():
            step_size = gr.Slider(0.0, 100.0, d.step_size, step=0.5, label="Step size",
                                  elem_id=f"segret_{tab}_step_size")
            show_maps = gr.Checkbox(d.show_maps, label="Show attention maps", elem_id=f"segret_{tab}_show_maps")
        with gr.Accordion("Advanced", open=False, elem_id=f"segret_{tab}_advanced"):
            with gr.Row():
                seg_weight = gr.Slider(0.0, 5.0, d.seg_weight, step=0.05, label="Segregation weight",
                                       elem_id=f"segret_{tab}_seg_weight")
                ret_weight = gr.Slider(0.0, 5.0, d.ret_weight, step=0.05, label="Retention weight",
                                       elem_id=f"segret_{tab}_ret_weight")
            with gr.Row():
                threshold_mode = gr.Radio(["fraction", "otsu"], value=d.threshold_mode, label="Retention mask",
                                          elem_id=f"segret_{tab}_threshold_mode")
                threshold = gr.Slider(0.05, 0.95, d.threshold, step=0.05, label="Mask threshold",
                                      elem_id=f"segret_{tab}_threshold")
            with gr.Row():
                step_rule = gr.Radio(list(CHOICES), value=AUTO, label="Step rule", elem_id=f"segret_{tab}_step_rule")
                last_step = gr.Slider(0, 150, d.last_step, step=1, label="Last refined step (0 = method default)",
                                      elem_id=f"segret_{tab}_last_step")
            with gr.Row():
                iterative = gr.Checkbox(d.iterative, label="Iterative refinement",
                                        elem_id=f"segret_{tab}_iterative")
                hires = gr.Checkbox(d.hires, label="Refine hires fix pass", elem_id=f"segret_{tab}_hires",
                                    visible=not is_img2img)
                low_vram = gr.Checkbox(d.low_vram, label="Low VRAM", elem_id=f"segret_{tab}_low_vram")
            maps_view = gr.Radio(list(MAPS_VIEWS), value=d.maps_view, label="Maps view",
                                 elem_id=f"segret_{tab}_maps_view")
        with gr.Accordion("Layout", open=False, elem_id=f"segret_{tab}_layout_panel"):
            # javascript/segret_layout.js draws the box editor here and keeps it in sync with the textbox
            gr.HTML('<div class="segret-layout-editor"></div>', elem_id=f"segret_{tab}_layout_editor",
                    elem_classes=["segret-layout"])
            layout = gr.Textbox(label="Boxes (JSON, fractions x0, y0, x1, y1)",
                                placeholder='{"cat": [0, 0.2, 0.5, 0.9]}', lines=1, elem_id=f"segret_{tab}_layout")
            with gr.Row():
                layout_strength = gr.Slider(0.0, 10.0, d.layout_strength, step=0.1, label="Layout strength",
                                            elem_id=f"segret_{tab}_layout_strength")
                layout_exclusive = gr.Checkbox(d.layout_exclusive, label="Keep out of other boxes",
                                               elem_id=f"segret_{tab}_layout_exclusive")
    # user input only (not paste, which sets every control from the infotext): the method's defaults
    method.input(on_method_input, inputs=[method, previous_method, iterative, step_size, step_rule],
                 outputs=[iterative, step_size, step_rule, previous_method], show_progress=False)
    components = {
        "enabled": enabled, "concepts": concepts, "seg_weight": seg_weight, "ret_weight": ret_weight,
        "step_size": step_size, "last_step": last_step, "threshold_mode": threshold_mode,
        "threshold": threshold, "iterative": iterative, "show_maps": show_maps, "hires": hires,
        "low_vram": low_vram, "method": method, "layout": layout, "layout_strength": layout_strength,
        "layout_exclusive": layout_exclusive, "maps_view": maps_view, "step_rule": step_rule,
    }
    key = f"{INFOTEXT_PREFIX} "
    infotext_fields = [
        (enabled, lambda d: key + "concepts" in d),
        (concepts, key + "concepts"),
        (seg_weight, key + "seg weight"),
        (ret_weight, key + "ret weight"),
        (step_size, key + "step size"),
        (last_step, key + "last step"),
        (threshold_mode, lambda d: threshold_mode_from(d.get(key + "threshold"))),
        (threshold, lambda d: threshold_from(d.get(key + "threshold"))),
        (iterative, lambda d: iterative_from(d)),
        (hires, lambda d: True if key + "hires" in d else None),
        (method, lambda d: method_label_from(d)),
        (previous_method, lambda d: method_label_from(d)),
        (layout, lambda d: layout_from(d)),
        (layout_strength, key + "layout strength"),
        (layout_exclusive, lambda d: (key + "layout exclusive" in d) if key + "concepts" in d else None),
        (step_rule, lambda d: step_rule_in(d)),
    ]
    paste_field_names = [key + n for n in ("concepts", "seg weight", "ret weight", "step size", "last step",
                                           "threshold", "method", "layout", "layout strength", "step rule")]
    return UiParts([components[name] for name in UI_FIELDS], infotext_fields, paste_field_names)


def layout_from(info) -> str | None:
    """Infotext `A-STAR layout` -> the Boxes textbox (JSON); an A-STAR infotext without one clears the boxes."""
    key = f"{INFOTEXT_PREFIX} "
    if key + "layout" not in info:
        return "" if key + "concepts" in info else None
    try:
        return layout_json(parse_layout(info[key + "layout"]))
    except LayoutError:
        return str(info[key + "layout"])


def on_method_input(method: str, previous: str, iterative: bool, step_size: float, step_rule: str = "balanced"):
    """The Method radio changed by the user: the method-dependent controls still at the previous method's
    default take the new method's (script_args.switch_method); returns (iterative update, step size update,
    step rule update, new previous)."""
    try:
        values = switch_method({"iterative": iterative, "step_size": step_size, "step_rule": step_rule},
                               previous or "astar", method)
    except ValueError:  # an unknown label cannot come from the radio; leave everything as it is
        return gr.update(), gr.update(), gr.update(), previous
    return (gr.update(value=values["iterative"]), gr.update(value=values["step_size"]),
            gr.update(value=values["step_rule"]), method)


def method_label_from(info) -> str | None:
    """Infotext -> the Method radio's value: the written method, A-STAR for an infotext without one."""
    key = f"{INFOTEXT_PREFIX} "
    if key + "method" in info:
        try:
            return METHOD_LABELS[canonical_method(info[key + "method"])]
        except ValueError:
            return None
    return METHOD_LABELS["astar"] if key + "concepts" in info else None


def iterative_from(info) -> bool | None:
    """Infotext -> the Iterative refinement checkbox: 'off', the settings (on), or absent (the method's default)."""
    key = f"{INFOTEXT_PREFIX} "
    raw = info.get(key + "iterative")
    if raw is not None:
        return str(raw).strip().lower() != "off"
    if key + "concepts" not in info:
        return None
    label = method_label_from(info)
    method = canonical_method(label) if label else "astar"
    return METHOD_DEFAULTS[method]["iterative"]
