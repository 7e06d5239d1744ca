"""Step rules: how the step size becomes a latent update, so that one setting means the same push whatever the
number of concepts, the number of steps and the capture resolution.

- "v1" (up to version 1 of the extension, the paper's Eq. 4 as written): L = w_seg * L_seg + w_ret * L_ret with
  L_seg summed over the C(C-1)/2 concept pairs and L_ret over the C concepts, alpha_t = step size x
  sqrt(linspace(1, 0.5, T)) at every refined step, the raw gradient. The push grows with the number of pairs
  and the total displacement with the number of steps.
- "balanced": L_seg is the mean over pairs and L_ret the mean over concepts; alpha_t is scaled by
  sqrt(min(1, budget / T)) (power 0.5), so beyond `budget` steps the sum of the step sizes over a pass grows
  as sqrt(T) instead of T (50 steps push 2.2x as far as 10, not 5x; a full budget, power 1, left 50 steps
  without effect on the benchmark matrix: docs/method.md); the gradient is
  low-passed (Gaussian of `blur` capture cells) before the update, since the maps only hold structure at the
  capture resolution and the finer part of the gradient is what shows as grain.
- "steady": balanced, and each update rescales each image's latent to the RMS it had before the update
  (keep_rms). The UNet reads that RMS as the noise level it has to remove and cannot see it (its normalisation
  layers remove the input's scale): an update that adds to it leaves noise the sampler never removes, which shows
  as grain (quality/README.md, "Why the seed decided").
- "early" (the default of A-STAR and Both; before it, steady was): steady on
  the first half of each pass's steps only (`until` 0.5, unless "Last refined step" is set). It rescues slightly
  fewer images than steady on every step (report matrix, all colours fixed/broken 359/242 against 377/237,
  n = 2304) with less grain, in more cells within the grain limit (21 of 36 against 17), at about half of
  steady's extra time (docs/method.md, "Why early").

Infotexts name the rule ("A-STAR step rule"); an infotext without it was written by v1 and pastes as v1.
"auto" (the UI's default and that of a setting left out) is the method's rule: early for A-STAR and Both,
v1 for Attend-and-Excite. Infotexts name the rule, so an image made with steady or balanced pastes as it was made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..settings.params import STEP_RULES, allow_step_rule
from .attention_maps import gaussian_profile


@dataclass(frozen=True)
class StepRule:
    name: str
    normalise: bool = False  # losses as means over pairs / concepts, not sums
    budget: int = 0  # 0: every refined step gets alpha_t; n: alpha_t * min(1, n / T) ** power
    blur: float = 0.0  # Gaussian sigma of the gradient low-pass, in capture cells (0 = off)
    power: float = 1.0  # the budget's factor is min(1, budget / T) ** power
    fade: float = 0.0  # alpha_t * ((T - t) / T) ** fade: later steps move less (0 = off)
    keep_norm: bool = False  # rescale each image's updated latent to the RMS it had before the update
    until: float = 0.0  # refine only the first `until` share of a pass's steps when last_step is 0 (0 = all)


RULES: dict[str, StepRule] = {
    "v1": StepRule("v1"),
    "balanced": StepRule("balanced", normalise=True, budget=10, blur=1.0, power=0.5),
    "steady": StepRule("steady", normalise=True, budget=10, blur=1.0, power=0.5, keep_norm=True),
    "early": StepRule("early", normalise=True, budget=10, blur=1.0, power=0.5, keep_norm=True, until=0.5),
}
assert tuple(RULES) == STEP_RULES, "settings.params.STEP_RULES names the rules defined here"


def register(rule: StepRule) -> None:
    """Add a candidate rule under its name (the benchmark matrix's alternatives)."""
    RULES[rule.name] = rule
    allow_step_rule(rule.name)


def get_rule(name: str) -> StepRule:
    key = str(name).strip().lower()
    if key not in RULES:
        raise ValueError(f"step_rule must be one of {tuple(RULES)}, got {name!r}")
    return RULES[key]


def budget_factor(rule: StepRule, total_steps: int) -> float:
    """The factor on alpha_t of a pass of total_steps steps (1 when the rule has no budget)."""
    if rule.budget <= 0 or total_steps <= 0:
        return 1.0
    return min(1.0, rule.budget / total_steps) ** rule.power


def refined_share_last_step(rule: StepRule, total_steps: int) -> int:
    """The last refined step (1-based) that the rule's `until` gives a pass of total_steps steps; 0 = every step."""
    if rule.until <= 0 or rule.until >= 1:
        return 0
    return max(1, math.ceil(rule.until * total_steps - 1e-9))


def fade_factor(rule: StepRule, step: int, total_steps: int) -> float:
    """The factor on alpha_t at 0-based `step` of a pass of total_steps steps (1 when the rule has no fade)."""
    if rule.fade <= 0 or total_steps <= 1:
        return 1.0
    t = min(max(step, 0), total_steps - 1)
    return ((total_steps - t) / total_steps) ** rule.fade


def keep_rms(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """new rescaled per image (dim 0) to old's RMS: the update changes the latent's content, not its norm, which
    the UNet reads as the noise level it has to remove and which its normalisation layers cannot see."""
    dims = tuple(range(1, new.dim()))
    rms_new = new.pow(2).mean(dim=dims, keepdim=True).sqrt()
    rms_old = old.pow(2).mean(dim=dims, keepdim=True).sqrt()
    return new * (rms_old / rms_new.clamp_min(1e-12))


def lowpass(grad: torch.Tensor, capture_hw: tuple[int, int], sigma_cells: float) -> torch.Tensor:
    """Gaussian-blur each channel of grad [N, C, H, W] with sigma = sigma_cells x (latent size / capture size)
    pixels (reflect padding); unchanged when sigma_cells is 0 or the capture is as fine as the latent."""
    if sigma_cells <= 0 or grad.dim() != 4:
        return grad
    h, w = grad.shape[-2:]
    ratio = max(h / max(capture_hw[0], 1), w / max(capture_hw[1], 1))
    sigma = sigma_cells * ratio
    if ratio <= 1 or sigma < 0.25:
        return grad
    radius = min(math.ceil(2.5 * sigma), (min(h, w) - 1))
    k = gaussian_profile(2 * radius + 1, sigma, grad.device)
    k = (k / k.sum()).to(grad.dtype)  # separable: one 1-D pass per axis
    c = grad.shape[1]
    g = F.pad(grad, (radius, radius, 0, 0), mode="reflect")
    g = F.conv2d(g, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    g = F.pad(g, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(g, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
