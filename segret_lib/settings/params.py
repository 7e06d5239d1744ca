"""All user-visible settings (A-STAR and Attend-and-Excite): the settings table (SETTINGS, one row per setting)
and what is derived from it: SegretParams (validation, coercion, infotext round trip), UI_FIELDS (the positional
list), METHOD_DEFAULTS. The few settings whose infotext does not fit a row's defaults point to the small
functions below (threshold, iterative refinement, method, step rule, layout)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .table import (  # noqa: F401 (FALSE_WORDS, INFOTEXT_PREFIX, TRUE_WORDS, read_switch: re-exported)
    FALSE_WORDS,
    INFOTEXT_PREFIX,
    TRUE_WORDS,
    Axis,
    Control,
    ParamError,
    Setting,
    SettingsTable,
    concepts_in,
    fmt,
    infotext_key,
    read_switch,
)

MAX_CONCEPTS = 8
THRESHOLD_MODES = ("fraction", "otsu")
# What "Show attention maps" adds: each concept's map over the image (+ all concepts in one picture), the
# before/after grid at four steps, or both
MAPS_VIEWS = ("overlay", "grid", "both")
TOKEN_COMBINE_MODES = ("mean", "max", "sum")
# Step rules (engine/step_rule.py defines what each does): "auto" is the method's own (METHOD_DEFAULTS), the
# UI's default, so a padded API list gets it.
STEP_RULES = ("v1", "balanced", "steady", "early")
DEFAULT_RULE = "early"
AUTO = "auto"
STEP_RULE_CHOICES: tuple[str, ...] = (AUTO, *STEP_RULES)
_EXPERIMENTAL_RULES: set[str] = set()  # registered by the benchmark (engine.step_rule.register), never in the UI
LAYOUT_SWITCH = "layout_on"  # X/Y/Z override key: "On" keeps the layout, "Off" drops its boxes (ui/script_args)


def allow_step_rule(name: str) -> None:
    """Accept one more rule name (a benchmark's candidate rule)."""
    _EXPERIMENTAL_RULES.add(name)

# Methods: A-STAR's segregation + retention losses, Attend-and-Excite's (Chefer et al. 2023) "most neglected
# concept" loss, or both losses summed. Canonical names, and the labels the UI, the infotext and X/Y/Z show.
METHODS = ("astar", "aae", "both")
# The method the UI starts with and the HTTP API's dict takes when it names none: Both (A-STAR's losses and a
# quarter of Attend-and-Excite's), which broke fewer images than A-STAR alone and fixed more in every prompt-set
# family measured (quality/README.md "Both at a quarter"). The table's own default stays A-STAR: infotexts
# without a method were made with A-STAR (and still are), and SegretParams.create() without one is A-STAR.
DEFAULT_METHOD = "both"
METHOD_LABELS = {"astar": "A-STAR", "aae": "Attend-and-Excite", "both": "Both"}
_METHOD_ALIASES = {
    "astar": "astar", "a-star": "astar", "a_star": "astar", "a star": "astar",
    "aae": "aae", "a&e": "aae", "ae": "aae", "attend-and-excite": "aae", "attend_and_excite": "aae",
    "attend and excite": "aae", "attendandexcite": "aae",
    "both": "both", "a-star + attend-and-excite": "both", "astar+aae": "both",
}

# Attend-and-Excite's published schedule (reference code, config.py), defined for 50 steps and scaled to T steps
# by step index i -> round(i * T / 50), halves rounded up (schedule.scale_step).
AAE_REFERENCE_STEPS = 50
AAE_LAST_STEP = 25  # updates on steps 0..24 of 50 (max_iter_to_alter = 25): the first half
AAE_ITERATIVE_STEPS = (0, 10, 20)  # iterative refinement at these steps...
AAE_THRESHOLDS = (0.05, 0.5, 0.8)  # ...until every concept's smoothed map reaches this maximum
AAE_TARGETS = (0.95, 0.5, 0.2)  # the same as loss targets: 1 - threshold

# Settings whose default depends on the method (the rows' by_method). The HTTP API's dict fills the keys it does
# not give from the chosen method's column; the UI switches a control to the new method's default only while it
# still holds the previous method's default (script_args.switch_method). last_step 0 and iterative_steps () are
# resolved per pass against its step count (schedule.last_refined_step / iterative_schedule).
# Step size: Attend-and-Excite keeps its published 20. Under v1, A-STAR and Both took 10, calibrated on the
# neglect benchmark (docs/method.md "Step size under v1": at 20 the update broke about as many images as it
# fixed and added grain). Step rule (step_rule.py): A-STAR and Both use "early" (balanced's losses per pair /
# per concept, step budget per pass and low-passed gradient, each update keeps the latent's RMS, and only the
# first half of the steps is refined), whose step size is calibrated on the benchmark matrix (quality/README.md).
# Attend-and-Excite keeps its published schedule ("v1", 20).
ASTAR_STEP_SIZE = 30.0
# Attribute binding (engine/binding.py): the weight of L_bind; 0 = off (and old infotexts, which lack it)
ASTAR_BIND_WEIGHT = 0.0
# Both's weight of Attend-and-Excite's term: 0.25 broke fewer images than 1 in every prompt-set family measured
# (quality/README.md "Both at a quarter"); 1 (the plain sum) before, and in infotexts without the key
BOTH_EXCITE_WEIGHT = 0.25
LEGACY_EXCITE_WEIGHT = 1.0
V1_STEP_SIZE = 10.0  # A-STAR's default under the v1 rule
AAE_STEP_SIZE = 20.0


def split_concepts(text: str | Iterable[str]) -> tuple[str, ...]:
    """Split a comma-separated concept list ("cat, traffic light") into stripped, non-empty entries."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for part in parts:
        word = " ".join(str(part).split())
        if word and word.lower() not in (w.lower() for w in out):
            out.append(word)
    return tuple(out)


def canonical_method(value: Any) -> str:
    """'A-STAR', 'Attend-and-Excite', 'aae', 'both', ... -> one of METHODS."""
    name = " ".join(str(value).strip().lower().split())
    if name in _METHOD_ALIASES:
        return _METHOD_ALIASES[name]
    labels = ", ".join(f"{k!r}" for k in (*METHODS, *METHOD_LABELS.values()))
    raise ParamError(f"method must be one of {labels}, got {value!r}")


def _parse_targets(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        items = [s for s in value.replace(";", ",").replace(" ", ",").split(",") if s.strip()]
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        items = list(value)
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError) as e:
        raise ParamError(f"iterative_target must be numbers (one, or one per iterative step), got {value!r}") from e


def _parse_steps(text: str | Iterable[int]) -> tuple[int, ...]:
    if isinstance(text, str):
        items = [s for s in text.replace(";", ",").split(",") if s.strip()]
        try:
            return tuple(sorted({int(s) for s in items}))
        except ValueError as e:
            raise ParamError(f"iterative steps must be integers separated by commas, got {text!r}") from e
    return tuple(sorted({int(s) for s in text}))


def _parse_layout(value: Any) -> tuple:
    from .layout_boxes import LayoutError, parse_layout

    try:
        return parse_layout(value)
    except LayoutError as e:
        raise ParamError(str(e)) from None


def _layout_text(layout: tuple) -> str:
    from .layout_boxes import layout_text

    return layout_text(layout)


# ---------------------------------------------------------------------------------------------- special cases
# Checks that are more than a range or a list of choices.
def _check_threshold(value: float, p: Any) -> None:
    if p.threshold_mode == "fraction" and not 0.0 < value < 1.0:
        raise ParamError(f"threshold must be in (0, 1) as a fraction of the map's maximum, got {value}")


def _check_kernel(value: int, _p: Any) -> None:
    if value < 1 or value % 2 == 0 or value > 15:
        raise ParamError(f"smooth_kernel must be an odd integer in 1..15, got {value}")


def _check_steps(value: tuple[int, ...], _p: Any) -> None:
    if any(s < 0 for s in value):
        raise ParamError(f"iterative_steps must be >= 0, got {value}")


def _check_targets(value: tuple, _p: Any) -> None:
    if not value:
        raise ParamError("iterative_target needs at least one value")
    for v in value:
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ParamError(f"iterative_target must be finite numbers, got {value!r}")
        if not 0.0 <= v <= 100.0:
            raise ParamError(f"iterative_target must be in [0.0, 100.0], got {v}")


def _check_step_rule(value: str, _p: Any) -> None:
    if value not in STEP_RULES and value not in _EXPERIMENTAL_RULES:
        raise ParamError(f"step_rule must be one of {STEP_RULES}, got {value!r}")


def _check_enabled(p: Any) -> None:
    """What only an enabled run needs: concepts, something to optimise, boxes that name concepts."""
    if not p.enabled:
        return
    if not p.concepts:
        raise ParamError("no concept words given: type the words to keep apart, e.g. 'cat, dog'")
    if len(p.concepts) > MAX_CONCEPTS:
        raise ParamError(f"at most {MAX_CONCEPTS} concepts, got {len(p.concepts)}")
    if p.method != "aae" and p.seg_weight == 0 and p.ret_weight == 0 and not p.bind_weight and not p.layout:
        if p.method == "astar":
            raise ParamError("both loss weights are 0: nothing to optimise")
        if p.excite_weight == 0:
            raise ParamError("the segregation, retention and excite weights are all 0: nothing to optimise")
    from .layout_boxes import LayoutError, check_names

    try:
        check_names(p.layout, p.concepts)
    except LayoutError as e:
        raise ParamError(str(e)) from None


def _normalize_step_rule(value: Any, p: Any) -> Any:
    """One spelling (strip/lower), so the infotext and the v1 test see the same name; "auto": the method's."""
    if not isinstance(value, str):
        return value
    rule = value.strip().lower()
    return METHOD_DEFAULTS[p.method]["step_rule"] if rule == AUTO else rule


def _as_targets(value: Any, _p: Any) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else _parse_targets(value)


# Threshold: one infotext entry for two settings, "otsu" or the fraction.
def _write_threshold(p: Any) -> dict[str, str]:
    return {infotext_key("threshold"): "otsu" if p.threshold_mode == "otsu" else fmt(p.threshold)}


def _read_threshold(info: Mapping[str, Any]) -> dict[str, Any]:
    if infotext_key("threshold") not in info:
        return {}
    raw = str(info[infotext_key("threshold")]).strip().lower()
    return {"threshold_mode": "otsu"} if raw == "otsu" else {"threshold_mode": "fraction", "threshold": raw}


def threshold_mode_from(value) -> str | None:
    """Infotext `A-STAR threshold` ("otsu" or a number) -> the Retention mask radio's value."""
    if value is None:
        return None
    return "otsu" if str(value).strip().lower() == "otsu" else "fraction"


def threshold_from(value) -> float | None:
    """Infotext `A-STAR threshold` -> the Mask threshold slider's value (None for otsu)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# Iterative refinement: one entry for four settings, "off" where the method's default is on.
def _write_iterative(p: Any) -> dict[str, str]:
    if p.iterative:
        steps = " ".join(map(str, p.iterative_steps)) if p.iterative_steps else "auto"
        return {infotext_key("iterative"): f"steps {steps}; target {' '.join(fmt(t) for t in p.iterative_target)}; "
                                           f"max {p.iterative_max}"}
    if METHOD_DEFAULTS[p.method]["iterative"]:
        return {infotext_key("iterative"): "off"}  # the method's default is on: say it was turned off
    return {}


def _read_iterative(info: Mapping[str, Any]) -> dict[str, Any]:
    key = infotext_key("iterative")
    if str(info.get(key, "")).strip().lower() == "off":
        return {"iterative": False}
    if key not in info:
        return {}
    values: dict[str, Any] = {"iterative": True}
    for part in str(info[key]).split(";"):
        name, _, val = part.strip().partition(" ")
        if name == "steps":
            values["iterative_steps"] = "" if val.strip() == "auto" else val.replace(" ", ",")
        elif name == "target":
            values["iterative_target"] = val
        elif name == "max":
            values["iterative_max"] = val
    return values


def iterative_from(info) -> bool | None:
    """Infotext -> the Iterative refinement checkbox: 'off', the settings (on), or absent (the method's default)."""
    raw = info.get(infotext_key("iterative"))
    if raw is not None:
        return str(raw).strip().lower() != "off"
    if not concepts_in(info):
        return None
    label = method_label_from(info)
    method = canonical_method(label) if label else "astar"
    return METHOD_DEFAULTS[method]["iterative"]


def method_label_from(info) -> str | None:
    """Infotext -> the Method radio's value: the written method, A-STAR for an infotext without one."""
    key = infotext_key("method")
    if key in info:
        try:
            return METHOD_LABELS[canonical_method(info[key])]
        except ValueError:
            return None
    return METHOD_LABELS["astar"] if concepts_in(info) else None


def step_rule_in(info: Mapping[str, Any]) -> str | None:
    """The step rule an infotext was made with: the one it names, v1 for an A-STAR infotext without one
    (written before the rule existed), None for other infotexts."""
    key = infotext_key("step rule")
    if key in info:
        return str(info[key]).strip().lower()
    return "v1" if concepts_in(info) else None


def _write_step_rule(p: Any) -> dict[str, str]:
    return {infotext_key("step rule"): p.step_rule} if p.step_rule != "v1" else {}  # absent: v1, the versions before


def _read_step_rule(info: Mapping[str, Any]) -> dict[str, Any]:
    rule = step_rule_in(info)
    return {} if rule is None else {"step_rule": rule}


# Excite weight: Both writes it every time (its default is no longer what an infotext without it was made with);
# the other methods, where it does nothing, only when it is not 1. Absent from an A-STAR infotext: 1, the weight of
# every version before Both's default became 0.25.
_EXCITE_BY_METHOD = {"astar": LEGACY_EXCITE_WEIGHT, "aae": LEGACY_EXCITE_WEIGHT, "both": BOTH_EXCITE_WEIGHT}


def _write_excite_weight(p: Any) -> dict[str, str]:
    if p.method == "both" or p.excite_weight != LEGACY_EXCITE_WEIGHT:
        return {infotext_key("excite weight"): fmt(p.excite_weight)}
    return {}


def excite_weight_in(info: Mapping[str, Any]) -> Any:
    """The excite weight an infotext was made with: the one it names, 1 for an A-STAR infotext without one."""
    key = infotext_key("excite weight")
    if key in info:
        return info[key]
    return LEGACY_EXCITE_WEIGHT if concepts_in(info) else None


def _read_excite_weight(info: Mapping[str, Any]) -> dict[str, Any]:
    weight = excite_weight_in(info)
    return {} if weight is None else {"excite_weight": weight}


# Layout: strength and exclusive are written, and read, only with boxes.
def layout_from(info) -> str | None:
    """Infotext `A-STAR layout` -> the Boxes textbox (JSON); an A-STAR infotext without one clears the boxes."""
    from .layout_boxes import LayoutError, layout_json, parse_layout

    key = infotext_key("layout")
    if key not in info:
        return "" if concepts_in(info) else None
    try:
        return layout_json(parse_layout(info[key]))
    except LayoutError:
        return str(info[key])


def _write_layout_strength(p: Any) -> dict[str, str]:
    return {infotext_key("layout strength"): fmt(p.layout_strength)} if p.layout else {}


def _read_layout_strength(info: Mapping[str, Any]) -> dict[str, Any]:
    key = infotext_key("layout strength")
    return {"layout_strength": info[key]} if infotext_key("layout") in info and key in info else {}


def _write_layout_exclusive(p: Any) -> dict[str, str]:
    return {infotext_key("layout exclusive"): "True"} if p.layout and p.layout_exclusive else {}


def _read_layout_exclusive(info: Mapping[str, Any]) -> dict[str, Any]:
    if infotext_key("layout") not in info:
        return {}
    return {"layout_exclusive": str(info.get(infotext_key("layout exclusive"), "")).lower() == "true"}


def _paste_layout_exclusive(info: Mapping[str, Any]) -> bool | None:
    return (infotext_key("layout exclusive") in info) if concepts_in(info) else None


def _read_hires(info: Mapping[str, Any]) -> dict[str, Any]:
    key = infotext_key("hires")
    return {"hires": str(info[key]).lower() == "true"} if key in info else {}


# ---------------------------------------------------------------------------------------------- the table
ACCORDION_LABEL = "A-STAR (segregation & retention)"
_ON_ALL_METHODS = (0, 10, 20)

ROWS = (
    Setting("enabled", "bool", False, position=0, label=ACCORDION_LABEL, control=Control("accordion"),
            tip="Keep the concepts below apart (segregation) and stop them from fading (retention) while sampling.",
            read=lambda info: {"enabled": True} if concepts_in(info) else {}, paste=concepts_in),
    Setting("concepts", "tuple[str, ...]", (), parse=split_concepts, position=1, label="Concepts",
            control=Control("textbox", placeholder="cat, dog", info=True, group="main"),
            tip="Words or phrases from the prompt, comma-separated (e.g. 'cat, dog' or 'red car, traffic light'). "
                "Click a chip below to add or remove a word.",
            infotext="concepts", always=True),
    Setting("seg_weight", "float", 1.0, bounds=(0.0, 100.0), position=2, label="Segregation weight",  # w_seg, Eq. 4
            control=Control("slider", 0.0, 5.0, 0.05),
            tip="Weight of the segregation loss (A-STAR and Both): how strongly overlapping attention of "
                "different concepts is pushed apart. 0 turns it off.",
            infotext="seg weight", always=True, xyz=Axis("[A-STAR] Segregation weight", float)),
    Setting("ret_weight", "float", 1.0, bounds=(0.0, 100.0), position=3, label="Retention weight",  # w_ret, Eq. 4
            control=Control("slider", 0.0, 5.0, 0.05),
            tip="Weight of the retention loss (A-STAR and Both): how strongly each concept keeps the region it "
                "attended to at the previous step. 0 turns it off.",
            infotext="ret weight", always=True, xyz=Axis("[A-STAR] Retention weight", float)),
    # scale_factor of alpha_t = scale * sqrt(linspace(1, 0.5, T))
    Setting("step_size", "float", ASTAR_STEP_SIZE, bounds=(0.0, 1000.0),
            by_method={"astar": ASTAR_STEP_SIZE, "aae": AAE_STEP_SIZE, "both": ASTAR_STEP_SIZE},
            position=4, label="Step size", control=Control("slider", 0.0, 100.0, 0.5, group="main"),
            tip="Scale of the latent update (alpha = step size x sqrt(1 -> 0.5) over the steps). "
                "Higher is stronger; too high gives artefacts.",
            infotext="step size", always=True, xyz=Axis("[A-STAR] Step size", float)),
    # last refined sampling step (1-based); 0 = the method's: the first half (A&E's schedule; A-STAR's rule early)
    Setting("last_step", "int", 0, bounds=(0, 10000), position=5, label="Last refined step (0 = method default)",
            control=Control("slider", 0, 150, 1),
            tip="Last sampling step that is refined. 0 = the method's default: the first half of the steps "
                "(every step under the step rules v1, balanced and steady). Refining fewer steps is faster but "
                "concepts can fade again later.",
            infotext="last step", always=True, xyz=Axis("[A-STAR] Last refined step", int)),
    # retention mask: A >= threshold * max(A), or Otsu; one infotext entry with the threshold
    Setting("threshold_mode", "str", "fraction", choices=THRESHOLD_MODES, position=6, label="Retention mask",
            control=Control("radio"),
            tip="How the retention mask is made from the previous step's map: a fraction of its maximum, "
                "or Otsu's automatic threshold.",
            paste=lambda info: threshold_mode_from(info.get(infotext_key("threshold")))),
    Setting("threshold", "float", 0.5, check=_check_threshold, position=7, label="Mask threshold",
            control=Control("slider", 0.05, 0.95, 0.05),
            tip="Retention mask = attention >= this fraction of the map's maximum (fraction mode only).",
            infotext="threshold", write=_write_threshold, read=_read_threshold,
            paste=lambda info: threshold_from(info.get(infotext_key("threshold")))),
    # A&E-style repeat-until-target at chosen steps; one infotext entry with the three below
    Setting("iterative", "bool", False, by_method={"astar": False, "aae": True, "both": False}, position=8,
            label="Iterative refinement", control=Control("checkbox"),
            tip="Repeat the update at a few steps until the loss reaches a target (at most 20 times). A-STAR, Both: "
                "steps 1, 11, 21, loss 0.2. Attend-and-Excite (on by default): steps 1, 11, 21 of 50 (scaled to "
                "your step count) until every concept's attention peaks at 0.05, 0.5, 0.8. Slower.",
            infotext="iterative", write=_write_iterative, read=_read_iterative, paste=iterative_from,
            paste_name=False),
    # 0-based step indices; () = A&E's 0, 10, 20 of 50, scaled
    Setting("iterative_steps", "tuple[int, ...]", _ON_ALL_METHODS, parse=_parse_steps, check=_check_steps,
            by_method={"astar": _ON_ALL_METHODS, "aae": (), "both": _ON_ALL_METHODS}),
    # loss to reach: one value, or one per iterative step
    Setting("iterative_target", "tuple[float, ...]", (0.2,), parse=_parse_targets, normalize=_as_targets,
            check=_check_targets, by_method={"astar": (0.2,), "aae": AAE_TARGETS, "both": (0.2,)}),
    Setting("iterative_max", "int", 20, bounds=(1, 200)),  # cap on updates at one step
    Setting("softmax_temperature", "float", 100.0, bounds=(1e-3, 1e4)),  # scale before the token softmax (A&E)
    Setting("smooth_kernel", "int", 3, check=_check_kernel),
    Setting("smooth_sigma", "float", 0.5, bounds=(0.0, 10.0)),
    Setting("token_combine", "str", "mean", choices=TOKEN_COMBINE_MODES),  # a multi-token concept's maps combined
    Setting("hires", "bool", False, position=10, label="Refine hires fix pass",  # also refine the second pass
            control=Control("checkbox", txt2img_only=True),
            tip="Also refine the hires-fix second pass (off by default: the first pass already fixes the layout).",
            infotext="hires", read=_read_hires, paste=lambda info: True if infotext_key("hires") in info else None,
            paste_name=False),
    Setting("show_maps", "bool", False, position=9, label="Show attention maps",
            control=Control("checkbox", group="main"),
            tip="Add each concept's attention (averaged over the refined steps) over the generated image, and "
                "one picture with all concepts in their own colours (Maps view: also the before/after grid)."),
    Setting("early_exit", "bool", True),  # stop the UNet after the last captured layer during refinement
    Setting("low_vram", "bool", False, position=11, label="Low VRAM", control=Control("checkbox"),
            tip="Recompute the UNet's activations in the refinement's backward pass instead of keeping them: "
                "almost no VRAM beyond normal sampling, each refined step about 1.5x slower. Switched on by itself "
                "if the GPU runs out of memory."),
    # "astar", "aae" (Attend-and-Excite) or "both" (the two losses summed); aliases: canonical_method
    Setting("method", "str", "astar", parse=canonical_method, normalize=lambda v, _p: canonical_method(v),
            position=12, label="Method",
            control=Control("radio", choices=tuple(METHOD_LABELS.values()), value=METHOD_LABELS[DEFAULT_METHOD],
                            group="main"),
            tip="A-STAR: keep the concepts' attention apart and on their regions (the first half of the steps "
                "under the default step rule). Attend-and-Excite: raise the attention peak of the most neglected "
                "concept (first half of the steps, iterative refinement at 3 steps). Both: the two losses summed, "
                "with A-STAR's schedule. Switching sets the method's default for Iterative refinement unless you "
                "changed it.",
            infotext="method", show=METHOD_LABELS.__getitem__, paste=method_label_from,
            xyz=Axis("[A-STAR] Method", str)),
    # layout (paper section 5): ((concept, (x0, y0, x1, y1)), ...), fractions of the image; see layout_boxes.py
    Setting("layout", "tuple", (), parse=_parse_layout, normalize=lambda v, _p: _parse_layout(v), position=13,
            label="Boxes (JSON, fractions x0, y0, x1, y1)",
            control=Control("textbox", placeholder='{"cat": [0, 0.2, 0.5, 0.9]}', group="layout"),
            tip="Boxes per concept as fractions of the image (x0, y0, x1, y1), origin top left; drawn in the editor "
                "above or typed as JSON: {\"cat\": [0, 0.2, 0.5, 0.9]}. A boxed concept's retention target is its "
                "box; concepts without a box keep the normal one.",
            infotext="layout", show=_layout_text, paste=layout_from,
            xyz=Axis("[A-STAR] Layout", str, field=LAYOUT_SWITCH, choices=("On", "Off"))),
    # retention weight of the boxed concepts (their box is the retention target)
    Setting("layout_strength", "float", 1.0, bounds=(0.0, 100.0), position=14, label="Layout strength",
            control=Control("slider", 0.0, 10.0, 0.1, group="layout"),
            tip="Retention weight of the boxed concepts: how strongly their attention is pulled into their "
                "box (every method, from the first step).",
            infotext="layout strength", write=_write_layout_strength, read=_read_layout_strength,
            paste=infotext_key("layout strength"), xyz=Axis("[A-STAR] Layout strength", float)),
    Setting("layout_exclusive", "bool", False, position=15, label="Keep out of other boxes",
            control=Control("checkbox", group="layout"),
            tip="Also push each concept's attention out of the other concepts' boxes.",
            infotext="layout exclusive", write=_write_layout_exclusive, read=_read_layout_exclusive,
            paste=_paste_layout_exclusive, paste_name=False),
    Setting("maps_view", "str", "overlay", choices=MAPS_VIEWS, position=16, label="Maps view",
            control=Control("radio"),
            tip="What Show attention maps adds: overlays on the image, the before/after grid at four steps, "
                "or both."),
    # how the step size becomes an update (step_rule.py); "auto": the method's
    Setting("step_rule", "str", AUTO, normalize=_normalize_step_rule, check=_check_step_rule,
            by_method={"astar": DEFAULT_RULE, "aae": "v1", "both": DEFAULT_RULE}, position=17, label="Step rule",
            control=Control("radio", choices=STEP_RULE_CHOICES),
            tip="How the step size becomes an update. auto: the method's rule (early for A-STAR and Both, "
                "v1 for Attend-and-Excite). early: steady on the first half of the steps only (unless Last "
                "refined step is set): nearly as many concepts rescued as steady, less grain, faster. "
                "steady: balanced, and each update keeps the latent's overall size "
                "(the noise level the model removes), which leaves less grain. balanced: the losses are means "
                "over concept pairs and concepts, beyond 10 steps each step's push shrinks (50 steps push about "
                "twice as far as 10, not five times) and the update is smoothed at the attention maps' scale. "
                "v1: the paper's sums at every step, as before; infotexts without a step rule were made with it.",
            infotext="step rule", write=_write_step_rule, read=_read_step_rule, paste=step_rule_in,
            xyz=Axis("[A-STAR] Step rule", str)),
    # attribute binding (engine/binding.py): each modifier's map onto its concept's last word, off the others'
    # off for every method for now (measured: quality/README.md); a method-dependent default is a by_method
    Setting("bind_weight", "float", ASTAR_BIND_WEIGHT, bounds=(0.0, 100.0), position=18,
            label="Binding weight", control=Control("slider", 0.0, 2.0, 0.05),
            tip="Attribute binding: pulls each modifier's attention (\"red\" in \"red dress\") onto its concept's "
                "last word and away from the other concepts' (0 = off). The last word is the noun; braces make "
                "several words one: \"red {traffic light}\". Measured on the shapes test model only "
                "(quality/README.md).",
            infotext="bind weight", xyz=Axis("[A-STAR] Binding weight", float)),
    # the weight of Attend-and-Excite's term in Both (1 = their plain sum, as before the setting existed)
    Setting("excite_weight", "float", LEGACY_EXCITE_WEIGHT, bounds=(0.0, 100.0), position=19,
            by_method=_EXCITE_BY_METHOD, label="Excite weight",
            control=Control("slider", 0.0, 2.0, 0.05, value=_EXCITE_BY_METHOD[DEFAULT_METHOD]),  # the UI's method's
            tip="Both only: the weight of Attend-and-Excite's term beside A-STAR's two losses (default 0.25; 1 = "
                "their plain sum, Both's default before, and what an infotext without the key was made with). On "
                "the shapes test model 0.25 broke fewer images than 1 in every prompt set and fixed fewer "
                "(docs/method.md).",
            infotext="excite weight", write=_write_excite_weight, read=_read_excite_weight, paste=excite_weight_in,
            xyz=Axis("[A-STAR] Excite weight", float)),
)

SETTINGS = SettingsTable(
    ROWS,
    # the order of the infotext's entries since the first versions; rows added later follow in table order
    infotext_order=("concepts", "seg_weight", "ret_weight", "step_size", "last_step", "threshold", "method",
                    "step_rule", "iterative", "hires", "layout", "layout_strength", "layout_exclusive"),
    check=_check_enabled,
    doc="Parameters (one field per row of SETTINGS). Defaults follow method.md (A-STAR where given, "
        "Attend-and-Excite elsewhere); the dataclass defaults are A-STAR's, `create` fills the method-dependent "
        "ones (METHOD_DEFAULTS) of the chosen method.",
)
SegretParams = SETTINGS.params
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {m: SETTINGS.method_defaults(m) for m in METHODS}


def method_defaults(method: Any) -> dict[str, Any]:
    """The method-dependent defaults of `method` (see METHOD_DEFAULTS)."""
    return dict(METHOD_DEFAULTS[canonical_method(method)])


UI_FIELDS: tuple[str, ...] = SETTINGS.positional
"""Order of the values the WebUI script's ui() returns; the HTTP API's list form uses the same order (new fields
are appended, so older, shorter lists keep their meaning)."""
