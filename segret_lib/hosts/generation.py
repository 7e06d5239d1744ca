"""One generation's state across its batches and passes: warnings, the engine session, result summaries,
attention-map grids and what the out-of-memory fallbacks decided (host-free)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..engine.map_history import ImageMaps
from ..engine.patching import InstancePatches
from ..engine.session import SegretSession
from ..render.overlays import overlay_sheet
from ..render.visualize import session_grids
from ..settings.params import SegretParams
from ..settings.text import shorten

log = logging.getLogger("segret")


class Generation:
    """State of one generation (all batches, both passes)."""

    def __init__(self, params: SegretParams) -> None:
        self.params = params
        self.warnings: list[str] = []  # the whole generation's (each printed once)
        self.batch_warnings: list[str] = []  # the current batch's, for its images' infotext
        self.batch_summary = ""  # the last finished batch's result, for its images' infotext
        self.session: SegretSession | None = None
        self.sampler_patches = InstancePatches()
        self.pass_cleanups: list[Callable[[], object]] = []  # what a host set up for the current pass, undone
        self.host_state: dict[str, object] = {}  # what a host keeps for the current pass (cleared with it)
        self.grids: list = []
        self.summaries: list[str] = []
        # what out-of-memory fallbacks decided carries over to the next batch of the same generation
        self.chunk_size = 0
        self.low_vram = params.low_vram
        self.out_of_memory = False  # an earlier batch ran out of memory even with every fallback
        self.layout = "cond"  # batch layout of the refinement call; "cfg" once the cond-only call failed
        # per batch, each image's aggregated maps for the overlays (None: that batch was not refined)
        self.overlay_batches: list[list[ImageMaps | None] | None] = []

    def warn(self, message: str) -> None:
        """Record a warning for this batch's and the generation's infotext and print it once; a long quoted
        value in it is cut to a readable length (text.shorten)."""
        message = shorten(message)
        if message not in self.batch_warnings:
            self.batch_warnings.append(message)
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"[A-STAR] {message}")

    def begin_batch(self) -> None:
        """A new batch (batch count > 1): its images' infotext describes it alone."""
        self.batch_warnings = []
        self.batch_summary = ""
        self.overlay_batches.append(None)

    def end_pass(self) -> None:
        self.sampler_patches.restore()
        while self.pass_cleanups:  # newest first; each runs once, also when an earlier one failed
            try:
                self.pass_cleanups.pop()()
            except Exception:  # a host's undo must not keep the others from running
                log.exception("A-STAR: undoing a host's pass setup failed")
        self.host_state.clear()
        if self.session is not None:
            self.session.end_pass()

    def end_batch(self) -> None:
        self.end_pass()
        if self.session is not None:
            self.session.close()
            self.chunk_size, self.low_vram = self.session.chunk_size, self.session.low_vram
            self.layout = self.session.layout
            self.out_of_memory = self.out_of_memory or self.session.out_of_memory
            for w in self.session.warnings:
                self.warn(w)
            if self.params.show_maps and self.params.maps_view != "overlay":
                self.grids.extend(session_grids(self.session))
            if self.session.overlay_maps is not None:
                if not self.overlay_batches:
                    self.overlay_batches.append(None)
                self.overlay_batches[-1] = self.session.overlay_result()
            summary = self.session.summary()
            self.batch_summary = summary
            if summary:
                self.summaries.append(summary)
            self.session = None

    def close(self) -> None:
        self.end_batch()

    def overlay_images(self, images: list, batch_size: int) -> list[tuple[int, object]]:
        """(index in `images`, overlay sheet) of the generated images (`images` in order, batch by batch)."""
        out = []
        for n, batch in enumerate(self.overlay_batches):
            for i, maps in enumerate(batch or []):
                k = n * max(batch_size, 1) + i
                if maps is not None and k < len(images):
                    out.append((k, overlay_sheet(images[k], maps, self.params.layout)))
        return out
