"""Script arguments -> SegretParams: the UI's positional values or the HTTP API's dict (host-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..settings.params import (
    FALSE_WORDS,
    METHOD_DEFAULTS,
    TRUE_WORDS,
    UI_FIELDS,
    ParamError,
    SegretParams,
    canonical_method,
    read_switch,
)

OVERRIDES_ATTR = "segret_overrides"  # dict set on p by X/Y/Z-plot axes
LAYOUT_SWITCH = "layout_on"  # X/Y/Z override key: "On" keeps the layout, "Off" drops its boxes


def params_from_args(args: Sequence[Any], overrides: dict[str, Any] | None = None) -> SegretParams:
    """Script args -> SegretParams. Accepts the UI's positional values, or one dict (HTTP API).

    Method defaults (params.METHOD_DEFAULTS): in the dict, only the keys given are explicit, the others take the
    method's defaults. The positional values are the UI's, every one explicit (a list too short to hold the newer
    settings gets their defaults: the step rule "auto", the method's); an X/Y/Z override of the method
    switches them as the UI does (switch_method). The override LAYOUT_SWITCH "Off" drops the layout's boxes.
    Raises ParamError with a message that names the bad value.
    """
    overrides = dict(overrides) if overrides else None
    layout_on = overrides.pop(LAYOUT_SWITCH, None) if overrides else None
    if args and isinstance(args[0], dict):  # API: {"args": [{...}]}; the UI defaults after it are ignored
        values = dict(args[0])
        values.setdefault("enabled", True)
        if overrides:
            values.update(overrides)
    elif len(args) == 0:
        values = {"enabled": False}
    else:
        if len(args) > len(UI_FIELDS):
            raise ParamError(f"A-STAR takes at most {len(UI_FIELDS)} args ({', '.join(UI_FIELDS)}), got {len(args)}")
        values = dict(zip(UI_FIELDS, args, strict=False))
        if overrides:
            overrides = dict(overrides)
            if "method" in overrides:
                values = switch_method(values, values.get("method", "astar"), overrides.pop("method"))
            values.update(overrides)
    if layout_on is not None and not layout_switch_value(layout_on):
        values["layout"] = ""
    return SegretParams.create(**values)


def layout_switch_value(value: Any) -> bool:
    """The X/Y/Z layout axis' value ("On"/"Off", also true/false, 1/0) -> whether the layout is used."""
    try:
        return read_switch(value, (*TRUE_WORDS, "layout"), (*FALSE_WORDS, "none"))
    except ValueError:
        raise ParamError(f"the layout axis takes On or Off, got {value!r}") from None


def switch_method(values: dict[str, Any], old: Any, new: Any) -> dict[str, Any]:
    """values with the method switched from `old` to `new`, the UI's rule: a method-dependent setting that still
    holds the old method's default is explicit for nobody and takes the new method's default; one that differs
    from it was set by the user and is kept. Returns a new dict."""
    old_name, new_name = canonical_method(old), canonical_method(new)
    out = dict(values)
    out["method"] = new_name
    for name, old_default in METHOD_DEFAULTS[old_name].items():
        if name in out and _same(out[name], old_default):
            out[name] = METHOD_DEFAULTS[new_name][name]
    return out


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        try:
            return read_switch(value) == default
        except ValueError:
            return False
    if isinstance(default, float):
        try:
            return float(value) == default
        except (TypeError, ValueError):
            return False
    return value == default


def looks_enabled(args: Sequence[Any]) -> bool:
    """Whether args that failed validation were meant to switch A-STAR on (then the failure is reported)."""
    if args and isinstance(args[0], dict):
        return str(args[0].get("enabled", True)).lower() not in ("false", "0", "no", "off")
    return bool(args and args[0])


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
