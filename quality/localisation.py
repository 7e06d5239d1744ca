"""Do the object words' cross-attention maps sit on their objects? On ground-truth two-object scenes noised
to a few timesteps, the maps A-STAR uses (8x8, its preprocessing) are read for each colour and shape word;
a word's map mass on its own object minus on the other object is reported per word type.

    python -m quality.localisation --scenes 128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from segret_lib.engine.attention_maps import capture_hw, concept_maps
from segret_lib.engine.capture import AttentionCapture, cross_attention_modules
from segret_lib.engine.losses import segregation_loss
from segret_lib.engine.tokens import ConceptTokens

from .dataset import SIZE, render, sample_scene, shape_mask
from .model import WEIGHTS, ShapesLDM, load


@torch.no_grad()
def localisation(model: ShapesLDM, scenes: int = 128, seed: int = 777, timesteps=(250, 500, 750),
                 train_pairs: bool = True) -> dict:
    hw = capture_hw(SIZE, SIZE)
    pool = SIZE // hw[0]
    items = [sample_scene(seed, i, train_pairs, objects=2) for i in range(scenes)]
    x0 = torch.from_numpy(np.stack([render(s) for s in items]).transpose(0, 3, 1, 2) * 2 - 1).float()
    masks = torch.tensor(np.stack([[shape_mask(o).reshape(hw[0], pool, hw[1], pool).mean(axis=(1, 3)) >= 0.5
                                    for o in s.objects] for s in items]))  # [N, 2, h, w]
    captions = [s.caption for s in items]
    context = model.text(captions)
    tokens = [model.text.prompt_tokens(c) for c in captions]
    gen = torch.Generator().manual_seed(seed)
    capture = AttentionCapture()
    out: dict = {}
    with capture.installed_on(cross_attention_modules(model.unet)):
        for t in timesteps:
            a = model.alphas_cumprod[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
            with capture.capturing(hw[0] * hw[1]) as probs:
                model.unet(xt, torch.full((len(items),), float(t)), context=context)
            avg = torch.stack(probs).mean(0)
            diff: dict[str, list[float]] = {"colour": [], "shape": []}
            own_mass: dict[str, list[float]] = {"colour": [], "shape": []}
            seg = []
            for i, pt in enumerate(tokens):
                # "a <c1> <s1> and a <c2> <s2>": colour and shape words at positions 2, 3, 6, 7
                words = [ConceptTokens(k, (p,)) for k, p in (("c0", 2), ("s0", 3), ("c1", 6), ("s1", 7))]
                maps = concept_maps(avg[i], hw, pt.n_real, words)
                for j, m in enumerate(maps):
                    obj = j // 2
                    kind = "colour" if j % 2 == 0 else "shape"
                    total = m.sum().clamp_min(1e-8)
                    own = float((m * masks[i, obj]).sum() / total)
                    other = float((m * masks[i, 1 - obj]).sum() / total)
                    diff[kind].append(own - other)
                    own_mass[kind].append(own)
                phrase = concept_maps(avg[i], hw, pt.n_real, [ConceptTokens("o0", (2, 3)), ConceptTokens("o1", (6, 7))])
                seg.append(float(segregation_loss(phrase)))
            out[str(t)] = {f"{k}_own_minus_other": float(np.mean(v)) for k, v in diff.items()}
            out[str(t)].update({f"{k}_own": float(np.mean(v)) for k, v in own_mass.items()})
            out[str(t)]["phrase_L_seg"] = float(np.mean(seg))
    area = masks.float().mean(dim=(2, 3)).mean().item()
    out["object_area_share"] = area
    out["scenes"] = scenes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=128)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--held-out", action="store_true", help="scenes may contain the held-out colour/shape pairs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = localisation(load(args.weights), args.scenes, train_pairs=not args.held_out)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
