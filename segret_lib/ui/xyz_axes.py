"""A-STAR axes for the built-in X/Y/Z plot script (host-free: the host passes its scripts_data)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..settings.params import METHOD_LABELS
from ..settings.params import STEP_RULE_CHOICES as CHOICES
from .script_args import LAYOUT_SWITCH, OVERRIDES_ATTR

XYZ_AXES = (
    ("[A-STAR] Segregation weight", "seg_weight", float),
    ("[A-STAR] Retention weight", "ret_weight", float),
    ("[A-STAR] Step size", "step_size", float),
    ("[A-STAR] Last refined step", "last_step", int),
    ("[A-STAR] Method", "method", str),
    ("[A-STAR] Layout", LAYOUT_SWITCH, str),
    ("[A-STAR] Layout strength", "layout_strength", float),
    ("[A-STAR] Step rule", "step_rule", str),
)
# axes with a fixed set of values get a dropdown in the X/Y/Z plot
XYZ_CHOICES = {"method": lambda: list(METHOD_LABELS.values()), LAYOUT_SWITCH: lambda: ["On", "Off"],
               "step_rule": lambda: list(CHOICES)}
XYZ_MODULES = ("xyz_grid.py", "scripts.xyz_grid")


def _xyz_apply(field: str):
    def apply(p, value, _values):
        p_over = dict(getattr(p, OVERRIDES_ATTR, None) or {})
        p_over[field] = value
        setattr(p, OVERRIDES_ATTR, p_over)

    return apply


def add_xyz_axes(scripts_data: Iterable[Any]) -> bool:
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
    for label, field, kind in XYZ_AXES:
        if label not in known:
            extra = {"choices": XYZ_CHOICES[field]} if field in XYZ_CHOICES else {}
            xyz.axis_options.append(xyz.AxisOption(label, kind, _xyz_apply(field), **extra))
    return True
