"""Why the seed decides: plain sampling of crossed cells (every seed x every prompt) on the shapes model.

For each object count and CFG scale it reports how much of each outcome's variance is the seed and how much the
prompt, how many objects the model draws against how many the prompt asks for (the training scenes hold one or
two), whether a seed's outcome carries over from one CFG scale to another, and which property of the start noise
goes with a seed's outcome (Pearson r over the seeds).

    .venv/bin/python -m quality.seed_study --counts 2,3,4 --cfgs 2,4,7.5 --seeds 32 --prompts 12 \
        --out quality/results/seed_study.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from .detector import detect, judge, stray_share
from .evaluate import NOISES, Engine, read_prompts, seed_noise
from .matrix import FAMILY_SEEDS, prompt_file
from .model import load
from .stats import variance_shares

OUTCOMES = ("all_colours", "all_objects", "objects_drawn", "stray")


def noise_features(seeds: Sequence[int], noise: str = "unit", capture: int = 8) -> dict[str, np.ndarray]:
    """Per seed: properties of the start noise that could decide the layout before the prompt does.

    coarse: the RMS of the noise averaged over capture cells (what the 8x8 attention maps see of it);
    coarse_contrast: the spread of the cell means' brightness (how strongly the noise already marks out regions);
    peak: the largest absolute pixel value (outliers that sampling may keep as specks);
    rms: the draw's RMS (1 with unit noise), which the model cannot see."""
    noise = seed_noise(seeds, noise)
    size = noise.shape[-1]
    cells = torch.nn.functional.avg_pool2d(noise, size // capture)
    brightness = cells.mean(dim=1)  # [n, c, c]
    return {"coarse": cells.pow(2).mean(dim=(1, 2, 3)).sqrt().numpy(),
            "coarse_contrast": brightness.flatten(1).std(dim=1).numpy(),
            "peak": noise.abs().flatten(1).max(dim=1).values.numpy(),
            "rms": noise.pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()}


def crossed_cell(engine: Engine, specs, seeds: Sequence[int], sampler: str, steps: int, cfg: float,
                 batch: int = 96) -> dict[str, dict[tuple[str, str, int], float]]:
    """Every outcome per (cfg label, prompt, seed) of plain sampling."""
    jobs = [(spec, s) for s in seeds for spec in specs]
    out: dict[str, dict] = {k: {} for k in OUTCOMES}
    label = f"cfg {cfg:g}"
    for lo in range(0, len(jobs), batch):
        part = jobs[lo:lo + batch]
        imgs, _ = engine.sample([j[0] for j in part], [j[1] for j in part], sampler, steps, cfg, None)
        for img, (spec, s) in zip(imgs.permute(0, 2, 3, 1).numpy(), part, strict=True):
            found = detect(img)
            v = judge(found, spec.objects)
            key = (label, spec.prompt, int(s))
            out["all_colours"][key] = float(all(v.colour_present))
            out["all_objects"][key] = float(v.all_present)
            out["objects_drawn"][key] = float(len(found))
            out["stray"][key] = stray_share(img)
    return out


def per_seed(values: dict[tuple[str, str, int], float]) -> dict[int, float]:
    seeds = sorted({k[2] for k in values})
    return {s: float(np.mean([v for k, v in values.items() if k[2] == s])) for s in seeds}


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="report")
    ap.add_argument("--counts", default="2,3,4")
    ap.add_argument("--cfgs", default="2,4,7.5")
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=12, help="the first N prompts of each set")
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--noise", default="unit", choices=NOISES, help="start noise (evaluate.seed_noise)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    engine = Engine(load(), noise=args.noise)
    offset = FAMILY_SEEDS.get(args.family, 0)
    seeds = list(range(offset, offset + args.seeds))
    features = noise_features(seeds, args.noise)
    result: dict = {"seeds": seeds, "sampler": args.sampler, "steps": args.steps, "noise": args.noise, "cells": []}
    for count in [c.strip() for c in args.counts.split(",") if c.strip()]:
        specs = read_prompts(prompt_file(args.family, count))[:args.prompts]
        by_cfg: dict[float, dict] = {}
        for cfg in [float(c) for c in args.cfgs.split(",")]:
            values = crossed_cell(engine, specs, seeds, args.sampler, args.steps, cfg)
            by_cfg[cfg] = values
            seed_means = {k: per_seed(v) for k, v in values.items()}
            cell = {"count": count, "cfg": cfg, "n": len(values["stray"]), "prompts": len(specs),
                    "requested": float(np.mean([len(s.objects) for s in specs])),
                    "mean": {k: float(np.mean(list(v.values()))) for k, v in values.items()},
                    "shares": {k: variance_shares(v) for k, v in values.items()},
                    "seed_range": {k: [min(m.values()), max(m.values())] for k, m in seed_means.items()},
                    "noise_r": {k: {f: pearson([m[s] for s in seeds], features[f]) for f in features}
                                for k, m in seed_means.items()}}
            result["cells"].append(cell)
            print(f"{count} objects, cfg {cfg:g}: " + "; ".join(
                f"{k} {cell['mean'][k]:.3f} (seed {cell['shares'][k]['seed']:.2f}, "
                f"prompt {cell['shares'][k]['prompt']:.2f})" for k in OUTCOMES), flush=True)
        cfgs = sorted(by_cfg)
        for a, b in pairwise(cfgs):
            for k in OUTCOMES:
                ma, mb = per_seed(by_cfg[a][k]), per_seed(by_cfg[b][k])
                result.setdefault("carry_over", []).append(
                    {"count": count, "cfgs": [a, b], "outcome": k, "r": pearson([ma[s] for s in seeds],
                                                                                [mb[s] for s in seeds])})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
