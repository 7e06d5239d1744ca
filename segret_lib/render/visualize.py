"""Attention-map grid: one row per concept, columns = recorded steps before/after refinement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

# anchor colours of a dark-to-bright heat map (black, purple, red, orange, yellow-white)
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


def colorize(m: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] to uint8 RGB."""
    v = np.clip(m, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_ANCHORS) - 2)
    w = (v - lo)[..., None]
    rgb = _ANCHORS[lo] * (1 - w) + _ANCHORS[lo + 1] * w
    return rgb.astype(np.uint8)


def map_tile(m: torch.Tensor, size: int) -> Image.Image:
    """One map, stretched to its own min..max, upscaled (nearest) to size x size."""
    a = m.detach().float().cpu().numpy()
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return Image.fromarray(colorize(a)).resize((size, size), Image.NEAREST)


def attention_grid(
    concepts: Sequence[str],
    columns: Sequence[tuple[str, torch.Tensor | None]],
    tile: int = 128,
) -> Image.Image:
    """Grid image. columns: (label, maps [C, H, W] or None) in display order."""
    label_w, label_h, gap = 110, 22, 4
    width = label_w + len(columns) * (tile + gap)
    height = label_h + len(concepts) * (tile + gap)
    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for ci, name in enumerate(concepts):
        draw.text((6, label_h + ci * (tile + gap) + tile // 2 - 6), name[:16], fill=(235, 235, 235))
    for col, (label, maps) in enumerate(columns):
        x0 = label_w + col * (tile + gap)
        draw.text((x0 + 4, 5), label, fill=(235, 235, 235))
        if maps is None:
            continue
        for ci in range(min(len(concepts), maps.shape[0])):
            img.paste(map_tile(maps[ci], tile), (x0, label_h + ci * (tile + gap)))
    return img


def session_grids(session, max_images: int = 4) -> list[Image.Image]:
    """One grid per image of the session's first pass with recorded snapshots."""
    grids: list[Image.Image] = []
    for info in session.passes:
        if not info.snapshots:
            continue
        steps = sorted(info.snapshots)
        for row, concepts in enumerate(session.concepts[:max_images]):
            if not concepts:
                continue
            cols: list[tuple[str, torch.Tensor | None]] = []
            for s in steps:
                snap = info.snapshots[s]
                cols.append((f"step {s + 1} before", snap.before[row]))
                cols.append((f"step {s + 1} after", snap.after[row] if snap.after else None))
            grids.append(attention_grid([c.word for c in concepts], cols))
        break
    return grids
