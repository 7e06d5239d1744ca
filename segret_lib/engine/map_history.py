"""Each image's concept maps accumulated over the refined steps of a pass, for the overlays (kept on the
device until the pass ends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class ImageMaps:
    """One image's concept maps averaged over the refined steps of its first pass (on the CPU)."""

    words: list[str]
    maps: torch.Tensor  # [C, h, w]
    steps: int
    # attribute binding (binding.py): per concept with modifiers, its head noun's map and then each modifier's
    # (labels "circle", "red > circle"), averaged the same way; None when binding is off
    bound: ImageMaps | None = None


class MapAccumulator:
    """Running sums of each image's concept maps over the refined steps. The sums stay on the maps' device
    (C x h x w floats per image) until `result` copies their means to the CPU once, at the end of the pass."""

    def __init__(self, n_images: int) -> None:
        self.sums: list[torch.Tensor | None] = [None] * n_images
        self.counts: list[torch.Tensor | None] = [None] * n_images  # finite maps added, on the device
        self.words: list[list[str]] = [[] for _ in range(n_images)]

    def add(self, maps: Sequence[torch.Tensor], rows: Sequence[int], words: Sequence[Sequence[str]]) -> None:
        """Add each image's maps unless they hold a non-finite value (decided on the device: nothing is read
        back during sampling)."""
        for m, row, w in zip(maps, rows, words, strict=False):
            if m.numel() == 0:
                continue
            finite = torch.isfinite(m).all()
            m = torch.where(finite, m.detach().float(), 0.0)
            if self.sums[row] is None or list(w) != self.words[row] or self.sums[row].shape != m.shape:
                self.sums[row], self.counts[row], self.words[row] = m, finite.float(), list(w)  # concepts changed
            else:
                self.sums[row] += m
                self.counts[row] += finite

    def result(self) -> list[ImageMaps | None]:
        out = []
        for s, n, w in zip(self.sums, self.counts, self.words, strict=True):
            count = int(n) if n is not None else 0
            out.append(ImageMaps(w, (s / count).cpu(), count) if s is not None and count else None)
        self.sums = [None] * len(self.sums)  # free the device memory
        self.counts = [None] * len(self.counts)
        return out
