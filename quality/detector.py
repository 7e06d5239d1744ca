"""Object detector for the shapes benchmark: pixels are assigned to the nearest palette colour, connected
components per colour become objects, and each object's shape is classified from its fill ratio
(area / bounding-box area: square ~1, circle ~pi/4, triangle ~1/2) and how its width grows from top to bottom."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .dataset import COLOURS

MAX_COLOUR_DISTANCE = 0.3  # RGB distance (0..1 scale) from a palette colour's background mix line
MIN_AREA = 16  # pixels; smaller blobs are noise or fragments
MIN_SIDE = 5  # bounding-box side in pixels


@dataclass(frozen=True)
class Found:
    """A detected object: colour, shape, area in pixels, bounding box (y0, x0, y1, x1)."""

    colour: str
    shape: str
    area: int
    box: tuple[int, int, int, int]


def background_colour(img: np.ndarray) -> np.ndarray:
    """The image's background: the median of its border pixels (samples may tint it)."""
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(border, axis=0).astype(np.float32)


def colour_labels(img: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """Per pixel: index into list(COLOURS) of its colour, -1 for background or unclear.

    A pixel is read as a mix m * colour + (1 - m) * background (anti-aliased edges; the background is estimated
    from the border); it belongs to the colour with the smallest distance from that line if m >= 0.5 and the
    distance is at most MAX_COLOUR_DISTANCE."""
    bg = background_colour(img) if bg is None else bg
    p = img.astype(np.float32) - bg
    best = np.full(img.shape[:2], -1)
    best_d = np.full(img.shape[:2], np.inf, dtype=np.float32)
    for ci, name in enumerate(COLOURS):
        c = np.asarray(COLOURS[name], dtype=np.float32) - bg
        m = (p @ c) / max(float(c @ c), 1e-6)
        dist = np.linalg.norm(p - np.clip(m, 0, 1)[..., None] * c, axis=-1)
        take = (m >= 0.5) & (dist <= MAX_COLOUR_DISTANCE) & (dist < best_d)
        best = np.where(take, ci, best)
        best_d = np.where(take, dist, best_d)
    return best


def classify(mask: np.ndarray) -> str:
    """Shape of one component (boolean mask cropped to its bounding box)."""
    h, w = mask.shape
    fill = mask.sum() / float(h * w)
    widths = mask.sum(axis=1).astype(np.float32)
    third = max(h // 3, 1)
    top, bottom = widths[:third].mean(), widths[-third:].mean()
    taper = top / max(bottom, 1e-6)  # triangle (apex up): ~0.3; square: ~1; circle: ~0.8
    if fill < 0.66 and taper < 0.6:
        return "triangle"
    if fill > 0.87 and taper > 0.8:
        return "square"
    if fill >= 0.66:
        return "circle"
    return "other"


def detect(img: np.ndarray) -> list[Found]:
    """Objects in an RGB image [H, W, 3] with values in [0, 1]."""
    labels = colour_labels(img)
    out: list[Found] = []
    for ci, name in enumerate(COLOURS):
        comps, _ = ndimage.label(labels == ci, structure=np.ones((3, 3), dtype=int))
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            mask = comps[sl] == k
            area = int(mask.sum())
            h, w = mask.shape
            if area < MIN_AREA or min(h, w) < MIN_SIDE:
                continue
            out.append(Found(name, classify(mask), area, (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)))
    return out


def stray_share(img: np.ndarray, tolerance: float = 0.15) -> float:
    """Share of pixels that are neither near the (estimated) background nor a palette colour (grain, smears,
    off colours); a measure of artefacts."""
    near_bg = np.linalg.norm(img - background_colour(img), axis=-1) <= tolerance
    return float(((colour_labels(img) < 0) & ~near_bg).mean())


@dataclass(frozen=True)
class Verdict:
    """Per requested object: present with the right colour and shape; colour present at all; shape present in
    any colour. binding_ok: every requested shape that is found is found in its requested colour."""

    present: tuple[bool, ...]
    colour_present: tuple[bool, ...]
    shape_present: tuple[bool, ...]

    @property
    def all_present(self) -> bool:
        return all(self.present)

    @property
    def binding_testable(self) -> bool:
        return all(self.colour_present) and all(self.shape_present)


def judge(found: Sequence[Found], wanted: Sequence[tuple[str, str]]) -> Verdict:
    """Compare detections with the requested (colour, shape) objects."""
    pairs = {(f.colour, f.shape) for f in found}
    colours = {f.colour for f in found}
    shapes = {f.shape for f in found}
    return Verdict(tuple((c, s) in pairs for c, s in wanted), tuple(c in colours for c, _ in wanted),
                   tuple(s in shapes for _, s in wanted))


def accuracy(scenes: int = 1000, seed: int = 999) -> dict:
    """The detector on ground-truth scenes (held-out pairs included): exact scenes, object recall, and how
    often a wrong shape in a drawn object's colour is rejected."""
    from .dataset import SHAPES, render, sample_scene

    exact = found_objects = objects = rejected = negatives = 0
    for i in range(scenes):
        scene = sample_scene(seed, i, train=False)
        found = detect(render(scene))
        wanted = [(o.colour, o.shape) for o in scene.objects]
        exact += sorted((f.colour, f.shape) for f in found) == sorted(wanted)
        found_objects += sum(judge(found, wanted).present)
        objects += len(wanted)
        for colour, shape in wanted:
            for other in SHAPES:
                if other != shape:
                    negatives += 1
                    rejected += not judge(found, [(colour, other)]).present[0]
    return {"scenes": scenes, "exact": exact / scenes, "objects": objects, "object_recall": found_objects / objects,
            "negatives": negatives, "wrong_shape_rejected": rejected / negatives}


if __name__ == "__main__":
    print(accuracy())
