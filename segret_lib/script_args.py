"""Script arguments -> SegretParams: the UI's positional values or the HTTP API's dict (host-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .params import UI_FIELDS, ParamError, SegretParams

OVERRIDES_ATTR = "segret_overrides"  # dict set on p by X/Y/Z-plot axes


def params_from_args(args: Sequence[Any], overrides: dict[str, Any] | None = None) -> SegretParams:
    """Script args -> SegretParams. Accepts the UI's positional values, or one dict (HTTP API).

    Raises ParamError with a message that names the bad value.
    """
    if args and isinstance(args[0], dict):  # API: {"args": [{...}]}; the UI defaults after it are ignored
        values = dict(args[0])
        values.setdefault("enabled", True)
    elif len(args) == 0:
        values = {"enabled": False}
    else:
        if len(args) > len(UI_FIELDS):
            raise ParamError(f"A-STAR takes at most {len(UI_FIELDS)} args ({', '.join(UI_FIELDS)}), got {len(args)}")
        values = dict(zip(UI_FIELDS, args, strict=False))
    if overrides:
        values.update(overrides)
    return SegretParams.create(**values)


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
