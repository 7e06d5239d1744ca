"""Time per image of each method in one run, interleaved (plain, A-STAR, v1, A&E, Both, then again), on the
same prompts and seeds, so the ratios do not depend on what else the machine did in between.

    python -m quality.timing --prompts quality/prompts/report4.txt --steps 25 --sampler euler_a --images 16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .evaluate import SAMPLERS, Engine, read_prompts, run_pairs
from .matrix import VARIANTS
from .model import load


def time_variants(engine: Engine, specs, pairs, sampler: str, steps: int, cfg: float, variants: Sequence[str],
                  rounds: int) -> dict[str, float]:
    """Seconds per image of each variant: the median over `rounds` interleaved rounds (one batch each)."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            start = time.perf_counter()
            run_pairs(engine, specs, pairs, sampler, steps, cfg, VARIANTS[v], batch=len(pairs))
            times[v].append((time.perf_counter() - start) / len(pairs))
    return {v: sorted(t)[len(t) // 2] for v, t in times.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, default=Path(__file__).parent / "prompts" / "report4.txt")
    ap.add_argument("--sampler", choices=SAMPLERS, default="euler_a")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--variants", default="plain,astar,astar_v1,aae,both")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = read_prompts(args.prompts)
    pairs = [(i % len(specs), i) for i in range(args.images)]
    variants = [v for v in args.variants.split(",") if v]
    result = time_variants(Engine(load()), specs, pairs, args.sampler, args.steps, args.cfg, variants, args.rounds)
    base = result.get("plain") or 1.0
    print(f"{args.images} images, {args.sampler} {args.steps} steps, median of {args.rounds} interleaved rounds")
    print("| variant | s/image | x plain | x A&E |")
    print("|---|---|---|---|")
    for v, t in result.items():
        aae = f"{t / result['aae']:.2f}" if "aae" in result else ""
        print(f"| {v} | {t:.3f} | {t / base:.2f} | {aae} |")
    return result


if __name__ == "__main__":
    main()
