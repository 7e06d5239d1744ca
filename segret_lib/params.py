"""All user-visible A-STAR settings, validated in one place, with infotext round-trip."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

MAX_CONCEPTS = 8
INFOTEXT_PREFIX = "A-STAR"
THRESHOLD_MODES = ("fraction", "otsu")
TOKEN_COMBINE_MODES = ("mean", "max", "sum")


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
    """A-STAR parameters. Defaults follow method.md (A-STAR where given, Attend-and-Excite elsewhere)."""

    enabled: bool = False
    concepts: tuple[str, ...] = ()
    seg_weight: float = 1.0  # w_seg in Eq. 4
    ret_weight: float = 1.0  # w_ret in Eq. 4
    step_size: float = 20.0  # scale_factor of alpha_t = scale * sqrt(linspace(1, 0.5, T))
    last_step: int = 0  # last refined sampling step (1-based); 0 = every step
    threshold_mode: str = "fraction"  # retention mask: A >= threshold * max(A), or Otsu
    threshold: float = 0.5
    iterative: bool = False  # A&E-style repeat-until-target at chosen steps
    iterative_steps: tuple[int, ...] = (0, 10, 20)  # 0-based step indices
    iterative_target: float = 0.2  # total loss to reach
    iterative_max: int = 20  # cap on updates at one step
    softmax_temperature: float = 100.0  # scale before the token softmax (A&E)
    smooth_kernel: int = 3
    smooth_sigma: float = 0.5
    token_combine: str = "mean"  # how a multi-token concept's maps are combined
    hires: bool = False  # also refine the hires-fix second pass
    show_maps: bool = False  # add an attention-map grid to the gallery
    early_exit: bool = True  # stop the UNet after the last captured layer during refinement
    low_vram: bool = False  # checkpoint the UNet's blocks during refinement: less VRAM, slower

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ParamError naming the first bad setting."""
        for name in ("seg_weight", "ret_weight", "step_size", "threshold", "iterative_target",
                     "softmax_temperature", "smooth_sigma"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParamError(f"{name} must be a finite number, got {value!r}")
        _check_range("seg_weight", self.seg_weight, 0.0, 100.0)
        _check_range("ret_weight", self.ret_weight, 0.0, 100.0)
        _check_range("step_size", self.step_size, 0.0, 1000.0)
        _check_range("last_step", self.last_step, 0, 10000)
        _check_range("iterative_target", self.iterative_target, 0.0, 100.0)
        _check_range("iterative_max", self.iterative_max, 1, 200)
        _check_range("softmax_temperature", self.softmax_temperature, 1e-3, 1e4)
        _check_range("smooth_sigma", self.smooth_sigma, 0.0, 10.0)
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
            if self.seg_weight == 0 and self.ret_weight == 0:
                raise ParamError("both loss weights are 0: nothing to optimise")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, **values: Any) -> SegretParams:
        """Build from loosely typed values (UI strings, JSON numbers), coercing each field to its type."""
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ParamError(f"unknown A-STAR setting(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return cls(**{k: _coerce(names[k], v) for k, v in values.items()})

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
        if self.iterative:
            out[f"{INFOTEXT_PREFIX} iterative"] = (
                f"steps {' '.join(map(str, self.iterative_steps))}; target {_fmt(self.iterative_target)}; "
                f"max {self.iterative_max}"
            )
        if self.hires:
            out[f"{INFOTEXT_PREFIX} hires"] = "True"
        return out

    @classmethod
    def from_infotext(cls, info: Mapping[str, Any]) -> SegretParams:
        """Inverse of to_infotext; absent keys keep their defaults, and enabled follows 'concepts'."""
        key = f"{INFOTEXT_PREFIX} "
        values: dict[str, Any] = {}
        if key + "concepts" in info:
            values["concepts"] = info[key + "concepts"]
            values["enabled"] = True
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
        if key + "iterative" in info:
            values["iterative"] = True
            for part in str(info[key + "iterative"]).split(";"):
                name, _, val = part.strip().partition(" ")
                if name == "steps":
                    values["iterative_steps"] = val.replace(" ", ",")
                elif name == "target":
                    values["iterative_target"] = val
                elif name == "max":
                    values["iterative_max"] = val
        if key + "hires" in info:
            values["hires"] = str(info[key + "hires"]).lower() == "true"
        return cls.create(**values)


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ParamError(f"{name} must be in [{lo}, {hi}], got {value}")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn UI/JSON values into the field's type with a clear error."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("true", "1", "yes", "on")
            return bool(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            as_float = float(value)
            if not math.isfinite(as_float) or as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if kind == "str":
            return str(value).strip().lower()
        if f.name == "concepts":
            return split_concepts(value)
        if f.name == "iterative_steps":
            return _parse_steps(value)
    except ParamError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamError(f"{f.name}: cannot read {value!r} as {kind}") from e
    return value


DEFAULTS = SegretParams()
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SegretParams))
UI_FIELDS: tuple[str, ...] = (
    "enabled", "concepts", "seg_weight", "ret_weight", "step_size", "last_step", "threshold_mode", "threshold",
    "iterative", "show_maps", "hires", "low_vram",
)
"""Order of the values the WebUI script's ui() returns; the HTTP API's list form uses the same order."""
