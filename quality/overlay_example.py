"""The overlay sheets of one prompt on the trained shapes model, A-STAR without and with a layout, for the README:

    python -m quality.overlay_example --out docs/overlay_shapes.png

Each row: the combined overlay (every concept in its colour, boxes drawn) and one panel per concept, over the
generated 32x32 image (upscaled); the top row without the layout, the bottom row with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from segret_lib.render.overlays import overlay_sheet
from segret_lib.settings.layout_boxes import parse_layout
from segret_lib.settings.params import SegretParams

from .evaluate import Engine, PromptSpec
from .model import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red circle and a blue square")
    ap.add_argument("--concepts", default="red circle, blue square")
    ap.add_argument("--layout", default="red circle: 0.5 0 1 1; blue square: 0 0 0.5 1")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--strength", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=Path("docs/overlay_shapes.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = Engine(load())
    concepts = tuple(c.strip() for c in args.concepts.split(","))
    spec = PromptSpec(args.prompt, concepts, ())
    layout = parse_layout(args.layout)
    rows = []
    for extra in ({}, {"layout": layout, "layout_strength": args.strength}):
        params = SegretParams.create(enabled=True, concepts=concepts, show_maps=True, **extra)
        imgs, session = engine.sample([spec], [args.seed], "euler", 10, 4.0, params)
        image = Image.fromarray((imgs[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        rows.append(overlay_sheet(image, session.overlay_maps.result()[0], params.layout))
    sheet = Image.new("RGB", (rows[0].size[0], sum(r.size[1] for r in rows) + 4), (24, 24, 24))
    sheet.paste(rows[0], (0, 0))
    sheet.paste(rows[1], (0, rows[0].size[1] + 4))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)  # small for git
    print("wrote", args.out, sheet.size)


if __name__ == "__main__":
    main()
