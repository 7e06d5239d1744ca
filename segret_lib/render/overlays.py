"""Attention overlays: each concept's map, aggregated over the refined steps, over the generated image, and all
concepts in one picture in their own colours, with the layout boxes drawn (host-free)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..engine.map_history import ImageMaps
from ..settings.layout_boxes import Box, Layout, box_of

# One colour per concept slot, the same as javascript/segret_layout.js gives the boxes (bright enough for the
# WebUI's dark theme).
PALETTE = ("#ff5a5a", "#4da3ff", "#4fd67a", "#ffb23f", "#c47dff", "#ff6fc8", "#3fdad8", "#e0e04a")
PANEL = 384  # longest side of one panel, pixels


def colour(index: int) -> tuple[int, int, int]:
    h = PALETTE[index % len(PALETTE)]
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


# ---------------------------------------------------------------------------------------------- rendering
def upsample(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[h, w] map -> [H, W] in [0, 1] (stretched from its own minimum to its maximum), bicubic, so the cells do
    not show."""
    a = m.detach().float()[None, None]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else a * 0
    up = F.interpolate(a, size=(size[1], size[0]), mode="bicubic", align_corners=False)
    return up[0, 0].clamp(0, 1).numpy()


def _fit(image: Image.Image, longest: int = PANEL) -> Image.Image:
    w, h = image.size
    scale = longest / max(w, h)
    return image.convert("RGB").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def _draw_box(draw: ImageDraw.ImageDraw, box: Box, size: tuple[int, int], rgb: tuple[int, int, int],
              label: str | None = None) -> None:
    w, h = size
    xy = (box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1)
    draw.rectangle(xy, outline=(0, 0, 0), width=4)
    draw.rectangle(xy, outline=rgb, width=2)
    if label:
        _label(draw, (xy[0] + 3, xy[1] + 3), label, rgb)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, rgb: tuple[int, int, int]) -> None:
    x, y = xy
    tw = draw.textlength(text) if hasattr(draw, "textlength") else 6 * len(text)
    draw.rectangle((x - 2, y - 1, x + tw + 3, y + 12), fill=(16, 16, 16))
    draw.text((x, y), text, fill=rgb)


def concept_overlay(image: Image.Image, m: torch.Tensor, word: str, index: int,
                    box: Box | None = None) -> Image.Image:
    """One concept's map blended over the (dimmed) image in a heat scale, with its label and box."""
    from .visualize import colorize

    base = _fit(image)
    a = upsample(m, base.size)
    img = np.asarray(base).astype(np.float32) * 0.8
    heat = colorize(a).astype(np.float32)
    alpha = (0.1 + 0.7 * a)[..., None]
    out = Image.fromarray((img * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    if box is not None:
        _draw_box(draw, box, out.size, colour(index))
    _label(draw, (6, 6), word, colour(index))
    return out


def combined_overlay(image: Image.Image, maps: torch.Tensor, words: Sequence[str],
                     layout: Layout = ()) -> Image.Image:
    """Every concept in its own colour over the image: per pixel the concepts' colours mixed by their
    (max-normalised) maps, opaque where a map is strong; boxes in the same colours; a legend."""
    base = _fit(image)
    img = np.asarray(base).astype(np.float32) * 0.8
    ups = np.stack([upsample(m, base.size) for m in maps]) if len(maps) else np.zeros((0, *img.shape[:2]))
    cols = np.array([colour(i) for i in range(len(words))], dtype=np.float32).reshape(-1, 3)
    weight = ups**4  # the locally strongest concept's colour dominates the mix
    mix = np.einsum("chw,cd->hwd", weight, cols) / np.maximum(weight.sum(0), 1e-6)[..., None]
    alpha = (0.8 * ups.max(0) ** 1.5)[..., None] if len(ups) else np.zeros((*img.shape[:2], 1))
    out = Image.fromarray((img * (1 - alpha) + mix * alpha).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for i, word in enumerate(words):
        box = box_of(layout, word)
        if box is not None:
            _draw_box(draw, box, out.size, colour(i), word)
    x = 6
    for i, word in enumerate(words):
        _label(draw, (x, out.size[1] - 18), word, colour(i))
        x += (draw.textlength(word) if hasattr(draw, "textlength") else 6 * len(word)) + 14
    return out


def overlay_sheet(image: Image.Image, maps: ImageMaps, layout: Layout = ()) -> Image.Image:
    """One picture per image: the combined overlay, then each concept's overlay, side by side; with attribute
    binding a second row: per concept with modifiers, its head noun's map and then each modifier's (a modifier
    bound to its noun shows the same place), labelled "<concept>: <word>", in the concept's colour."""
    rows = [[combined_overlay(image, maps.maps, maps.words, layout)]
            + [concept_overlay(image, maps.maps[i], w, i, box_of(layout, w)) for i, w in enumerate(maps.words)]]
    if maps.bound is not None and maps.bound.words:
        slot = {w: i for i, w in enumerate(maps.words)}  # labels are "<concept>: <word>"
        rows.append([concept_overlay(image, maps.bound.maps[i], w, slot.get(w.rsplit(": ", 1)[0], i))
                     for i, w in enumerate(maps.bound.words)])
    gap = 4
    w = max(sum(p.size[0] for p in row) + gap * (len(row) - 1) for row in rows)
    h = sum(max(p.size[1] for p in row) for row in rows) + gap * (len(rows) - 1)
    sheet = Image.new("RGB", (w, h), (24, 24, 24))
    y = 0
    for row in rows:
        x = 0
        for p in row:
            sheet.paste(p, (x, y))
            x += p.size[0] + gap
        y += max(p.size[1] for p in row) + gap
    return sheet
