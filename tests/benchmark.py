"""Benchmark (not a test): plain denoising vs. A-STAR and Attend-and-Excite refinement on the full SD1.5 and SDXL
UNet architectures.

Random weights (nothing is downloaded); real ldm UNet, real k-diffusion Euler sampler with classifier-free
guidance (cond + uncond batch), real CLIP tokenizer for the concept positions. SDXL is the ldm UNetModel with
SDXL's layout (model_channels 320, channel_mult (1, 2, 4), transformer depth 0/2/10 per level and 10 in the
middle, linear projections, 64-channel heads, context 2048, a 2816-wide ADM vector embedding: about 2.6 G
parameters); its ADM input is a fixed random vector.

    python tests/benchmark.py                   # CUDA if present (fp16, 512 px, SDXL 1024 px), else CPU (fp32)
    python tests/benchmark.py --device cpu --size 256 --steps 3 --rounds 5 --threads 1   # a shared CPU
    python tests/benchmark.py --arch sd15,sdxl --sdxl-size 256     # SDXL scaled down (on CPU 1024 px is minutes)
    python tests/benchmark.py --attention naive      # ldm's own attention instead of the WebUI's default sdp

Noise: the modes are interleaved. Each round runs every mode `--repeat` times, in an order rotated by one from
round to round; a mode's time per step is the median over all its runs, and its ratio to plain is computed per
round (each round's median against the same round's plain) and reported as the median with the min and max
over the rounds, so one busy moment spoils one round's ratio, not the result.

Memory, per run: CUDA: torch.cuda.max_memory_allocated minus the allocation before the run. CPU: the peak RSS
(Linux /proc/self/clear_refs resets it before each run) minus the RSS at the start of the run; the median over
the runs is reported. All modes share one process, whose allocator keeps memory that earlier runs freed: the
CPU figure is a lower bound that hardly separates the modes; compare memory on a GPU.

Host cost: before the timed rounds, one A-STAR sampling (and one Attend-and-Excite one) per concept count runs
under segret_lib.testing.profiling's counter, and the dispatched torch ops and the host-device synchronisations of each
refined step are printed (the UNet's forward and backward included).

Modes: A-STAR (every step, one update each), A-STAR without the early exit, A-STAR in Low VRAM mode,
Attend-and-Excite with its published schedule (first half of the steps, iterative refinement at steps 0, 10, 20
of 50 scaled; with random weights its thresholds are rarely reached, so those steps take the full 20 updates:
a worst case), and Attend-and-Excite with one update on every step (the cost per refined step, next to A-STAR's).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segret_lib.engine.session import PassInfo, SegretSession  # noqa: E402
from segret_lib.engine.session_factory import session_for_prompts  # noqa: E402
from segret_lib.settings.params import SegretParams  # noqa: E402
from segret_lib.testing.cfg import CFGModel  # noqa: E402
from segret_lib.testing.profiling import per_refined_step  # noqa: E402
from segret_lib.testing.thirdparty import k_diffusion  # noqa: E402
from segret_lib.testing.tiny_models import TinyLDM, TinyTextEncoder, sdp_attention_forward  # noqa: E402

PROMPT = "a photo of a cat and a dog with a bird and a horse"
ALL_CONCEPTS = ("cat", "dog", "bird", "horse")
# A-STAR's modes refine every step ("steady"), so s/step is the cost of a refined step, as in every earlier table;
# the default rule ("early") refines the first half of the steps, so a whole image costs about half the extra time.
EVERY_STEP = {"step_rule": "steady"}
MODES = {
    "plain": None,
    "astar": {"early_exit": True, **EVERY_STEP},
    "astar_no_early_exit": {"early_exit": False, **EVERY_STEP},
    "astar_low_vram": {"low_vram": True, **EVERY_STEP},
    "aae": {"method": "aae"},  # its published schedule
    "aae_every_step": {"method": "aae", "iterative": False, "last_step": 10000},  # one update per step
}
CPU_MODES = ("plain", "astar", "astar_low_vram", "aae_every_step")


def sd15_unet():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                     num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                     transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False)
    return unet.eval().requires_grad_(False)


def sdxl_unet():
    """SDXL's UNet layout on ldm's UNetModel (which takes one transformer depth for all levels): built with depth
    10, then the 640-channel level's transformers keep their first 2 blocks; the ADM embedding is added the way
    sgm builds it (num_classes 'sequential'). This ldm's SpatialTransformer takes one context per block: AdmLDM
    passes the context as a list of 10."""
    from ldm.modules.attention import SpatialTransformer
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from torch import nn

    torch.manual_seed(0)
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2],
                     num_res_blocks=2, channel_mult=[1, 2, 4], num_head_channels=64, use_spatial_transformer=True,
                     use_linear_in_transformer=True, transformer_depth=10, context_dim=[2048] * 10,
                     use_checkpoint=False, legacy=False)
    for module in unet.modules():
        if isinstance(module, SpatialTransformer) and module.in_channels == 640:
            module.transformer_blocks = module.transformer_blocks[:2]
    unet.num_classes = "sequential"
    unet.label_emb = nn.Sequential(nn.Linear(2816, 1280), nn.SiLU(), nn.Linear(1280, 1280))
    return unet.eval().requires_grad_(False)


class AdmLDM(TinyLDM):
    """TinyLDM for a UNet that also takes SDXL's ADM vector y (a fixed random vector here)."""

    def __init__(self, unet) -> None:
        super().__init__(unet)
        self.register_buffer("adm", torch.randn(1, 2816, generator=torch.Generator().manual_seed(2)))

    def apply_model(self, x, t, cond):
        context = torch.cat(cond["c_crossattn"], 1)
        y = self.adm.expand(x.shape[0], -1).to(x.dtype)
        return self.model.diffusion_model(x, t, context=[context] * 10, y=y)


