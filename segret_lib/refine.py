"""One A-STAR latent update (or a capped series of them) for a batch of images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from .losses import binarize, total_loss
from .params import SegretParams
from .schedule import step_size

# forward_maps(x_model) runs the conditional UNet on the sampler-space latent and returns, per image,
# the concept maps [C_i, H, W] (with gradients).
ForwardMaps = Callable[[torch.Tensor], list[torch.Tensor]]


@dataclass
class StepResult:
    """What one refinement step did."""

    step: int
    loss: float | None = None  # total loss before the first update
    final_loss: float | None = None  # loss at the last forward of this step
    parts: dict[str, float] = field(default_factory=dict)
    updates: int = 0
    skipped: str | None = None
    images: int = 0  # images refined
    maps_before: list[torch.Tensor] | None = None  # per image, detached, on CPU (only when asked for)


class NoAttentionGradient(RuntimeError):
    """The captured attention maps do not depend on the latent through autograd, so no update is possible."""

    def __init__(self) -> None:
        super().__init__(
            "the attention maps carry no gradient: the UNet runs with gradient checkpointing (use_checkpoint) "
            "or under inference mode, which A-STAR cannot differentiate through"
        )


class Refiner:
    """Holds the retention masks of the previous step and applies z' = z - alpha_t * grad_z L."""

    def __init__(self, params: SegretParams, n_images: int,
                 layout_masks: Sequence[torch.Tensor | None] | None = None) -> None:
        self.params = params
        self.prev_masks: list[torch.Tensor | None] = [None] * n_images
        self.layout_masks = list(layout_masks) if layout_masks is not None else [None] * n_images

    def loss(self, maps: Sequence[torch.Tensor], rows: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over images of Eq. 4; retention uses the layout mask if given, else the previous step's mask."""
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        for m, row in zip(maps, rows, strict=True):
            mask = self.layout_masks[row] if self.layout_masks[row] is not None else self.prev_masks[row]
            if mask is not None and mask.shape != m.shape:
                mask = None  # concepts changed between passes (e.g. a hires prompt): no retention this step
            loss, p = total_loss(m, mask, self.params.seg_weight, self.params.ret_weight)
            total = loss if total is None else total + loss
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v
        if total is None:
            total = torch.zeros(())
        return total, parts

    def refine(self, x: torch.Tensor, scale: torch.Tensor, step: int, total_steps: int,
               forward_maps: ForwardMaps, rows: Sequence[int] | None = None, keep_maps: bool = False,
               backward_context: Callable[[], AbstractContextManager] = nullcontext,
               ) -> tuple[torch.Tensor, StepResult]:
        """Return the updated sampler latent for the images `rows` (x is [len(rows), ...]).

        scale: s with x = z * s, broadcastable to x. The loss is differentiated w.r.t. z (what the UNet sees)
        and x moves by -alpha_t * s * grad_z L. keep_maps: copy the maps before the update to the CPU.
        backward_context: entered around the gradient computation (attention replay for checkpointed blocks).
        """
        p = self.params
        rows = list(range(x.shape[0])) if rows is None else list(rows)
        result = StepResult(step=step, images=len(rows))
        alpha = step_size(p.step_size, step, total_steps)
        max_updates = p.iterative_max if p.iterative and step in p.iterative_steps else 1
        scale = scale.to(x.device, torch.float32)
        x_cur = x.detach().float().clone()
        maps: list[torch.Tensor] = []
        for it in range(max_updates):
            z = (x_cur / scale).detach().requires_grad_(True)
            with torch.enable_grad():
                maps = forward_maps((z * scale).to(x.dtype))
                if maps and not any(m.requires_grad for m in maps):
                    raise NoAttentionGradient
                loss, parts = self.loss(maps, rows)
            value = float(loss.detach())
            result.final_loss = value
            if it == 0:
                result.loss, result.parts = value, parts
                if keep_maps:
                    result.maps_before = [m.detach().float().cpu() for m in maps]
            if not torch.isfinite(loss.detach()):
                result.skipped = f"non-finite loss ({value}) at step {step + 1}; update skipped"
                break
            if not loss.requires_grad or (it > 0 and value <= p.iterative_target):
                break
            with backward_context():
                (grad,) = torch.autograd.grad(loss, z)
            if not torch.isfinite(grad).all():
                result.skipped = f"non-finite gradient at step {step + 1}; update skipped"
                break
            x_cur = x_cur - alpha * scale * grad
            result.updates += 1
        self._renew_masks(maps, rows)
        return x_cur.to(x.dtype), result

    def _renew_masks(self, maps: Sequence[torch.Tensor], rows: Sequence[int]) -> None:
        for m, row in zip(maps, rows, strict=False):
            if torch.isfinite(m).all():
                self.prev_masks[row] = binarize(m, self.params.threshold_mode, self.params.threshold)

    def reset(self) -> None:
        self.prev_masks = [None] * len(self.prev_masks)
