"""Layout metric of the neglect benchmark: with one box per object (first object left half, second right half,
or swapped), does each object land in its box, and does each concept's attention?

    python -m quality.layout_eval --prompts quality/prompts/report.txt --seeds 4 --steps 10 --threads 1

Per prompt, seed and orientation it samples plain, A-STAR (no layout) and A-STAR with the layout, and reports:
object centre in its box (the largest detected blob of the object's colour, whatever its shape), both objects
in their boxes, stray pixels (grain: neither background nor a palette colour),
and the share of each concept's map mass inside its box,
averaged over the refined steps (the map the overlays show; A-STAR with and without the layout).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segret_lib.engine.layout import image_target, in_box_fraction
from segret_lib.settings.layout_boxes import parse_layout
from segret_lib.settings.params import SegretParams

from .dataset import SIZE
from .detector import detect, stray_share
from .evaluate import Engine, PromptSpec, read_prompts
from .model import WEIGHTS, load

LEFT, RIGHT = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)


def centre_in_box(img: np.ndarray, colour: str, box: Sequence[float]) -> bool:
    """Whether the largest detected object of `colour` has its centre inside box (fractions)."""
    found = [f for f in detect(img) if f.colour == colour]
    if not found:
        return False
    y0, x0, y1, x1 = max(found, key=lambda f: f.area).box
    cy, cx = (y0 + y1) / 2 / img.shape[0], (x0 + x1) / 2 / img.shape[1]
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def run(engine: Engine, specs: Sequence[PromptSpec], seeds: Sequence[int], steps: int, cfg: float,
        strength: float, exclusive: bool) -> dict:
    variants = ("plain", "astar", "layout")
    centre = {v: [] for v in variants}
    both = {v: [] for v in variants}
    stray = {v: [] for v in variants}
    mass = {v: [] for v in ("astar", "layout")}
    for spec in specs:
        for flip in (False, True):
            boxes = (RIGHT, LEFT) if flip else (LEFT, RIGHT)
            layout = parse_layout({c: b for c, b in zip(spec.concepts, boxes, strict=True)})
            for v in variants:
                params = None
                if v != "plain":
                    extra = {"layout": layout, "layout_strength": strength, "layout_exclusive": exclusive}
                    params = SegretParams.create(enabled=True, concepts=spec.concepts, show_maps=True,
                                                 **(extra if v == "layout" else {}))
                imgs, session = engine.sample([spec] * len(seeds), seeds, "euler", steps, cfg, params)
                for img in imgs.permute(0, 2, 3, 1).numpy():
                    hits = [centre_in_box(img, colour, box) for (colour, _), box in zip(spec.objects, boxes,
                                                                                        strict=True)]
                    centre[v].extend(hits)
                    stray[v].append(stray_share(img))
                    both[v].append(all(hits))
                if session is not None:
                    target = image_target(layout, list(spec.concepts), (SIZE, SIZE))
                    for maps in session.overlay_maps.result():
                        mass[v].extend(in_box_fraction(maps.maps, target.masks).tolist())
    out = {"n_images": len(both["plain"]), "n_objects": len(centre["plain"])}
    for v in variants:
        out[f"{v}_centre_in_box"] = float(np.mean(centre[v]))
        out[f"{v}_both_in_box"] = float(np.mean(both[v]))
        out[f"{v}_stray_pixels"] = float(np.mean(stray[v]))
    for v in mass:
        out[f"{v}_map_mass_in_box"] = float(np.mean(mass[v]))
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, default=Path("quality/prompts/report.txt"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--exclusive", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(Engine(load(WEIGHTS)), read_prompts(args.prompts), list(range(args.seeds)), args.steps, args.cfg,
                 args.strength, args.exclusive)
    result["config"] = {k: str(v) for k, v in vars(args).items()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
