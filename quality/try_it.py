"""Try A-STAR without a WebUI: one prompt on the embedded shapes test model, plain and refined, plus the overlay.

    .venv/bin/python -m quality.try_it --prompt "a red circle and a blue square and a green triangle" \
        --concepts "red circle, blue square, green triangle" --seed 7 --out try_out/

Writes plain.png, astar.png (aae.png / both.png with --method) and overlay.png into --out, upscaled 8x so a
person can see them. The model is the 1M-parameter 32x32 shapes model of quality/README.md (circles, squares,
triangles in red, green, blue, yellow), not Stable Diffusion; the engine is the extension's own (SegretSession
inside a k-diffusion or DDIM sampler loop, as the WebUI drives it).

Seed 7 of that prompt at 10 Euler steps (the benchmark's setting, the default here) is a neglect case: plain
sampling drops the red circle, A-STAR brings it back. This small model draws some seeds with heavy grain
(plain too, e.g. seeds 1 and 3 of that prompt); try another seed then.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from segret_lib.render.overlays import overlay_sheet
from segret_lib.settings.params import DEFAULT_METHOD, ParamError, SegretParams

from . import evaluate
from .evaluate import Engine, PromptSpec
from .model import load

SAMPLERS: tuple[str, ...] = getattr(evaluate, "SAMPLERS", ("euler", "ddim"))
"""The samplers Engine.sample takes."""
UPSCALE = 8
METHODS = ("astar", "aae", "both")


class ProgressBar:
    """A one-line text bar on a stream (stderr): `label [#####.....] 3/10`, redrawn in place."""

    def __init__(self, label: str, total: int, stream=None, width: int = 30) -> None:
        self.label, self.total, self.width, self.done = label, max(1, total), width, 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()

    def step(self) -> None:
        """Count one step and redraw."""
        self.done = min(self.done + 1, self.total)
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r{self.label:<8} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


@contextmanager
def count_sampling_steps(unet: torch.nn.Module, batch: int, on_step: Callable[[], None]) -> Iterator[None]:
    """Call on_step at every guided sampling call of the UNet (batch 2n: conditional + unconditional rows).

    The refinement's own UNet calls take n rows or fewer and are not counted. Every sampler of Engine makes one
    guided call per step."""

    def hook(_module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("x")
        if x is not None and x.shape[0] == 2 * batch:
            on_step()

    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """One image [3, H, W] in [0, 1] as a PIL image."""
    return Image.fromarray((tensor.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


def upscale(image: Image.Image, factor: int = UPSCALE) -> Image.Image:
    """Nearest-neighbour upscaling, so the 32x32 pixels stay sharp."""
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def split_concepts(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def run(prompt: str, concepts: tuple[str, ...], seed: int, out: Path, steps: int = 10, sampler: str = "euler",
        method: str = DEFAULT_METHOD, cfg: float = 4.0, engine: Engine | None = None) -> dict[str, Path]:
    """Sample plain and with the method, write the three PNGs into `out`; returns their paths by name."""
    engine = engine or Engine(load())
    spec = PromptSpec(prompt, concepts, ())
    params = SegretParams.create(enabled=True, concepts=concepts, method=method, show_maps=True)
    images: dict[str, Image.Image] = {}
    session = None
    for name, p in (("plain", None), (method, params)):
        bar = ProgressBar(name, steps)
        try:
            with count_sampling_steps(engine.model.unet, 1, bar.step):
                imgs, sess = engine.sample([spec], [seed], sampler, steps, cfg, p)
        finally:
            bar.close()
        images[name] = to_image(imgs[0])
        session = sess if p is not None else session
    maps = session.overlay_maps.result()[0] if session is not None and session.overlay_maps is not None else None
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.png" for name in images}
    for name, image in images.items():
        upscale(image).save(paths[name])
    if maps:
        paths["overlay"] = out / "overlay.png"
        overlay_sheet(upscale(images[method]), maps, params.layout).save(paths["overlay"])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red circle and a blue square and a green triangle")
    ap.add_argument("--concepts", default=None, help="comma-separated words of the prompt (default: its "
                    "'<colour> <shape>' phrases)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10,
                    help="sampling steps (10: what the shapes model was measured at)")
    ap.add_argument("--sampler", choices=SAMPLERS, default="euler")
    ap.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                    help="both (the default, as in the WebUI: A-STAR's losses and a quarter of Attend-and-Excite's), "
                         "astar (A-STAR) or aae (Attend-and-Excite)")
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=Path("try_out"))
    args = ap.parse_args(argv)
    concepts = split_concepts(args.concepts) if args.concepts is not None else default_concepts(args.prompt)
    if not concepts:
        ap.error("no concepts: give --concepts, e.g. \"red circle, blue square\"")
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    try:
        paths = run(args.prompt, concepts, args.seed, args.out, args.steps, args.sampler, args.method, args.cfg)
    except (ParamError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:<8} {path}")
    if "overlay" not in paths:
        print("(no overlay: no refined step recorded a map)", file=sys.stderr)
    return 0


def default_concepts(prompt: str) -> tuple[str, ...]:
    """The prompt's '<colour> <shape>' phrases, the words the shapes model knows as objects."""
    from .evaluate import OBJECT_RE

    return tuple(f"{c} {s}" for c, s in OBJECT_RE.findall(prompt.lower()))


if __name__ == "__main__":
    raise SystemExit(main())
