"""Step schedule: step sizes, which steps are refined, latent scaling, and which model calls start a step."""

from __future__ import annotations

import math

import torch

from ..settings.params import AAE_ITERATIVE_STEPS, AAE_LAST_STEP, AAE_REFERENCE_STEPS, SegretParams
from .step_rule import get_rule, refined_share_last_step

EVAL_PATTERNS = ("first_order", "second_order", "plms", "dpm_fast", "callback")


def step_size(scale_factor: float, step: int, total_steps: int) -> float:
    """alpha_t = scale_factor * sqrt(linspace(1.0, 0.5, T))[t] (Attend-and-Excite's schedule)."""
    if total_steps <= 1:
        return scale_factor
    t = min(max(step, 0), total_steps - 1)
    return scale_factor * math.sqrt(1.0 - 0.5 * t / (total_steps - 1))


def is_refined_step(step: int, last_step: int) -> bool:
    """0-based step index against the 1-based 'last refined step' setting (0 = all)."""
    return last_step <= 0 or step < last_step


def scale_step(index: int, total_steps: int, reference_steps: int = AAE_REFERENCE_STEPS) -> int:
    """A step index of a schedule published for `reference_steps` steps, at `total_steps`:
    round(index * T / reference), halves rounded up (e.g. A&E's step 25 of 50 is step 13 of 25)."""
    return (2 * index * total_steps + reference_steps) // (2 * reference_steps)


def last_refined_step(params: SegretParams, total_steps: int) -> int:
    """The pass's last refined step (1-based; 0 = every step). An explicit last_step > 0 is taken as it is;
    0 means the method's default: for Attend-and-Excite the first half (its 25 of 50 steps, scaled:
    round(25 * T / 50), at least 1); for A-STAR and Both what the step rule's `until` gives (every step unless
    the rule refines only the first share of the steps)."""
    if params.last_step > 0:
        return params.last_step
    if params.method == "aae":
        return max(1, scale_step(AAE_LAST_STEP, total_steps))
    return refined_share_last_step(get_rule(params.step_rule), total_steps)


def iterative_schedule(params: SegretParams, total_steps: int) -> dict[int, float]:
    """{0-based step: loss target} of the iterative refinement of a pass ({} when it is off).

    Steps: params.iterative_steps as given, or, when empty, Attend-and-Excite's 0, 10, 20 of 50 scaled to the
    pass (scale_step; where two land on the same step the earlier one's target is kept). Targets: the k-th
    step takes iterative_target[k], the last value repeating for the steps beyond it."""
    if not params.iterative:
        return {}
    scaled = not params.iterative_steps
    steps = [scale_step(s, total_steps) for s in AAE_ITERATIVE_STEPS] if scaled else list(params.iterative_steps)
    targets = params.iterative_target
    out: dict[int, float] = {}
    for k, step in enumerate(steps):
        if step not in out:
            out[step] = float(targets[min(k, len(targets) - 1)])
    return out


def latent_scale(sigma: torch.Tensor, parameterization: str) -> torch.Tensor:
    """s such that the sampler's latent x = z_t * s: sqrt(1 + sigma^2) for k-diffusion, 1 for timesteps."""
    if parameterization == "sigma":
        return torch.sqrt(1.0 + sigma.float() ** 2)
    if parameterization == "timestep":
        return torch.ones_like(sigma, dtype=torch.float32)
    raise ValueError(f"unknown parameterization {parameterization!r}")


def sigma_from_timestep(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar_t) / abar_t), interpolating abar between integer timesteps."""
    ac = alphas_cumprod.to(t.device, torch.float64)
    tf = t.double().clamp(0, len(ac) - 1)
    lo = tf.floor().long()
    hi = tf.ceil().long()
    w = tf - lo
    abar = ac[lo] * (1 - w) + ac[hi] * w
    return torch.sqrt((1 - abar) / abar).to(torch.float32)


def snapshot_steps(total_steps: int, last_step: int, count: int = 4) -> tuple[int, ...]:
    """A few refined steps, evenly spread, at which the attention grid records maps."""
    refined = total_steps if last_step <= 0 else min(total_steps, last_step)
    if refined <= 0:
        return ()
    if refined <= count:
        return tuple(range(refined))
    return tuple(sorted({round(i * (refined - 1) / (count - 1)) for i in range(count)}))


def dpm_fast_orders(evaluations: int) -> list[int]:
    """Solver orders of k-diffusion's DPM-Solver-fast steps for a budget of `evaluations` model calls."""
    m = evaluations // 3 + 1
    if evaluations % 3 == 0:
        return [3] * (m - 2) + [2, 1]
    return [3] * (m - 1) + [evaluations % 3]


class StepTracker:
    """Tells which model evaluation starts a sampling step, so refinement runs once per step.

    first_order: one evaluation per step (Euler, LMS, DPM++ 2M, DDIM, UniPC, ...).
    second_order: two per step, one on the last (Heun, DPM2, DPM2 a, DPM++ 2S a, DPM++ SDE, Restart).
    plms: two on the first step, then one.
    dpm_fast: steps of order 3, 2 or 1 fixed by the evaluation budget (set_evaluations); its callback comes
        after the first evaluation of a step, so it cannot mark step starts.
    callback: a step starts with the first evaluation after each sampler callback (DPM adaptive, which calls
        back after every attempted step).
    """

    def __init__(self, pattern: str = "first_order") -> None:
        if pattern not in EVAL_PATTERNS:
            raise ValueError(f"unknown evaluation pattern {pattern!r}; one of {EVAL_PATTERNS}")
        self.pattern = pattern
        self.evals = 0
        self.callbacks = 0
        self._steps_started = 0
        self._starts: dict[int, int] = {}

    def set_evaluations(self, evaluations: int) -> int:
        """dpm_fast: the sampler's evaluation budget; returns the number of steps it makes of it."""
        orders = dpm_fast_orders(max(int(evaluations), 1))
        firsts = [sum(orders[:i]) for i in range(len(orders))]
        self._starts = {first: step for step, first in enumerate(firsts)}
        return len(orders)

    def on_eval(self) -> int | None:
        """Call before every model evaluation; returns the step index if this evaluation starts one."""
        e = self.evals
        self.evals += 1
        if self.pattern == "first_order":
            step = e
        elif self.pattern == "second_order":
            step = e // 2 if e % 2 == 0 else None
        elif self.pattern == "plms":
            step = 0 if e == 0 else (None if e == 1 else e - 1)
        elif self.pattern == "dpm_fast":
            step = self._starts.get(e)
        else:
            step = self._steps_started if self.callbacks >= self._steps_started else None
        if step is not None:
            self._steps_started = step + 1
        return step

    @property
    def steps_started(self) -> int:
        """How many sampling steps have started so far."""
        return self._steps_started

    def on_callback(self) -> None:
        """Call from the sampler's per-step callback (its step index is not used: DDIM counts down)."""
        self.callbacks += 1


def evaluation_pattern(sampler_name: str, second_order: bool | None = None) -> str:
    """Evaluation pattern for a WebUI sampler name (used by the adapter; pure string logic)."""
    name = sampler_name.lower().strip()
    if second_order is not None:
        if second_order:
            return "second_order"
    elif name in {"heun", "dpm2", "dpm2 a", "dpm++ 2s a", "dpm++ sde", "restart"} or name.startswith(
            ("dpm2 ", "dpm++ 2s")):
        return "second_order"
    if name == "plms":
        return "plms"
    if name == "dpm fast":
        return "dpm_fast"
    if name == "dpm adaptive":
        return "callback"
    return "first_order"

