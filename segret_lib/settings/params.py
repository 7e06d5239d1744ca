"""All user-visible settings (A-STAR and Attend-and-Excite), validated in one place, with infotext round-trip."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

MAX_CONCEPTS = 8
INFOTEXT_PREFIX = "A-STAR"
THRESHOLD_MODES = ("fraction", "otsu")
# What "Show attention maps" adds: each concept's map over the image (+ all concepts in one picture), the
# before/after grid at four steps, or both
MAPS_VIEWS = ("overlay", "grid", "both")
TOKEN_COMBINE_MODES = ("mean", "max", "sum")
# Step rules (engine/step_rule.py defines what each does): "auto" is the method's own (METHOD_DEFAULTS), the
# UI's default, so a padded API list gets it.
STEP_RULES = ("v1", "balanced")
DEFAULT_RULE = "balanced"
AUTO = "auto"
STEP_RULE_CHOICES: tuple[str, ...] = (AUTO, *STEP_RULES)
_EXPERIMENTAL_RULES: set[str] = set()  # registered by the benchmark (engine.step_rule.register), never in the UI


def allow_step_rule(name: str) -> None:
    """Accept one more rule name (a benchmark's candidate rule)."""
    _EXPERIMENTAL_RULES.add(name)

# Methods: A-STAR's segregation + retention losses, Attend-and-Excite's (Chefer et al. 2023) "most neglected
# concept" loss, or both losses summed. Canonical names, and the labels the UI, the infotext and X/Y/Z show.
METHODS = ("astar", "aae", "both")
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

# Settings whose default depends on the method. The HTTP API's dict fills the keys it does not give from the
# chosen method's column; the UI switches a control to the new method's default only while it still holds the
# previous method's default (script_args.switch_method). last_step 0 and iterative_steps () are resolved per
# pass against its step count (schedule.last_refined_step / iterative_schedule).
# Step size: Attend-and-Excite keeps its published 20. Under v1, A-STAR and Both took 10, calibrated on the
# neglect benchmark (docs/method.md "Step size under v1": at 20 the update broke about as many images as it
# fixed and added grain). Step rule (step_rule.py): A-STAR and Both use "balanced" (losses per pair / per
# concept, a step budget per pass, a low-passed gradient), whose step size is calibrated on the benchmark matrix
# (quality/README.md). Attend-and-Excite keeps its published schedule ("v1", 20).
ASTAR_STEP_SIZE = 30.0
# Attribute binding (engine/binding.py): the weight of L_bind; 0 = off (and old infotexts, which lack it)
ASTAR_BIND_WEIGHT = 0.0
V1_STEP_SIZE = 10.0  # A-STAR's default under the v1 rule
AAE_STEP_SIZE = 20.0
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "astar": {"iterative": False, "iterative_steps": (0, 10, 20), "iterative_target": (0.2,),
              "step_size": ASTAR_STEP_SIZE, "step_rule": DEFAULT_RULE, "bind_weight": ASTAR_BIND_WEIGHT},
    "aae": {"iterative": True, "iterative_steps": (), "iterative_target": AAE_TARGETS, "step_size": AAE_STEP_SIZE,
            "step_rule": "v1", "bind_weight": 0.0},
    "both": {"iterative": False, "iterative_steps": (0, 10, 20), "iterative_target": (0.2,),
             "step_size": ASTAR_STEP_SIZE, "step_rule": DEFAULT_RULE, "bind_weight": ASTAR_BIND_WEIGHT},
}


class ParamError(ValueError):
    """A setting is out of range or malformed; the message names the setting and the allowed range."""


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


def method_defaults(method: Any) -> dict[str, Any]:
    """The method-dependent defaults of `method` (see METHOD_DEFAULTS)."""
    return dict(METHOD_DEFAULTS[canonical_method(method)])


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