class Bench:
    def __init__(self, arch: str, device: str, size: int, batch: int, attention: str) -> None:
        if attention == "sdp":  # what the WebUI's default optimisation does: replace forward on the class
            from ldm.modules.attention import CrossAttention

            CrossAttention.forward = sdp_attention_forward
        self.arch = arch
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        unet = (sdxl_unet() if arch == "sdxl" else sd15_unet()).to(self.device, self.dtype)
        self.ldm = (AdmLDM(unet) if arch == "sdxl" else TinyLDM(unet)).to(self.device)
        _, external = k_diffusion()
        self.denoiser = external.CompVisDenoiser(self.ldm)
        encoder = TinyTextEncoder(dim=2048 if arch == "sdxl" else 768)
        self.cond = encoder([PROMPT] * batch).to(self.device, self.dtype)
        self.uncond = encoder([""] * batch).to(self.device, self.dtype)
        self.prompt_tokens = encoder.prompt_tokens(PROMPT)
        self.encode = encoder.encode
        del encoder
        self.latent = size // 8
        self.size = size
        self.batch = batch
        self.unet = unet

    def session(self, mode: str, steps: int, n_concepts: int = 2) -> SegretSession:
        concepts = ALL_CONCEPTS[:n_concepts]
        params = SegretParams.create(enabled=True, concepts=concepts, **MODES[mode])
        session, warnings = session_for_prompts(params, self.unet, [self.prompt_tokens] * self.batch, self.encode)
        assert not any(warnings), warnings
        session.begin_pass(PassInfo((self.latent, self.latent), steps))
        return session

    def run(self, mode: str, steps: int, n_concepts: int = 2, counted: bool = False) -> dict:
        sampling, _ = k_diffusion()
        session = self.session(mode, steps, n_concepts) if MODES[mode] is not None else None
        model = CFGModel(self.denoiser, self.cond, self.uncond, 7.0, session)
        sigmas = self.denoiser.get_sigmas(steps).to(self.device)
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(self.batch, 4, self.latent, self.latent, generator=g) * sigmas[0].cpu()).to(self.device)
        counts = []
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = reset_rss_peak()
        start = time.perf_counter()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype,
                                                 enabled=self.dtype != torch.float32):
                if counted and session is not None:
                    with per_refined_step(session) as counts:
                        out = sampling.sample_euler(model, x, sigmas, callback=model.callback, disable=True)
                else:
                    out = sampling.sample_euler(model, x, sigmas, callback=model.callback, disable=True)
        finally:
            if session is not None:
                session.close()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else rss_peak_mib() - base
        result = {"s_per_step": elapsed / steps, "peak_mib": peak, "finite": bool(torch.isfinite(out).all())}
        if counts:
            result["syncs"] = [c.syncs for c in counts]
            result["ops"] = [c.ops for c in counts]
            result["sync_sources"] = dict(sum((c.syncs_by for c in counts), start=type(counts[0].syncs_by)()))
        if session is not None:
            res = session.passes[0].results
            result["seg_first"] = res[0].parts.get("seg", 0.0) / self.batch
            result["seg_last"] = res[-1].parts.get("seg", 0.0) / self.batch
            result["ret_last"] = res[-1].parts.get("ret", 0.0) / self.batch
            result["aae_first"] = res[0].parts.get("aae", 0.0) / self.batch
            result["aae_last"] = res[-1].parts.get("aae", 0.0) / self.batch
            result["refined_steps"] = sum(r.updates > 0 for r in res)
            result["updates"] = sum(r.updates for r in res)
            result["warnings"] = session.warnings
        return result


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_rss_peak() -> float:
    """Reset the process's peak RSS (Linux clear_refs 5) and return the current RSS in MiB; without /proc,
    fall back to the lifetime peak (ru_maxrss), which then includes building the model."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        current = _status_mib("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return rss_peak_mib()


def rss_peak_mib() -> float:
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def host_cost(bench: Bench, counts: list[int], steps: int) -> dict:
    """Ops and syncs per refined step of A-STAR (and A&E, one update per step) for each concept count."""
    out = {}
    for mode in ("astar", "aae_every_step"):
        for n in counts:
            r = bench.run(mode, steps, n, counted=True)
            out[f"{mode}/{n}"] = {"concepts": n, "mode": mode, "syncs": r["syncs"], "ops": r["ops"],
                                  "sync_sources": r["sync_sources"]}
            print(f"  counted {mode} with {n} concepts: syncs per refined step {r['syncs']}, ops {r['ops']}",
                  flush=True)
    return out


def timed_rounds(bench: Bench, modes: list[str], steps: int, rounds: int, repeat: int) -> dict:
    """Interleaved rounds; per mode the median time and memory over all runs, per-round ratios to plain."""
    for mode in modes:  # warm-up
        bench.run(mode, 1)
    runs: dict[str, list[list[dict]]] = {m: [] for m in modes}
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for mode in order:
            runs[mode].append([bench.run(mode, steps) for _ in range(repeat)])
        line = ", ".join(f"{m} {statistics.median(x['s_per_step'] for x in runs[m][-1]):.3f}" for m in modes)
        print(f"  round {r + 1}/{rounds}: s/step {line}", flush=True)
    results = {}
    for mode in modes:
        flat = [x for rnd in runs[mode] for x in rnd]
        last = flat[-1]
        per_round = [statistics.median(x["s_per_step"] for x in rnd) for rnd in runs[mode]]
        results[mode] = {"s_per_step": statistics.median(x["s_per_step"] for x in flat),
                         "s_per_step_rounds": per_round,
                         "peak_mib": statistics.median(x["peak_mib"] for x in flat),
                         **{k: v for k, v in last.items() if k not in ("s_per_step", "peak_mib")}}
    if "plain" in results:
        plain = results["plain"]["s_per_step_rounds"]
        for mode, res in results.items():
            if mode != "plain":
                ratios = [a / p for a, p in zip(res["s_per_step_rounds"], plain, strict=True)]
                res["ratio_rounds"] = ratios
                res["ratio_median"] = statistics.median(ratios)
    return results


def report(arch: str, args, size: int, name: str, results: dict, counts: dict) -> None:
    gpu = args.device.startswith("cuda")
    print(f"\nA-STAR benchmark: {arch.upper()} UNet (random weights), {name}, torch {torch.__version__}, "
          f"{'fp16' if gpu else 'fp32'}, {args.attention} attention, {size}x{size}, batch {args.batch}, "
          f"{args.steps} Euler steps, CFG, {args.rounds} interleaved rounds x {args.repeat}")
    if results:
        print_times(args, results, gpu)
    if counts:
        print("host cost per refined step (counted with segret_lib.testing.profiling; UNet forward + backward "
              "included):")
        for c in counts.values():
            print(f"  {c['mode']:<16}{c['concepts']} concepts: syncs {c['syncs']}, ops {c['ops']}, "
                  f"sync sources {c['sync_sources']}")


def print_times(args, results: dict, gpu: bool) -> None:
    print(f"memory: {'CUDA allocated above the loaded model' if gpu else 'peak RSS above the loaded model'}, "
          "median of the runs")
    print(f"{'mode':<22}{'s/step':>9}{'x plain':>9}{'min-max':>13}{'peak MiB':>10}{'updates':>9}"
          f"{'L_seg first->last':>19}{'L_A&E first->last':>19}")
    for mode, r in results.items():
        ratio = f"x{r['ratio_median']:.2f}" if "ratio_median" in r else "-"
        spread = (f"{min(r['ratio_rounds']):.2f}-{max(r['ratio_rounds']):.2f}" if "ratio_rounds" in r else "-")
        seg = f"{r['seg_first']:.3f}->{r['seg_last']:.3f}" if r.get("seg_first") or r.get("seg_last") else "-"
        aae = f"{r['aae_first']:.3f}->{r['aae_last']:.3f}" if r.get("aae_first") or r.get("aae_last") else "-"
        updates = f"{r['updates']}/{args.steps}" if "updates" in r else "-"
        print(f"{mode:<22}{r['s_per_step']:>9.3f}{ratio:>9}{spread:>13}{r['peak_mib']:>10.0f}{updates:>9}{seg:>19}"
              f"{aae:>19}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="sd15", help="comma-separated: sd15, sdxl")
    ap.add_argument("--size", type=int, default=None, help="SD1.5 image size in px (default 512 GPU, 256 CPU)")
    ap.add_argument("--sdxl-size", type=int, default=None, help="SDXL image size in px (default 1024 GPU, 256 CPU)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 20 GPU, 3 CPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5 GPU, 3 CPU; 0: count only)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each mode per round")
    ap.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)} (default: all on a GPU, "
                                                  f"{', '.join(CPU_MODES)} on the CPU)")
    ap.add_argument("--count", default="2,3,4", help="concept counts whose ops and syncs are counted ('' for none)")
    ap.add_argument("--count-steps", type=int, default=2, help="sampling steps of each counted run")
    ap.add_argument("--attention", choices=("sdp", "naive"), default="sdp",
                    help="CrossAttention forward: torch sdp (the WebUI's default) or ldm's own")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    args.size = args.size or (512 if gpu else 256)
    args.sdxl_size = args.sdxl_size or (1024 if gpu else 256)
    args.steps = args.steps or (20 if gpu else 3)
    args.rounds = args.rounds if args.rounds is not None else (5 if gpu else 3)
    modes = (args.modes or ",".join(MODES if gpu else CPU_MODES)).split(",")
    counts = [int(c) for c in args.count.split(",") if c]
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name() if gpu else "CPU"
    everything = {"args": vars(args), "device": name, "torch": torch.__version__, "archs": {}}
    for arch in args.arch.split(","):
        size = args.sdxl_size if arch == "sdxl" else args.size
        print(f"{arch}: building the UNet ({size}x{size})", flush=True)
        bench = Bench(arch, args.device, size, args.batch, args.attention)
        counted = host_cost(bench, counts, args.count_steps) if counts else {}
        results = timed_rounds(bench, modes, args.steps, args.rounds, args.repeat) if args.rounds else {}
        report(arch, args, size, name, results, counted)
        everything["archs"][arch] = {"size": size, "results": results, "host_cost": counted}
        del bench
        gc.collect()
    if args.out:
        Path(args.out).write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
