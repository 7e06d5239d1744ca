"""An overlay sheet of attribute binding on the trained shapes model, for the docs:

    python -m quality.binding_example --out docs/overlay_binding.png

The first seed (from --seed on) at which A-STAR without binding misses an object of the prompt and A-STAR with
binding draws them all (the search is printed, so the pick is visible). Top: A-STAR without binding (combined
overlay and one panel per concept); below: with binding, whose sheet has a second row, per concept its noun's
map and then its modifier's, averaged over the refined steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from segret_lib.render.overlays import overlay_sheet
from segret_lib.settings.params import SegretParams

from .detector import detect, judge
from .evaluate import BIND_WEIGHT, OBJECT_RE, Engine, PromptSpec
from .model import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red square and a yellow triangle and a blue circle")
    ap.add_argument("--seed", type=int, default=0, help="first seed tried")
    ap.add_argument("--tries", type=int, default=32)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--bind-weight", type=float, default=BIND_WEIGHT)
    ap.add_argument("--out", type=Path, default=Path("docs/overlay_binding.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = Engine(load())
    objects = tuple(OBJECT_RE.findall(args.prompt.lower()))
    spec = PromptSpec(args.prompt, tuple(f"{c} {s}" for c, s in objects), objects)
    runs = {}
    for seed in range(args.seed, args.seed + args.tries):
        runs = {}
        for weight in (0.0, args.bind_weight):
            params = SegretParams.create(enabled=True, concepts=spec.concepts, show_maps=True, bind_weight=weight)
            imgs, session = engine.sample([spec], [seed], args.sampler, args.steps, 4.0, params)
            verdict = judge(detect(imgs[0].permute(1, 2, 0).numpy()), spec.objects)
            runs[weight] = (imgs[0], session.overlay_result()[0], verdict.all_present)
        print(f"seed {seed}: all objects without binding {runs[0.0][2]}, with {runs[args.bind_weight][2]}")
        if not runs[0.0][2] and runs[args.bind_weight][2]:
            break
    rows = []
    for img, maps, _ in runs.values():
        image = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        rows.append(overlay_sheet(image, maps))
    sheet = Image.new("RGB", (max(r.size[0] for r in rows), sum(r.size[1] for r in rows) + 4), (24, 24, 24))
    sheet.paste(rows[0], (0, 0))
    sheet.paste(rows[1], (0, rows[0].size[1] + 4))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)  # small for git
    print("wrote", args.out, sheet.size)


if __name__ == "__main__":
    main()
