"""Train the tiny shapes text-to-image model from scratch (CPU, deterministic from --seed).

    python -m quality.train --steps 9000 --out quality/weights/shapes_t2i.safetensors

Saves the EMA weights every --save-every steps (the file's metadata holds the step, seed and wall time).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import dataset
from .model import MIXES, WEIGHTS, ShapesLDM, save

CAPTION_DROPOUT = 0.1  # empty prompt, for classifier-free guidance
MIN_SNR_GAMMA = 5.0  # min-SNR loss weighting (Hang et al. 2023): faster convergence


def lr_at(step: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then constant: the weights at step k do not depend on --steps, so any saved checkpoint
    is what a run with --steps k gives (training on a shared CPU is stopped when its time is up)."""
    return peak * min(1.0, (step + 1) / warmup)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--mix", choices=list(MIXES), default="left",
                    help="text encoder's neighbour mix (see quality.model.MIXES)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # 1: OpenMP threads spin badly on a shared 2-core machine
    torch.manual_seed(args.seed)
    model = ShapesLDM(mix=args.mix).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ac = model.alphas_cumprod
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr
    gen = torch.Generator().manual_seed(args.seed)
    print(f"params {sum(p.numel() for p in params)}", flush=True)
    start, seen, losses = time.time(), 0, []
    for step in range(args.steps):
        imgs, captions, _ = dataset.batch(args.data_seed, seen, args.batch)
        drop = np.random.default_rng([args.data_seed, seen, 1]).random(args.batch) < CAPTION_DROPOUT
        captions = ["" if d else c for c, d in zip(captions, drop, strict=True)]
        seen += args.batch
        x0 = torch.from_numpy(imgs)
        t = torch.randint(0, len(ac), (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model.apply_model(xt, t, {"c_crossattn": [model.text(captions)]})
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight[t]).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 100 == 0:
            wall = time.time() - start
            print(f"step {done} loss {np.mean(losses[-100:]):.4f} lr {lr_at(step, args.lr):.2e} "
                  f"{wall / done:.3f} s/step wall {wall:.0f}s", flush=True)
        if done % args.save_every == 0 or done == args.steps:
            meta = {"step": done, "steps": args.steps, "seed": args.seed, "data_seed": args.data_seed,
                    "batch": args.batch, "mix": args.mix, "lr": args.lr, "ema": args.ema, "threads": args.threads,
                    "wall_s": round(time.time() - start, 1), "loss_last100": float(np.mean(losses[-100:]))}
            save(ema, args.out, meta)
            meta["sha256"] = sha256(args.out)
            args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
            print(f"saved {args.out} at step {done} sha256 {meta['sha256']}", flush=True)


if __name__ == "__main__":
    main()