@dataclass(frozen=True)
class SegretParams:
    """Parameters. Defaults follow method.md (A-STAR where given, Attend-and-Excite elsewhere); the dataclass
    defaults are A-STAR's, `create` fills the method-dependent ones (METHOD_DEFAULTS) of the chosen method."""

    enabled: bool = False
    concepts: tuple[str, ...] = ()
    seg_weight: float = 1.0  # w_seg in Eq. 4
    ret_weight: float = 1.0  # w_ret in Eq. 4
    step_size: float = ASTAR_STEP_SIZE  # scale_factor of alpha_t = scale * sqrt(linspace(1, 0.5, T)); per method
    last_step: int = 0  # last refined sampling step (1-based); 0 = the method's: A-STAR every step, A&E the first half
    threshold_mode: str = "fraction"  # retention mask: A >= threshold * max(A), or Otsu
    threshold: float = 0.5
    iterative: bool = False  # A&E-style repeat-until-target at chosen steps
    iterative_steps: tuple[int, ...] = (0, 10, 20)  # 0-based step indices; () = A&E's 0, 10, 20 of 50, scaled
    iterative_target: tuple[float, ...] = (0.2,)  # loss to reach: one value, or one per iterative step
    iterative_max: int = 20  # cap on updates at one step
    softmax_temperature: float = 100.0  # scale before the token softmax (A&E)
    smooth_kernel: int = 3
    smooth_sigma: float = 0.5
    token_combine: str = "mean"  # how a multi-token concept's maps are combined
    hires: bool = False  # also refine the hires-fix second pass
    show_maps: bool = False  # add an attention-map grid to the gallery
    early_exit: bool = True  # stop the UNet after the last captured layer during refinement
    low_vram: bool = False  # checkpoint the UNet's blocks during refinement: less VRAM, slower
    method: str = "astar"  # "astar", "aae" (Attend-and-Excite) or "both" (the two losses summed)
    # layout (paper section 5): ((concept, (x0, y0, x1, y1)), ...), fractions of the image; see layout.py
    layout: tuple = ()
    layout_strength: float = 1.0  # retention weight of the boxed concepts (their box is the retention target)
    layout_exclusive: bool = False  # also push each concept's attention out of the other concepts' boxes
    maps_view: str = "overlay"  # what show_maps adds: MAPS_VIEWS
    step_rule: str = AUTO  # how the step size becomes an update (step_rule.py); "auto": the method's
    bind_weight: float = ASTAR_BIND_WEIGHT  # attribute binding (engine/binding.py): modifier maps onto their noun's

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", canonical_method(self.method))
        if isinstance(self.step_rule, str):  # one spelling, so the infotext and the v1 test see the same name
            rule = self.step_rule.strip().lower()
            object.__setattr__(self, "step_rule", METHOD_DEFAULTS[self.method]["step_rule"] if rule == AUTO else rule)
        object.__setattr__(self, "layout", _parse_layout(self.layout))
        if not isinstance(self.iterative_target, tuple):
            object.__setattr__(self, "iterative_target", _parse_targets(self.iterative_target))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ParamError naming the first bad setting."""
        for name in ("seg_weight", "ret_weight", "step_size", "threshold", "softmax_temperature", "smooth_sigma",
                     "bind_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParamError(f"{name} must be a finite number, got {value!r}")
        if not self.iterative_target:
            raise ParamError("iterative_target needs at least one value")
        for value in self.iterative_target:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParamError(f"iterative_target must be finite numbers, got {self.iterative_target!r}")
            _check_range("iterative_target", value, 0.0, 100.0)
        _check_range("seg_weight", self.seg_weight, 0.0, 100.0)
        _check_range("ret_weight", self.ret_weight, 0.0, 100.0)
        _check_range("bind_weight", self.bind_weight, 0.0, 100.0)
        _check_range("step_size", self.step_size, 0.0, 1000.0)
        _check_range("last_step", self.last_step, 0, 10000)
        _check_range("iterative_max", self.iterative_max, 1, 200)
        _check_range("softmax_temperature", self.softmax_temperature, 1e-3, 1e4)
        _check_range("smooth_sigma", self.smooth_sigma, 0.0, 10.0)
        if not isinstance(self.layout_strength, (int, float)) or not math.isfinite(self.layout_strength):
            raise ParamError(f"layout_strength must be a finite number, got {self.layout_strength!r}")
        _check_range("layout_strength", self.layout_strength, 0.0, 100.0)
        if self.step_rule not in STEP_RULES and self.step_rule not in _EXPERIMENTAL_RULES:
            raise ParamError(f"step_rule must be one of {STEP_RULES}, got {self.step_rule!r}")
        if self.maps_view not in MAPS_VIEWS:
            raise ParamError(f"maps_view must be one of {MAPS_VIEWS}, got {self.maps_view!r}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ParamError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        if self.threshold_mode == "fraction" and not 0.0 < self.threshold < 1.0:
            raise ParamError(f"threshold must be in (0, 1) as a fraction of the map's maximum, got {self.threshold}")
        if self.token_combine not in TOKEN_COMBINE_MODES:
            raise ParamError(f"token_combine must be one of {TOKEN_COMBINE_MODES}, got {self.token_combine!r}")
        if self.smooth_kernel < 1 or self.smooth_kernel % 2 == 0 or self.smooth_kernel > 15:
            raise ParamError(f"smooth_kernel must be an odd integer in 1..15, got {self.smooth_kernel}")
        if any(s < 0 for s in self.iterative_steps):
            raise ParamError(f"iterative_steps must be >= 0, got {self.iterative_steps}")
        if self.enabled:
            if not self.concepts:
                raise ParamError("no concept words given: type the words to keep apart, e.g. 'cat, dog'")
            if len(self.concepts) > MAX_CONCEPTS:
                raise ParamError(f"at most {MAX_CONCEPTS} concepts, got {len(self.concepts)}")
            if (self.method == "astar" and self.seg_weight == 0 and self.ret_weight == 0 and not self.bind_weight
                    and not self.layout):
                raise ParamError("both loss weights are 0: nothing to optimise")
            from .layout_boxes import LayoutError, check_names

            try:
                check_names(self.layout, self.concepts)
            except LayoutError as e:
                raise ParamError(str(e)) from None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, **values: Any) -> SegretParams:
        """Build from loosely typed values (UI strings, JSON numbers), coercing each field to its type.

        Method-dependent settings not given take the chosen method's defaults (METHOD_DEFAULTS)."""
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ParamError(f"unknown A-STAR setting(s): {', '.join(unknown)}; known: {', '.join(names)}")
        coerced = {k: _coerce(names[k], v) for k, v in values.items()}
        for name, default in method_defaults(coerced.get("method", "astar")).items():
            coerced.setdefault(name, default)
        return cls(**coerced)

    def replace(self, **changes: Any) -> SegretParams:
        return self.create(**{**dataclasses.asdict(self), **changes})

    # ------------------------------------------------------------------ infotext
    def to_infotext(self) -> dict[str, str]:
        """Infotext entries (written to p.extra_generation_params)."""
        out = {
            f"{INFOTEXT_PREFIX} concepts": ", ".join(self.concepts),
            f"{INFOTEXT_PREFIX} seg weight": _fmt(self.seg_weight),
            f"{INFOTEXT_PREFIX} ret weight": _fmt(self.ret_weight),
            f"{INFOTEXT_PREFIX} step size": _fmt(self.step_size),
            f"{INFOTEXT_PREFIX} last step": str(self.last_step),
            f"{INFOTEXT_PREFIX} threshold": "otsu" if self.threshold_mode == "otsu" else _fmt(self.threshold),
        }
        if self.method != "astar":
            out[f"{INFOTEXT_PREFIX} method"] = METHOD_LABELS[self.method]
        if self.bind_weight:  # absent: 0, as in the versions before binding
            out[f"{INFOTEXT_PREFIX} bind weight"] = _fmt(self.bind_weight)
        if self.step_rule != "v1":  # absent: v1, the only rule of the versions before
            out[f"{INFOTEXT_PREFIX} step rule"] = self.step_rule
        if self.iterative:
            steps = " ".join(map(str, self.iterative_steps)) if self.iterative_steps else "auto"
            out[f"{INFOTEXT_PREFIX} iterative"] = (
                f"steps {steps}; target {' '.join(_fmt(t) for t in self.iterative_target)}; "
                f"max {self.iterative_max}"
            )
        elif METHOD_DEFAULTS[self.method]["iterative"]:
            out[f"{INFOTEXT_PREFIX} iterative"] = "off"  # the method's default is on: say it was turned off
        if self.hires:
            out[f"{INFOTEXT_PREFIX} hires"] = "True"
        if self.layout:
            from .layout_boxes import layout_text

            out[f"{INFOTEXT_PREFIX} layout"] = layout_text(self.layout)
            out[f"{INFOTEXT_PREFIX} layout strength"] = _fmt(self.layout_strength)
            if self.layout_exclusive:
                out[f"{INFOTEXT_PREFIX} layout exclusive"] = "True"
        return out

    @classmethod
    def from_infotext(cls, info: Mapping[str, Any]) -> SegretParams:
        """Inverse of to_infotext; absent keys keep their (method's) defaults, and enabled follows 'concepts'."""
        key = f"{INFOTEXT_PREFIX} "
        values: dict[str, Any] = {}
        if key + "concepts" in info:
            values["concepts"] = info[key + "concepts"]
            values["enabled"] = True
        if key + "method" in info:
            values["method"] = info[key + "method"]
        rule = step_rule_in(info)
        if rule is not None:
            values["step_rule"] = rule
        if key + "concepts" in info:  # written before binding (or with it off): no binding
            values["bind_weight"] = info.get(key + "bind weight", 0.0)
        for name, field_name in (("seg weight", "seg_weight"), ("ret weight", "ret_weight"),
                                 ("step size", "step_size"), ("last step", "last_step")):
            if key + name in info:
                values[field_name] = info[key + name]
        if key + "threshold" in info:
            raw = str(info[key + "threshold"]).strip().lower()
            if raw == "otsu":
                values["threshold_mode"] = "otsu"
            else:
                values["threshold_mode"] = "fraction"
                values["threshold"] = raw
        if str(info.get(key + "iterative", "")).strip().lower() == "off":
            values["iterative"] = False
        elif key + "iterative" in info:
            values["iterative"] = True
            for part in str(info[key + "iterative"]).split(";"):
                name, _, val = part.strip().partition(" ")
                if name == "steps":
                    values["iterative_steps"] = "" if val.strip() == "auto" else val.replace(" ", ",")
                elif name == "target":
                    values["iterative_target"] = val
                elif name == "max":
                    values["iterative_max"] = val
        if key + "hires" in info:
            values["hires"] = str(info[key + "hires"]).lower() == "true"
        if key + "layout" in info:
            values["layout"] = info[key + "layout"]
            if key + "layout strength" in info:
                values["layout_strength"] = info[key + "layout strength"]
            values["layout_exclusive"] = str(info.get(key + "layout exclusive", "")).lower() == "true"
        return cls.create(**values)


