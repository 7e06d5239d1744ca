"""Script arguments -> SegretParams: the UI's positional values or the HTTP API's dict (host-free), both derived
from the settings table (settings/params.py SETTINGS: the positional order, the API dict's keys, the method's
defaults)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..settings.params import (  # noqa: F401 (threshold_from, threshold_mode_from: re-exported)
    DEFAULT_METHOD,
    FALSE_WORDS,
    LAYOUT_SWITCH,
    SETTINGS,
    TRUE_WORDS,
    ParamError,
    SegretParams,
    canonical_method,
    read_switch,
    threshold_from,
    threshold_mode_from,
)
from ..settings.table import SettingsTable

OVERRIDES_ATTR = "segret_overrides"  # dict set on p by X/Y/Z-plot axes


def params_from_args(args: Sequence[Any], overrides: dict[str, Any] | None = None,
                     table: SettingsTable = SETTINGS) -> SegretParams:
    """Script args -> SegretParams. Accepts the UI's positional values, or one dict (HTTP API).

    Method defaults (params.METHOD_DEFAULTS): in the dict, only the keys given are explicit, the others take the
    method's defaults, and a dict without a method gets DEFAULT_METHOD (Both). The positional values are the UI's,
    every one explicit (the WebUI pads a list too short to hold the newer settings with the UI's defaults: the
    method Both, the step rule "auto", the method's); an X/Y/Z override of the method switches them as the UI
    does (switch_method). The override LAYOUT_SWITCH "Off" drops the layout's boxes.
    Raises ParamError with a message that names the bad value. `table`: the settings (SETTINGS).
    """
    fields = table.positional
    overrides = dict(overrides) if overrides else None
    layout_on = overrides.pop(LAYOUT_SWITCH, None) if overrides else None
    if args and isinstance(args[0], dict):  # API: {"args": [{...}]}; the UI defaults after it are ignored
        values = dict(args[0])
        values.setdefault("enabled", True)
        values.setdefault("method", DEFAULT_METHOD)
        if overrides:
            values.update(overrides)
    elif len(args) == 0:
        values = {"enabled": False}
    else:
        if len(args) > len(fields):
            raise ParamError(f"A-STAR takes at most {len(fields)} args ({', '.join(fields)}), got {len(args)}")
        values = dict(zip(fields, args, strict=False))
        if overrides:
            overrides = dict(overrides)
            if "method" in overrides:
                values = switch_method(values, values.get("method", "astar"), overrides.pop("method"), table)
            values.update(overrides)
    if layout_on is not None and not layout_switch_value(layout_on):
        values["layout"] = ""
    return table.params.create(**values)


def layout_switch_value(value: Any) -> bool:
    """The X/Y/Z layout axis' value ("On"/"Off", also true/false, 1/0) -> whether the layout is used."""
    try:
        return read_switch(value, (*TRUE_WORDS, "layout"), (*FALSE_WORDS, "none"))
    except ValueError:
        raise ParamError(f"the layout axis takes On or Off, got {value!r}") from None


def switch_method(values: dict[str, Any], old: Any, new: Any, table: SettingsTable = SETTINGS) -> dict[str, Any]:
    """values with the method switched from `old` to `new`, the UI's rule: a method-dependent setting that still
    holds the old method's default is explicit for nobody and takes the new method's default; one that differs
    from it was set by the user and is kept. Returns a new dict."""
    old_name, new_name = canonical_method(old), canonical_method(new)
    out = dict(values)
    out["method"] = new_name
    old_defaults, new_defaults = table.method_defaults(old_name), table.method_defaults(new_name)
    for name, old_default in old_defaults.items():
        if name in out and _same(out[name], old_default):
            out[name] = new_defaults[name]
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
