"""Object detector for the shapes benchmark: after a light blur against grain, pixels are assigned to the nearest
palette colour, connected components per colour (holes filled) become objects, and each object's shape is
classified from its fill ratio (area / bounding-box area: square ~1, circle ~pi/4, triangle ~1/2), how its width
grows from top to bottom, and whether the corners of its box are filled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .dataset import COLOURS

MAX_COLOUR_DISTANCE = 0.3  # RGB distance (0..1 scale) from a palette colour's background mix line
MIN_AREA = 16  # pixels; smaller blobs are noise or fragments
MIN_SIDE = 5  # bounding-box side in pixels
GRAIN_BLUR = 0.5  # Gaussian sigma in pixels, applied before the colours are read
EDGE_GRADIENT = 0.08  # grain(): a pixel is near an edge where the smoothed image changes faster than this per pixel


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
    """Shape of one component (boolean mask cropped to its bounding box), from three numbers: fill (area /
    box area: square ~1, circle ~pi/4, triangle ~1/2), taper (mean width of the top third / of the bottom third:
    an apex-up triangle ~0.3, square and circle ~1) and corner fill (the four corner cells of the box, a fifth
    of its side each: full for a square even when its sides bow in, empty for a circle even when it is
    drawn as an octagon)."""
    h, w = mask.shape
    fill = mask.sum() / float(h * w)
    widths = mask.sum(axis=1).astype(np.float32)
    third = max(h // 3, 1)
    top, bottom = widths[:third].mean(), widths[-third:].mean()
    taper = top / max(bottom, 1e-6)
    ch, cw = max(round(h / 5), 1), max(round(w / 5), 1)
    corner = float(np.mean([mask[:ch, :cw].mean(), mask[:ch, -cw:].mean(), mask[-ch:, :cw].mean(),
                            mask[-ch:, -cw:].mean()]))
    if taper < 0.6 and fill < 0.75:
        return "triangle"
    if fill < 0.6 or not 0.6 <= taper <= 1 / 0.6:
        return "other"
    return "square" if corner >= 0.42 or fill >= 0.9 else "circle"  # ground truth: corner <= 0.33 / >= 0.5


def denoise(img: np.ndarray) -> np.ndarray:
    """A light Gaussian blur per channel against per-pixel grain (the small model's samples carry about 0.1 per
    pixel). Sigma 0.5 keeps ground-truth accuracy near the unblurred detector's while grain of 0.1 costs far
    less recall; a 3x3 median or sigma 1 cut triangle apexes and corners."""
    return ndimage.gaussian_filter(img, (GRAIN_BLUR, GRAIN_BLUR, 0), mode="nearest")


def detect(img: np.ndarray) -> list[Found]:
    """Objects in an RGB image [H, W, 3] with values in [0, 1] (read after `denoise`)."""
    labels = colour_labels(denoise(img))
    out: list[Found] = []
    for ci, name in enumerate(COLOURS):
        comps, _ = ndimage.label(labels == ci, structure=np.ones((3, 3), dtype=int))
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            if sl is None:
                continue
            mask = ndimage.binary_fill_holes(comps[sl] == k)
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


def grain(img: np.ndarray, sigma: float = 1.0) -> float:
    """Pixel noise away from edges: the RMS of the image minus its Gaussian blur (sigma 1 px), over the pixels
    that are not on or next to an edge of the blurred image (gradient above EDGE_GRADIENT per pixel, dilated by
    one). On ground-truth scenes with Gaussian noise of std s <= 0.05 added it reads 0.84 s to 0.86 s for 1, 2 and 3
    objects alike (`grain_calibration`); stray_share instead counts object outlines too, so it rises with the number of
    objects drawn (r = 0.6 to 0.7 between stray and detected objects on plain samples, quality/README.md)."""
    smooth = ndimage.gaussian_filter(img.astype(np.float32), (sigma, sigma, 0), mode="nearest")
    gy = ndimage.sobel(smooth, axis=0, mode="nearest") / 8
    gx = ndimage.sobel(smooth, axis=1, mode="nearest") / 8
    edge = ndimage.binary_dilation(np.sqrt((gx ** 2 + gy ** 2).sum(-1)) > EDGE_GRADIENT, iterations=1)
    flat = ~edge
    if not flat.any():
        return 0.0
    return float(np.sqrt(((img - smooth)[flat] ** 2).mean()))


def grain_calibration(noise: Sequence[float] = (0.0, 0.02, 0.05, 0.1), counts: Sequence[int] = (1, 2, 3),
                      scenes: int = 60, seed: int = 7) -> dict[tuple[int, float], float]:
    """grain() on ground-truth scenes of each object count with Gaussian noise of each std added: the metric
    should follow the noise and not the number of objects."""
    from .dataset import render, sample_scene

    rng = np.random.default_rng(seed)
    out = {}
    for n in counts:
        imgs: list[np.ndarray] = []
        for i in range(scenes * 4):  # three objects of up to 14 px do not always fit: skip those layouts
            try:
                imgs.append(render(sample_scene(seed, i, objects=n)))
            except RuntimeError:
                continue
            if len(imgs) == scenes:
                break
        for s in noise:
            out[(n, s)] = float(np.mean([grain(np.clip(im + rng.normal(0.0, s, im.shape), 0, 1).astype(np.float32))
                                         for im in imgs]))
    return out


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


def accuracy(scenes: int = 1000, seed: int = 999, grain: float = 0.0) -> dict:
    """The detector on ground-truth scenes (held-out pairs included): exact scenes, object recall, and how
    often a wrong shape in a drawn object's colour is rejected. `grain`: std of Gaussian noise added to each
    pixel and channel (clipped to [0, 1]), like the grain of the model's samples."""
    from .dataset import SHAPES, render, sample_scene

    exact = found_objects = objects = rejected = negatives = 0
    rng = np.random.default_rng(seed)
    for i in range(scenes):
        scene = sample_scene(seed, i, train=False)
        img = render(scene)
        if grain:
            img = np.clip(img + rng.normal(0.0, grain, img.shape).astype(np.float32), 0.0, 1.0)
        found = detect(img)
        wanted = [(o.colour, o.shape) for o in scene.objects]
        exact += sorted((f.colour, f.shape) for f in found) == sorted(wanted)
        found_objects += sum(judge(found, wanted).present)
        objects += len(wanted)
        for colour, shape in wanted:
            for other in SHAPES:
                if other != shape:
                    negatives += 1
                    rejected += not judge(found, [(colour, other)]).present[0]
    return {"scenes": scenes, "grain": grain, "exact": exact / scenes, "objects": objects,
            "object_recall": found_objects / objects, "negatives": negatives,
            "wrong_shape_rejected": rejected / negatives}


if __name__ == "__main__":
    for g in (0.0, 0.1):
        print(accuracy(grain=g))
    for (n, s), v in grain_calibration().items():
        print(f"grain(): {n} object(s), noise std {s}: {v:.4f}")
