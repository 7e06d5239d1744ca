"""Benchmark (not a test): plain denoising vs. A-STAR and Attend-and-Excite refinement on the full SD1.5 UNet
architecture.

Random weights (nothing is downloaded); real ldm UNet, real k-diffusion Euler sampler with classifier-free
guidance (cond + uncond batch), real CLIP tokenizer for the concept positions. Prints time per step and peak
memory of each mode and their ratios, all measured in one run.

    python tests/benchmark.py                  # CUDA if present (fp16, 512 px), else CPU (fp32, 256 px)
    python tests/benchmark.py --device cpu --size 256 --steps 3
    python tests/benchmark.py --attention naive     # ldm's own attention instead of the WebUI's default sdp

CPU memory: each mode runs in a fresh subprocess; the peak RSS is reset after the model is built (Linux
/proc/self/clear_refs), and the peak during sampling minus the RSS at that point is the mode's working
memory. CUDA memory: torch.cuda.max_memory_allocated minus the allocation after the model is built.

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
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segret_lib.capture import cross_attention_modules  # noqa: E402
from segret_lib.checkpointing import unet_blocks  # noqa: E402
from segret_lib.params import SegretParams  # noqa: E402
from segret_lib.session import PassInfo, SegretSession  # noqa: E402
from segret_lib.tokens import map_concepts  # noqa: E402
from tests.cfg_host import CFGModel  # noqa: E402
from tests.thirdparty import k_diffusion  # noqa: E402
from tests.tiny_models import TinyLDM, TinyTextEncoder, sdp_attention_forward  # noqa: E402

PROMPT = "a photo of a cat and a dog"
CONCEPTS = ("cat", "dog")
MODES = {
    "plain": None,
    "astar": {"early_exit": True},
    "astar_no_early_exit": {"early_exit": False},
    "astar_low_vram": {"low_vram": True},
    "aae": {"method": "aae"},  # its published schedule
    "aae_every_step": {"method": "aae", "iterative": False, "last_step": 10000},  # one update per step
}


def sd15_unet():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                     num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                     transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False)
    return unet.eval().requires_grad_(False)


class Bench:
    def __init__(self, device: str, size: int, batch: int, attention: str) -> None:
        if attention == "sdp":  # what the WebUI's default optimisation does: replace forward on the class
            from ldm.modules.attention import CrossAttention

            CrossAttention.forward = sdp_attention_forward
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        unet = sd15_unet().to(self.device, self.dtype)
        self.ldm = TinyLDM(unet).to(self.device)
        _, external = k_diffusion()
        self.denoiser = external.CompVisDenoiser(self.ldm)
        encoder = TinyTextEncoder(dim=768)
        self.cond = encoder([PROMPT] * batch).to(self.device, self.dtype)
        self.uncond = encoder([""] * batch).to(self.device, self.dtype)
        pt = encoder.prompt_tokens(PROMPT)
        found, warnings = map_concepts(pt, CONCEPTS, encoder.encode)
        assert not warnings, warnings
        self.concepts, self.n_real = [found] * batch, [pt.n_real] * batch
        self.latent = size // 8
        self.batch = batch
        self.unet = unet

    def run(self, mode: str, steps: int) -> dict:
        sampling, _ = k_diffusion()
        session = None
        if MODES[mode] is not None:
            params = SegretParams.create(enabled=True, concepts=CONCEPTS, **MODES[mode])
            session = SegretSession(params, cross_attention_modules(self.unet), self.concepts, self.n_real,
                                    blocks=unet_blocks(self.unet))
            session.begin_pass(PassInfo((self.latent, self.latent), steps))
        model = CFGModel(self.denoiser, self.cond, self.uncond, 7.0, session)
        sigmas = self.denoiser.get_sigmas(steps).to(self.device)
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(self.batch, 4, self.latent, self.latent, generator=g) * sigmas[0].cpu()).to(self.device)
        self.sync()
        start = time.perf_counter()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype,
                                                 enabled=self.dtype != torch.float32):
                out = sampling.sample_euler(model, x, sigmas, callback=model.callback, disable=True)
        finally:
            if session is not None:
                session.close()
        self.sync()
        elapsed = time.perf_counter() - start
        result = {"seconds": elapsed, "finite": bool(torch.isfinite(out).all())}
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

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


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


def measure(mode: str, args) -> dict:
    """Build the model, warm up, time `repeat` runs; peak memory of this mode's sampling."""
    bench = Bench(args.device, args.size, args.batch, args.attention)
    cuda = bench.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = reset_rss_peak()
    bench.run(mode, 1)  # warm-up
    times, last = [], {}
    for _ in range(args.repeat):
        last = bench.run(mode, args.steps)
        times.append(last["seconds"] / args.steps)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else rss_peak_mib() - base
    return {"mode": mode, "s_per_step": statistics.median(times), "peak_mib": peak,
            "weights_mib": base / 2**20 if cuda else base, **{k: v for k, v in last.items() if k != "seconds"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=None, help="image size in px (default 512 GPU, 256 CPU)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 20 GPU, 3 CPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per mode, median (default 3 GPU, 1 CPU)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--attention", choices=("sdp", "naive"), default="sdp",
                    help="CrossAttention forward: torch sdp (the WebUI's default) or ldm's own")
    ap.add_argument("--out", default=None, help="write the numbers as JSON")
    ap.add_argument("--single-mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    args.size = args.size or (512 if gpu else 256)
    args.steps = args.steps or (20 if gpu else 3)
    args.repeat = args.repeat or (3 if gpu else 1)
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.single_mode:
        print(json.dumps(measure(args.single_mode, args)))
        return
    modes = args.modes.split(",")
    results = {}
    for mode in modes:
        if gpu:  # one process; peaks are reset per mode
            results[mode] = measure(mode, args)
        else:  # fresh process per mode so each peak RSS is its own
            cmd = [sys.executable, __file__, "--single-mode", mode, "--device", args.device, "--size", str(args.size),
                   "--steps", str(args.steps), "--batch", str(args.batch), "--repeat", str(args.repeat),
                   "--attention", args.attention]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"  measured {mode}: {results[mode]['s_per_step']:.3f} s/step", flush=True)
    name = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"\nA-STAR benchmark: SD1.5 UNet (random weights), {name}, torch {torch.__version__}, "
          f"{'fp16' if gpu else 'fp32'}, {args.attention} attention, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} Euler steps, CFG, median of {args.repeat}")
    print(f"memory: {'CUDA allocated above the loaded model' if gpu else 'peak RSS above the loaded model'}")
    print(f"{'mode':<22}{'s/step':>10}{'peak MiB':>12}{'refined':>9}{'updates':>9}{'L_seg first->last':>20}"
          f"{'L_ret last':>12}{'L_A&E first->last':>20}")
    for mode, r in results.items():
        seg = f"{r['seg_first']:.3f}->{r['seg_last']:.3f}" if r.get("seg_first") or r.get("seg_last") else "-"
        ret = f"{r['ret_last']:.3f}" if r.get("ret_last") else "-"
        aae = f"{r['aae_first']:.3f}->{r['aae_last']:.3f}" if r.get("aae_first") or r.get("aae_last") else "-"
        refined = f"{r['refined_steps']}/{args.steps}" if "refined_steps" in r else "-"
        updates = str(r["updates"]) if "updates" in r else "-"
        print(f"{mode:<22}{r['s_per_step']:>10.3f}{r['peak_mib']:>12.0f}{refined:>9}{updates:>9}{seg:>20}{ret:>12}"
              f"{aae:>20}")
    plain = results.get("plain")
    ratios = {}
    if plain:
        for mode, r in results.items():
            if mode == "plain":
                continue
            ratios[mode] = {"time": r["s_per_step"] / plain["s_per_step"],
                            "memory": r["peak_mib"] / plain["peak_mib"] if plain["peak_mib"] >= 1 else None}
            mem = f"x{ratios[mode]['memory']:.2f}" if ratios[mode]["memory"] is not None else "n/a (plain peak < 1 MiB)"
            print(f"ratio {mode}/plain: time x{ratios[mode]['time']:.2f}, peak memory {mem}")
    if plain:  # what one update (forward + backward of the refinement) adds, comparable across methods
        for mode, r in results.items():
            if r.get("updates"):
                extra = (r["s_per_step"] - plain["s_per_step"]) * args.steps / r["updates"]
                ratios.setdefault(mode, {})["s_per_update"] = extra
                print(f"{mode}: {r['updates']} updates on {r['refined_steps']}/{args.steps} steps, "
                      f"+{extra:.3f} s per update over plain")
    if "astar" in results and "astar_no_early_exit" in results:
        a, b = results["astar"], results["astar_no_early_exit"]
        print(f"early exit saves: time x{b['s_per_step'] / a['s_per_step']:.2f}, "
              f"memory x{b['peak_mib'] / max(a['peak_mib'], 1.0):.2f} (no-early-exit / early-exit)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "device": name, "results": results,
                                              "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
