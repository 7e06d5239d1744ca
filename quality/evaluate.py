"""Neglect benchmark: sample each prompt with the same seeds plain and with A-STAR variants through the
extension's engine (SegretSession.before_model_call inside a k-diffusion or DDIM sampler loop, as the WebUI
drives it), detect the objects and compare.

    python -m quality.evaluate --prompts quality/prompts/report.txt --seeds 20 --sampler euler --steps 20

A prompt file has one line per prompt: `prompt | concept, concept` (`#` starts a comment). The objects to
find are the "<colour> <shape>" phrases of the prompt.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segret_lib.engine.session import PassInfo, SegretSession
from segret_lib.engine.session_factory import session_for_prompts
from segret_lib.settings.params import V1_STEP_SIZE, SegretParams
from segret_lib.testing.cfg import CFGModel
from segret_lib.testing.thirdparty import k_diffusion

from .dataset import COLOURS, SHAPES, SIZE
from .detector import detect, grain, judge, stray_share
from .model import WEIGHTS, ShapesLDM, load
from .stats import sign_test_p

BIND_WEIGHT = 0.25  # chosen on the tune family (quality/results/matrix_bind_tune2)
VARIANTS: dict[str, dict | None] = {
    "plain": None,
    "astar": {},
    "astar_v1": {"step_rule": "v1", "step_size": V1_STEP_SIZE},  # the defaults before the balanced rule
    "seg_only": {"ret_weight": 0.0},
    "ret_only": {"seg_weight": 0.0},
    "aae": {"method": "aae"},  # Attend-and-Excite with its published schedule (first half, iterative steps)
    "both": {"method": "both"},  # A-STAR's two losses plus A&E's at its default weight, A-STAR's schedule
    "astar_steady": {"step_rule": "steady"},  # A-STAR's default rule before "early": steady on every step
    "astar_bind": {"bind_weight": BIND_WEIGHT},  # A-STAR with attribute binding (engine/binding.py), tuned weight
    "both_quarter": {"method": "both", "excite_weight": 0.25},  # Both with a quarter of A&E's term (its default)
    "both_one": {"method": "both", "excite_weight": 1.0},  # Both before its default weight became 0.25
}
SAMPLERS = ("euler", "euler_a", "dpmpp_2m_k", "ddim")
"""Euler, Euler a (ancestral, eta 1), DPM++ 2M on Karras sigmas (the WebUI's "DPM++ 2M Karras") and DDIM (eta 0):
the samplers WebUI users run most."""
OBJECT_RE = re.compile(rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\b")


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    concepts: tuple[str, ...]
    objects: tuple[tuple[str, str], ...]


def read_prompts(path: Path) -> list[PromptSpec]:
    """Parse a prompt file (`prompt | concepts` per line)."""
    specs = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        prompt, _, concepts = (part.strip() for part in line.partition("|"))
        objects = tuple(OBJECT_RE.findall(prompt.lower()))
        if not objects:
            raise ValueError(f"no '<colour> <shape>' object in prompt {prompt!r} (colours {list(COLOURS)}, "
                             f"shapes {list(SHAPES)})")
        specs.append(PromptSpec(prompt, tuple(c.strip() for c in concepts.split(",") if c.strip()), objects))
    return specs


NOISES = ("unit", "raw")
"""Start noise of the benchmark: "unit" (each image's draw with its mean colour removed and scaled to RMS 1, the
default) or "raw" (the mean removed only: every result in quality/results before the noise fix)."""


def _unit_rms(noise: torch.Tensor) -> torch.Tensor:
    return noise / noise.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()


def seed_noise(seeds: Sequence[int], noise: str = "unit") -> torch.Tensor:
    """Gaussian noise [len(seeds), 3, SIZE, SIZE], one generator per seed (same in every process), with each
    image's mean colour removed and (noise "unit") its RMS set to 1.

    The mean: an eps-prediction model with non-zero terminal SNR cannot tell the start noise's mean colour from
    the image's (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"): on this 32x32
    pixel model that mean, 1/32 of sigma_max = 0.8 per channel, survived as a whole-image tint (border colour
    std 0.23 over 16 seeds, correlation 0.97 with the noise mean; 0.02 without the mean), which washed out
    object colours.

    The RMS: a draw of 3072 values has an RMS of 1 +- 0.013 (one sd; SD1.5's 16384-value latent at 512 px:
    +- 0.0055), and the model cannot see it (its GroupNorm layers remove the input's scale), so it removes noise
    of RMS 1: at sigma_max = 25.8 a draw of RMS 1.015 leaves 0.38 of noise in the first prediction of the clean
    image, and the image ends as noise. Before this fix the seed decided the grain (stray pixels 99 % seed in a
    crossed cell; seeds 500-563, Euler 10 steps: noise RMS against stray r = 0.77, 18 of 64 seeds ended as
    noise); with it no seed does (quality/README.md, "Why the seed decided"). Each fix drops 3 + 1 of 3072
    degrees of freedom."""
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    draw = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(int(s)))
                      for s in seeds])
    draw = draw - draw.mean(dim=(2, 3), keepdim=True)
    return _unit_rms(draw) if noise == "unit" else draw


def seed_noise_sampler(seeds: Sequence[int], noise: str = "unit"):
    """The ancestral samplers' per-step noise, one generator per image seeded from its seed (apart from the start
    noise's), so an image's noise does not depend on the batch it is sampled in and plain and refined runs of
    the same seed get the same noise; with noise "unit" each draw has RMS 1 per image, as the start noise."""
    gens = [torch.Generator().manual_seed(1_000_003 + 7919 * int(s)) for s in seeds]

    def sample(_sigma, _sigma_next) -> torch.Tensor:
        draw = torch.cat([torch.randn(1, 3, SIZE, SIZE, generator=g) for g in gens])
        return _unit_rms(draw) if noise == "unit" else draw

    return sample


@dataclass
class Engine:
    """The trained model, its k-diffusion denoiser, and a builder for SegretSessions."""

    model: ShapesLDM
    noise: str = "unit"  # NOISES
    denoiser: object = field(init=False)

    def __post_init__(self) -> None:
        _, external = k_diffusion()
        self.denoiser = external.CompVisDenoiser(self.model)

    def session(self, specs: Sequence[PromptSpec], params: SegretParams) -> SegretSession:
        """A session for one batch; each image gets its own prompt's concepts (params holds the settings)."""
        text = self.model.text
        session, warnings = session_for_prompts(params, self.model.unet, [text.prompt_tokens(s.prompt) for s in specs],
                                                text.encode, text.decode, [spec.concepts for spec in specs])
        for spec, dropped in zip(specs, warnings, strict=True):
            if dropped:
                raise ValueError(f"{spec.prompt!r}: {'; '.join(dropped)}")
        return session

    @torch.no_grad()
    def sample(self, specs: Sequence[PromptSpec], seeds: Sequence[int], sampler: str, steps: int, cfg: float,
               params: SegretParams | None) -> tuple[torch.Tensor, SegretSession | None]:
        """Images [n, 3, SIZE, SIZE] in [0, 1], one per (prompt, seed) row."""
        n = len(seeds)
        if len(specs) != n:
            raise ValueError("one prompt per seed is needed")
        cond = self.model.text([spec.prompt for spec in specs])
        uncond = self.model.text([""] * n)
        session = self.session(specs, params) if params is not None else None
        noise = seed_noise(seeds, self.noise)
        try:
            if sampler == "ddim":
                out = self._ddim(noise, cond, uncond, steps, cfg, session)
            elif sampler in SAMPLERS:
                out = self._k_sample(sampler, noise, seeds, cond, uncond, steps, cfg, session)
            else:
                raise ValueError(f"unknown sampler {sampler!r}: one of {SAMPLERS}")
        finally:
            if session is not None:
                session.close()
        return ((out.clamp(-1, 1) + 1) / 2).float(), session

    def _k_sample(self, sampler: str, noise: torch.Tensor, seeds: Sequence[int], cond, uncond, steps: int,
                  cfg: float, session: SegretSession | None) -> torch.Tensor:
        """A k-diffusion sampler as the WebUI drives it (one model call per step for these three)."""
        ks, _ = k_diffusion()
        if sampler == "dpmpp_2m_k":  # the WebUI's Karras sigmas span the model's own sigma range
            sigmas = ks.get_sigmas_karras(steps, float(self.denoiser.sigma_min), float(self.denoiser.sigma_max))
        else:
            sigmas = self.denoiser.get_sigmas(steps)
        # pixel space: the guided prediction is clipped to [-1, 1] (the DDIM loop below clips x0 too)
        model = CFGModel(self.denoiser, cond, uncond, cfg, session, clip_denoised=True)
        if session is not None:
            session.begin_pass(PassInfo((SIZE, SIZE), steps, "sigma", "first_order"))
        x = noise * sigmas[0]
        if sampler == "euler":
            return ks.sample_euler(model, x, sigmas, callback=model.callback, disable=True)
        if sampler == "euler_a":
            return ks.sample_euler_ancestral(model, x, sigmas, callback=model.callback, disable=True,
                                             noise_sampler=seed_noise_sampler(seeds, self.noise))
        return ks.sample_dpmpp_2m(model, x, sigmas, callback=model.callback, disable=True)

    def _ddim(self, z: torch.Tensor, cond, uncond, steps: int, cfg: float,
              session: SegretSession | None) -> torch.Tensor:
        """Deterministic DDIM (eta 0) on integer timesteps, WebUI-style uniform spacing; the session sees
        the DDPM latent and the timestep ("timestep" parameterization)."""
        ac = self.model.alphas_cumprod
        stride = len(ac) // steps
        ts = [min(i * stride + 1, len(ac) - 1) for i in range(steps)][::-1]
        unet = self.model.unet

        def run_unet(x, t, rows):
            return unet(x, t, context=cond[list(rows)])

        if session is not None:
            session.begin_pass(PassInfo((SIZE, SIZE), steps, "timestep", "first_order"))
        n = z.shape[0]
        for i, t in enumerate(ts):
            tt = torch.full((n,), float(t))
            if session is not None:
                session.before_model_call(z, tt, run_unet)
            e = unet(torch.cat([z, z]), torch.cat([tt, tt]), context=torch.cat([cond, uncond]))
            eps = e[n:] + (e[:n] - e[n:]) * cfg
            a = ac[t]
            a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x0 = ((z - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)  # pixel-space DDIM clips x0
            eps = (z - a.sqrt() * x0) / (1 - a).sqrt()
            z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            if session is not None:
                session.on_sampler_callback()
        return z


@dataclass
class Record:
    prompt: str
    seed: int
    present: list[bool]
    all_present: bool
    binding_ok: bool | None
    seg_first: float | None
    seg_last: float | None
    stray: float = 0.0
    colours_present: bool = False  # every requested colour drawn (any shape): the neglect signal alone
    grain: float | None = None  # detector.grain (pixel noise off the edges); None in records made before it


def has_grain(records: Sequence[Record]) -> bool:
    """Whether every record carries grain (records made before it have None)."""
    return all(r.grain is not None for r in records)


def grain_text(value: float | None) -> str:
    """A grain value for a table, "-" when the records had none."""
    return f"{value:.4f}" if value is not None else "-"


def run_variant(engine: Engine, specs: Sequence[PromptSpec], seeds: Sequence[int], sampler: str, steps: int,
                cfg: float, changes: dict | None, base: dict, batch: int = 128,
                keep_images: int = 0) -> tuple[list[Record], float, list[np.ndarray]]:
    """Sample and judge every prompt x seed (batches mix prompts); returns records, seconds per image and the
    first `keep_images` images (seed-major order: every prompt's first seed first)."""
    pairs = [(i, s) for s in seeds for i in range(len(specs))]
    settings = None if changes is None else {**base, **changes}
    images: list[np.ndarray] = []
    records, spi = run_pairs(engine, specs, pairs, sampler, steps, cfg, settings, batch, images, keep_images)
    return records, spi, images


def run_pairs(engine: Engine, specs: Sequence[PromptSpec], pairs: Sequence[tuple[int, int]], sampler: str,
              steps: int, cfg: float, settings: dict | None, batch: int = 128, images: list | None = None,
              keep_images: int = 0) -> tuple[list[Record], float]:
    """Sample and judge the (prompt index, seed) pairs in batches; settings None = plain sampling, else A-STAR
    with these settings on top of the defaults. Returns the records and seconds per image; the first
    `keep_images` images are appended to `images`."""
    jobs = [(specs[i], int(s)) for i, s in pairs]
    records: list[Record] = []
    start = time.perf_counter()
    for lo in range(0, len(jobs), batch):
        part = jobs[lo:lo + batch]
        params = None
        if settings is not None:  # settings as one would enter them; concepts are per image (each prompt's own)
            params = SegretParams.create(**{"enabled": True, "concepts": part[0][0].concepts, **settings})
        imgs, session = engine.sample([j[0] for j in part], [j[1] for j in part], sampler, steps, cfg, params)
        segs = _seg_per_image(session, len(part)) if session is not None else [(None, None)] * len(part)
        for img, (spec, s), seg in zip(imgs.permute(0, 2, 3, 1).numpy(), part, segs, strict=True):
            v = judge(detect(img), spec.objects)
            records.append(Record(spec.prompt, int(s), list(v.present), v.all_present,
                                  (all(v.present) if v.binding_testable else None), *seg, stray_share(img),
                                  all(v.colour_present), grain(img)))
            if images is not None and len(images) < keep_images:
                images.append(img)
    n = max(len(records), 1)
    return records, (time.perf_counter() - start) / n


def _seg_per_image(session: SegretSession, n: int) -> list[tuple[float | None, float | None]]:
    """L_seg at the first and the last refined step: the batch mean, given to each image of the batch (the
    engine reports losses summed over the images it refined together)."""
    results = [r for p in session.passes for r in p.results if "seg" in r.parts]
    if not results:
        return [(None, None)] * n
    first = results[0].parts["seg"] / max(results[0].images, 1)
    last = results[-1].parts["seg"] / max(results[-1].images, 1)
    return [(first, last)] * n


def summarize(records: Sequence[Record], plain: Sequence[Record] | None, s_per_image: float) -> dict:
    """Rates of one variant, and fixed/broken counts against the plain records of the same prompts and seeds."""
    n = len(records)
    objs = [p for r in records for p in r.present]
    testable = [r.binding_ok for r in records if r.binding_ok is not None]
    firsts = [r.seg_first for r in records if r.seg_first is not None]
    lasts = [r.seg_last for r in records if r.seg_last is not None]
    out = {
        "n": n,
        "all_present": float(np.mean([r.all_present for r in records])) if n else 0.0,
        "all_colours": float(np.mean([r.colours_present for r in records])) if n else 0.0,
        "object_recall": float(np.mean(objs)) if objs else 0.0,
        "binding_accuracy": float(np.mean(testable)) if testable else None,
        "binding_n": len(testable),
        "seg_first": float(np.mean(firsts)) if firsts else None,
        "seg_last": float(np.mean(lasts)) if lasts else None,
        "stray_pixels": float(np.mean([r.stray for r in records])) if n else 0.0,
        "grain": float(np.mean([r.grain for r in records])) if n and has_grain(records) else None,
        "s_per_image": s_per_image,
    }
    if plain is not None:
        base = {(r.prompt, r.seed): r.all_present for r in plain}
        out["fixed"] = sum(r.all_present and not base[(r.prompt, r.seed)] for r in records)
        out["broken"] = sum(base[(r.prompt, r.seed)] and not r.all_present for r in records)
        colours = {(r.prompt, r.seed): r.colours_present for r in plain}
        out["colours_fixed"] = sum(r.colours_present and not colours[(r.prompt, r.seed)] for r in records)
        out["colours_broken"] = sum(colours[(r.prompt, r.seed)] and not r.colours_present for r in records)
        out["sign_p"] = sign_test_p(out["fixed"], out["broken"])
        out["colours_sign_p"] = sign_test_p(out["colours_fixed"], out["colours_broken"])
    return out


def seg_text(s: dict) -> str:
    """A summary's mean L_seg at the first and the last refined step, or "-" without a segregation term."""
    return f"{s['seg_first']:.3f}->{s['seg_last']:.3f}" if s["seg_first"] is not None else "-"


def format_table(summaries: dict[str, dict]) -> str:
    head = ("| variant | n | all objects | fixed | broken | p | object recall | colour binding | all colours "
            "| fixed | broken | p | L_seg first->last | stray px | grain | s/image |")
    rows = [head, "|" + "---|" * 16]
    for name, s in summaries.items():
        seg = seg_text(s)
        bind = f"{s['binding_accuracy']:.3f} (n={s['binding_n']})" if s["binding_accuracy"] is not None else "-"
        p, cp = (f"{s[k]:.2g}" if k in s else "-" for k in ("sign_p", "colours_sign_p"))
        rows.append(f"| {name} | {s['n']} | {s['all_present']:.3f} | {s.get('fixed', '-')} | {s.get('broken', '-')} "
                    f"| {p} | {s['object_recall']:.3f} | {bind} | {s['all_colours']:.3f} "
                    f"| {s.get('colours_fixed', '-')} | {s.get('colours_broken', '-')} | {cp} | {seg} "
                    f"| {s['stray_pixels']:.3f} | {grain_text(s.get('grain'))} | {s['s_per_image']:.3f} |")
    return "\n".join(rows)


def save_grid(columns: dict[str, list[np.ndarray]], path: Path, scale: int = 3, limit: int = 12) -> None:
    """PNG: one row per prompt/seed pair, one column per variant (same seeds)."""
    from PIL import Image, ImageDraw

    names = list(columns)
    rows = min(limit, *(len(v) for v in columns.values()))
    cell, pad, head = SIZE * scale, 4, 14
    grid = Image.new("RGB", (len(names) * (cell + pad) + pad, head + rows * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(names):
        draw.text((pad + c * (cell + pad), 1), name, fill=(0, 0, 0))
        for r in range(rows):
            img = Image.fromarray((columns[name][r] * 255).round().astype(np.uint8)).resize((cell, cell),
                                                                                           Image.NEAREST)
            grid.paste(img, (pad + c * (cell + pad), head + pad + r * (cell + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=16, help="seeds per prompt (0..N-1 after --seed-offset)")
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--sampler", choices=SAMPLERS, default="euler")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--noise", choices=NOISES, default="unit", help="start noise (seed_noise): unit RMS or raw")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="A-STAR setting for every refined variant, e.g. step_size=40")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=None, help="JSON results path (a PNG grid is written beside it)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--batch", type=int, default=128, help="images sampled together (prompts mixed)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = read_prompts(args.prompts)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    base = dict(kv.split("=", 1) for kv in args.set)
    engine = Engine(load(args.weights), noise=args.noise)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if "plain" not in names:
        names.insert(0, "plain")
    results, summaries, grids = {}, {}, {}
    for name in names:
        records, spi, imgs = run_variant(engine, specs, seeds, args.sampler, args.steps, args.cfg, VARIANTS[name],
                                         base, args.batch, keep_images=12)
        results[name] = records
        grids[name] = imgs
        summaries[name] = summarize(records, results.get("plain") if name != "plain" else None, spi)
    table = format_table(summaries)
    print(f"{len(specs)} prompts x {len(seeds)} seeds, {args.sampler} {args.steps} steps, cfg {args.cfg}, "
          f"settings {base or 'defaults'}")
    print(table)
    report = {"config": {k: str(v) for k, v in vars(args).items()}, "summaries": summaries,
              "records": {k: [vars(r) for r in v] for k, v in results.items()}}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        save_grid(grids, args.out.with_suffix(".png"))  # a column per variant, in the order given
    return report


if __name__ == "__main__":
    main()
