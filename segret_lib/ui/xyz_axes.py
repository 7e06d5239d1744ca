"""A-STAR axes for the built-in X/Y/Z plot script (host-free: the host passes its scripts_data)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..settings.params import SETTINGS
from ..settings.table import SettingsTable
from .script_args import OVERRIDES_ATTR

# (label, override key, value type) of every axis, from the settings table's rows (Setting.xyz)
XYZ_AXES = tuple((label, field, kind) for label, field, kind, _ in SETTINGS.xyz_axes())
# axes with a fixed set of values get a dropdown in the X/Y/Z plot
XYZ_CHOICES = {field: (lambda c=choices: list(c)) for _, field, _, choices in SETTINGS.xyz_axes() if choices}
XYZ_MODULES = ("xyz_grid.py", "scripts.xyz_grid")


def _xyz_apply(field: str):
    def apply(p, value, _values):
        p_over = dict(getattr(p, OVERRIDES_ATTR, None) or {})
        p_over[field] = value
        setattr(p, OVERRIDES_ATTR, p_over)

    return apply


def add_xyz_axes(scripts_data: Iterable[Any], table: SettingsTable = SETTINGS) -> bool:
    """Register our axes with the X/Y/Z plot script found in scripts_data; returns whether it was found.

    Idempotent: axes already registered (by label) are not added twice.
    """
    for data in scripts_data:
        if data.script_class.__module__ in XYZ_MODULES and hasattr(data.module, "AxisOption"):
            xyz = data.module
            break
    else:
        return False
    known = {getattr(o, "label", None) for o in xyz.axis_options}
    for label, field, kind, choices in table.xyz_axes():
        if label not in known:
            extra = {"choices": lambda c=choices: list(c)} if choices else {}
            xyz.axis_options.append(xyz.AxisOption(label, kind, _xyz_apply(field), **extra))
    return True
