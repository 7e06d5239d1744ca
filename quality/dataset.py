"""Procedural multi-object scenes: coloured circles, squares and triangles on a gray background, with captions
like "a red circle and a blue square". Every scene is a pure function of (seed, index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32  # image side in pixels
SUPERSAMPLE = 4  # rendered at SIZE * SUPERSAMPLE, then box-filtered (soft edges)
BACKGROUND = (0.5, 0.5, 0.5)
"""Mid-gray: 0 in the model's [-1, 1] range, so the data mean is about 0. With a dark background the residual
signal at the last timestep (sqrt(abar_T) * mean) is as large as the mean of the start noise, the model
learns to read the background's brightness from it, and pure-noise starts give tinted backgrounds."""
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.15),
}
SHAPES = ("circle", "square", "triangle")
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("blue", "triangle"), ("yellow", "circle")})
"""Colour/shape pairs that never appear in training scenes (only in evaluation prompts)."""
MIN_SIDE, MAX_SIDE = 11, 16  # object bounding-box side in pixels (one-object scenes)
MAX_SIDE_TWO = 14  # two objects must fit side by side with a gap
TWO_OBJECT_SHARE = 0.5


@dataclass(frozen=True)
class Obj:
    """One object: colour and shape words, bounding-box centre and side in pixels."""

    colour: str
    shape: str
    cx: float
    cy: float
    side: float

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]

    @property
    def caption(self) -> str:
        return " and ".join(f"a {o.phrase}" for o in self.objects)


def caption_of(pairs: list[tuple[str, str]]) -> str:
    """Caption for a list of (colour, shape) pairs, in the dataset's style."""
    return " and ".join(f"a {c} {s}" for c, s in pairs)


def allowed_pairs(train: bool = True) -> list[tuple[str, str]]:
    """Colour/shape pairs (training excludes HELD_OUT)."""
    return [(c, s) for c in COLOURS for s in SHAPES if not (train and (c, s) in HELD_OUT)]


def _overlaps(a: Obj, b: Obj, gap: float = 1.5) -> bool:
    reach = (a.side + b.side) / 2 + gap
    return abs(a.cx - b.cx) < reach and abs(a.cy - b.cy) < reach


def sample_scene(seed: int, index: int, train: bool = True, objects: int | None = None) -> Scene:
    """Scene `index` of the stream `seed`: one or two objects of different colours, not overlapping."""
    rng = np.random.default_rng([seed, index])
    n = objects if objects is not None else (2 if rng.random() < TWO_OBJECT_SHARE else 1)
    pairs = allowed_pairs(train)
    while True:
        chosen = [pairs[i] for i in rng.choice(len(pairs), size=n, replace=False)]
        if len({c for c, _ in chosen}) == n:
            break
    top = MAX_SIDE if n == 1 else MAX_SIDE_TWO
    for _ in range(1000):  # place all objects together; retry the layout if they touch
        placed: list[Obj] = []
        for colour, shape in chosen:
            side = float(rng.uniform(MIN_SIDE, top))
            half = side / 2
            obj = Obj(colour, shape, float(rng.uniform(half + 0.5, SIZE - half - 0.5)),
                      float(rng.uniform(half + 0.5, SIZE - half - 0.5)), side)
            if any(_overlaps(obj, p) for p in placed):
                break
            placed.append(obj)
        if len(placed) == n:
            break
    else:
        raise RuntimeError(f"no room for {n} objects in scene {index}")
    return Scene(tuple(placed))


def shape_mask(obj: Obj, size: int = SIZE, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage of the object per pixel, in [0, 1], shape [size, size] (computed in its bounding box)."""
    h = obj.side / 2
    x0, y0 = max(int(obj.cx - h) - 1, 0), max(int(obj.cy - h) - 1, 0)
    x1, y1 = min(int(obj.cx + h) + 2, size), min(int(obj.cy + h) + 2, size)
    xs = x0 + (np.arange((x1 - x0) * supersample) + 0.5) / supersample
    ys = y0 + (np.arange((y1 - y0) * supersample) + 0.5) / supersample
    x, y = np.meshgrid(xs, ys)
    if obj.shape == "circle":
        inside = (x - obj.cx) ** 2 + (y - obj.cy) ** 2 <= h**2
    elif obj.shape == "square":
        s = h * 0.9  # a little smaller than the box: about the circle's area
        inside = (np.abs(x - obj.cx) <= s) & (np.abs(y - obj.cy) <= s)
    elif obj.shape == "triangle":  # pointing up, apex at the top of the box
        top, bottom = obj.cy - h, obj.cy + h
        t = (y - top) / (bottom - top)
        inside = (t >= 0) & (t <= 1) & (np.abs(x - obj.cx) <= t * h)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    out = np.zeros((size, size), dtype=np.float32)
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    return out


def render(scene: Scene) -> np.ndarray:
    """RGB image [SIZE, SIZE, 3] in [0, 1]."""
    img = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    img[:] = BACKGROUND
    for obj in scene.objects:
        m = shape_mask(obj)[..., None]
        img = img * (1 - m) + np.asarray(COLOURS[obj.colour], dtype=np.float32) * m
    return img


def batch(seed: int, start: int, count: int, train: bool = True) -> tuple[np.ndarray, list[str], list[Scene]]:
    """Images [count, 3, SIZE, SIZE] in [-1, 1], captions and scenes for indices start..start+count-1."""
    scenes = [sample_scene(seed, i, train) for i in range(start, start + count)]
    imgs = np.stack([render(s) for s in scenes]).transpose(0, 3, 1, 2) * 2 - 1
    return imgs.astype(np.float32), [s.caption for s in scenes], scenes
