"""Which host runs the extension, chosen at run time: Stable Diffusion WebUI Forge (its `backend` and
`modules_forge` packages are importable) or the AUTOMATIC1111 WebUI. A new host is one more adapter module
defining SegretScript and add_xyz_axes, and one more line here."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def is_forge() -> bool:
    """Forge keeps the A1111 `modules` package and adds `modules_forge` and its own `backend`."""
    return all(importlib.util.find_spec(name) is not None for name in ("modules_forge", "backend"))


def adapter() -> ModuleType:
    """The host adapter module for this process (hosts.forge or hosts.a1111)."""
    return importlib.import_module("segret_lib.hosts.forge" if is_forge() else "segret_lib.hosts.a1111")
