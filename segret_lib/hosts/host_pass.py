"""What a host sets up for one sampling pass (host-free): the UNet runners the session calls at each refined step,
and close(), which undoes the setup at the end of the pass."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..engine.session import RunUnet, SegretSession

log = logging.getLogger("segret")


class HostPass:
    """One sampling pass as a host set it up; Host.begin_pass returns it and the generation closes it."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    def on_close(self, undo: Callable[[], object]) -> None:
        """Run `undo` when the pass is closed (newest first)."""
        self._undo.append(undo)

    def runners(self, denoiser, session: SegretSession, cond, uncond, image_cond) -> tuple[RunUnet, RunUnet]:
        """(conditional-only runner, CFG-layout runner) for one model call of the sampler (see session.RunUnet)."""
        raise NotImplementedError

    def close(self) -> None:
        """Undo the pass's setup, newest first; each undo runs once, also when an earlier one failed. Idempotent."""
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:  # a host's undo must not keep the others from running
                log.exception("A-STAR: undoing a host's pass setup failed")
