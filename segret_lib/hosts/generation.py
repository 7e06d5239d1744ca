"""One generation's state across its batches and passes: warnings, the engine session, the host's current pass,
result summaries, attention-map grids and what the fallbacks decided (host-free)."""

from __future__ import annotations

from ..engine.map_history import ImageMaps
from ..engine.patching import InstancePatches
from ..engine.session import Fallbacks, SegretSession
from ..render.overlays import overlay_sheet
from ..render.visualize import session_grids
from ..settings.params import SegretParams
from ..settings.text import shorten
from .host_pass import HostPass


class Generation:
    """State of one generation (all batches, both passes)."""

    def __init__(self, params: SegretParams) -> None:
        self.params = params
        self.warnings: list[str] = []  # the whole generation's (each printed once)
        self.batch_warnings: list[str] = []  # the current batch's, for its images' infotext
        self.batch_summary = ""  # the last finished batch's result, for its images' infotext
        self.session: SegretSession | None = None
        self.sampler_patches = InstancePatches()
        self.host_pass: HostPass | None = None  # what the host set up for the current pass (closed with it)
        self.grids: list = []
        # what the sessions' fallbacks decided carries over to the next batch of the same generation
        self.fallbacks = Fallbacks(low_vram=params.low_vram)
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
        host_pass, self.host_pass = self.host_pass, None
        if host_pass is not None:
            host_pass.close()
        if self.session is not None:
            self.session.end_pass()

    def end_batch(self) -> None:
        self.end_pass()
        if self.session is not None:
            self.session.close()
            for w in self.session.warnings:
                self.warn(w)
            if self.params.show_maps and self.params.maps_view != "overlay":
                self.grids.extend(session_grids(self.session))
            if self.session.overlay_maps is not None:
                if not self.overlay_batches:
                    self.overlay_batches.append(None)
                self.overlay_batches[-1] = self.session.overlay_result()
            self.batch_summary = self.session.summary()
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