def _parse_layout(value: Any) -> tuple:
    from .layout_boxes import LayoutError, parse_layout

    try:
        return parse_layout(value)
    except LayoutError as e:
        raise ParamError(str(e)) from None


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ParamError(f"{name} must be in [{lo}, {hi}], got {value}")


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def read_switch(value: Any, true_words: tuple[str, ...] = TRUE_WORDS,
                false_words: tuple[str, ...] = FALSE_WORDS) -> bool:
    """A yes/no setting given as a bool or a word (case and spaces ignored); ValueError for anything else."""
    low = str(value).strip().lower()
    if low in true_words:
        return True
    if low in false_words:
        return False
    raise ValueError(value)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn UI/JSON values into the field's type with a clear error."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            return read_switch(value) if isinstance(value, str) else bool(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            as_float = float(value)
            if not math.isfinite(as_float) or as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if f.name == "method":
            return canonical_method(value)
        if f.name == "layout":
            return _parse_layout(value)
        if kind == "str":
            return str(value).strip().lower()
        if f.name == "concepts":
            return split_concepts(value)
        if f.name == "iterative_steps":
            return _parse_steps(value)
        if f.name == "iterative_target":
            return _parse_targets(value)
    except ParamError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamError(f"{f.name}: cannot read {value!r} as {kind}") from e
    return value


def step_rule_in(info: Mapping[str, Any]) -> str | None:
    """The step rule an infotext was made with: the one it names, v1 for an A-STAR infotext without one
    (written before the rule existed), None for other infotexts."""
    key = f"{INFOTEXT_PREFIX} "
    if key + "step rule" in info:
        return str(info[key + "step rule"]).strip().lower()
    return "v1" if key + "concepts" in info else None


DEFAULTS = SegretParams()
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SegretParams))
UI_FIELDS: tuple[str, ...] = (
    "enabled", "concepts", "seg_weight", "ret_weight", "step_size", "last_step", "threshold_mode", "threshold",
    "iterative", "show_maps", "hires", "low_vram", "method", "layout", "layout_strength", "layout_exclusive",
    "maps_view", "step_rule",
)
"""Order of the values the WebUI script's ui() returns; the HTTP API's list form uses the same order (new fields
are appended, so older, shorter lists keep their meaning)."""
