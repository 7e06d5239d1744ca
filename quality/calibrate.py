"""Sweep A-STAR settings on the tuning prompts (paired seeds, same sampler) and print one row per setting.

    python -m quality.calibrate --prompts quality/prompts/tune.txt --seeds 8 --step-sizes 0,20,100,300,1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .evaluate import SAMPLERS, Engine, read_prompts, run_variant, seg_text, summarize
from .model import WEIGHTS, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, default=Path(__file__).parent / "prompts" / "tune.txt")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--seed-offset", type=int, default=1000)
    ap.add_argument("--sampler", choices=SAMPLERS, default="euler")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--step-sizes", default="0,20,100,300,1000")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=VALUE[;NAME=VALUE]",
                    help="further settings rows, e.g. 'step_size=300;threshold=0.3'")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = Engine(load(args.weights))
    specs = read_prompts(args.prompts)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    rows = [{"step_size": float(s)} for s in args.step_sizes.split(",") if s.strip()]
    rows += [dict(kv.split("=", 1) for kv in e.split(";")) for e in args.extra]
    plain, spi, _ = run_variant(engine, specs, seeds, args.sampler, args.steps, args.cfg, None, {})
    table = {"plain": summarize(plain, None, spi)}
    print(f"{len(specs)} prompts x {len(seeds)} seeds, {args.sampler} {args.steps} steps", flush=True)
    print(f"plain: all {table['plain']['all_present']:.3f} recall {table['plain']['object_recall']:.3f} | colours "
          f"{table['plain']['all_colours']:.3f} | stray {table['plain']['stray_pixels']:.3f}", flush=True)
    for changes in rows:
        recs, spi, _ = run_variant(engine, specs, seeds, args.sampler, args.steps, args.cfg, changes, {})
        s = summarize(recs, plain, spi)
        name = ";".join(f"{k}={v}" for k, v in changes.items())
        table[name] = s
        print(f"{name}: all {s['all_present']:.3f} recall {s['object_recall']:.3f} fixed {s['fixed']} broken "
              f"{s['broken']} | colours {s['all_colours']:.3f} fixed {s['colours_fixed']} broken "
              f"{s['colours_broken']} | L_seg {seg_text(s)} stray {s['stray_pixels']:.3f} {s['s_per_image']:.2f} s/img",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "rows": table},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
