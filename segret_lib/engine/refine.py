"""One latent update (or a capped series of them) for a batch of images, with the chosen method's loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from ..settings.params import SegretParams
from .binding import WordMaps, binding_loss
from .layout import LayoutTarget, layout_terms
from .losses import binarize, loss_terms
from .schedule import iterative_schedule, step_size
from .step_rule import budget_factor, fade_factor, get_rule, keep_rms, lowpass

# forward_maps(x_model) runs the conditional UNet on the sampler-space latent and returns, per image,
# the concept maps [C_i, H, W] (with gradients); with attribute binding on, (those maps, per image its
# binding.WordMaps or None), from the same UNet call.
ForwardMaps = Callable[[torch.Tensor], "list[torch.Tensor] | tuple[list[torch.Tensor], list[WordMaps | None]]"]


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


def _bad_loss(value: float, step: int) -> str:
    return f"non-finite loss ({value}) at step {step + 1}; update skipped"


def _bad_gradient(step: int) -> str:
    return f"non-finite gradient at step {step + 1}; update skipped"


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
        # called with each refined step's maps (detached, before the update) and their rows, when set
        self.on_maps: Callable[[list[torch.Tensor], Sequence[int]], None] | None = None
        # the same for the binding word maps (binding.WordMaps per image, None without modifiers), when set
        self.on_words: Callable[[list[WordMaps | None], Sequence[int]], None] | None = None

    def image_loss_terms(self, maps: Sequence[torch.Tensor], rows: Sequence[int],
                         words: Sequence[WordMaps | None] | None = None,
                         ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """The method's loss of each image and each image's loss terms, on the device (nothing read back).
        words: per image, its word maps for the binding term (bind_weight > 0)."""
        p = self.params
        normalise = get_rule(p.step_rule).normalise
        losses: list[torch.Tensor] = []
        terms: list[dict[str, torch.Tensor]] = []
        words = list(words) if words is not None else [None] * len(rows)
        for m, row, w in zip(maps, rows, words, strict=True):
            target = self.layout_masks[row]
            mask = target if target is not None and not isinstance(target, LayoutTarget) else self.prev_masks[row]
            if mask is not None and mask.shape != m.shape:
                mask = None  # concepts changed between passes (e.g. a hires prompt): no retention this step
            if isinstance(target, LayoutTarget) and target.shape == m.shape:  # boxes (layout.py)
                loss, image_terms = layout_terms(p.method, m, mask, target, p.seg_weight, p.ret_weight,
                                                 p.layout_strength, normalise, p.excite_weight)
            else:
                loss, image_terms = loss_terms(p.method, m, mask, p.seg_weight, p.ret_weight, normalise,
                                               p.excite_weight)
            bind = binding_loss(w, normalise) if p.bind_weight else None
            if bind is not None:
                loss = loss + p.bind_weight * bind
                image_terms = {**image_terms, "bind": bind.detach()}
            losses.append(loss)
            terms.append(image_terms)
        return losses, terms

    def refine(self, x: torch.Tensor, scale: torch.Tensor, step: int, total_steps: int,
               forward_maps: ForwardMaps, rows: Sequence[int] | None = None, keep_maps: bool = False,
               backward_context: Callable[[], AbstractContextManager] = nullcontext,
               ) -> tuple[torch.Tensor, StepResult]:
        """Return the updated sampler latent for the images `rows` (x is [len(rows), ...]).

        scale: s with x = z * s, broadcastable to x. The loss is differentiated w.r.t. z (what the UNet sees)
        and x moves by -alpha_t * s * grad_z L. keep_maps: copy the maps before the update to the CPU.
        backward_context: entered around the gradient computation (attention replay for checkpointed blocks).

        A step with one update reads nothing back until its end: a non-finite loss or gradient discards the
        update on the device (torch.where), and the losses, those checks and the maps' finiteness come back to
        the host together, in one read. At an iterative step (schedule.iterative_schedule) the update repeats,
        at most iterative_max times, while an image's loss is above the step's target; each image stops on its
        own (the others' updates go on), so the result does not depend on how many images are refined
        together. There every update reads its losses and its gradient check back, to decide whether to go on.
        """
        p = self.params
        rows = list(range(x.shape[0])) if rows is None else list(rows)
        result = StepResult(step=step, images=len(rows))
        rule = get_rule(p.step_rule)
        alpha = (step_size(p.step_size, step, total_steps) * budget_factor(rule, total_steps)
                 * fade_factor(rule, step, total_steps))
        target = iterative_schedule(p, total_steps).get(step)
        max_updates = p.iterative_max if target is not None else 1
        eager = max_updates > 1  # decide between updates on the host
        scale = scale.to(x.device, torch.float32)
        x_cur = x.detach().float().clone()
        maps: list[torch.Tensor] = []
        first_terms: list[dict[str, torch.Tensor]] = []
        checks: list[torch.Tensor] = []  # one step: [loss finite, gradient finite], read back at the end
        last_loss: torch.Tensor | None = None
        for it in range(max_updates):
            z = (x_cur / scale).detach().requires_grad_(True)
            with torch.enable_grad():
                out = forward_maps((z * scale).to(x.dtype))
                maps, words = out if isinstance(out, tuple) else (out, None)
                if maps and not any(m.requires_grad for m in maps):
                    raise NoAttentionGradient
                per_image, terms = self.image_loss_terms(maps, rows, words)
                loss = torch.stack(per_image).sum() if per_image else torch.zeros(())
            last_loss = loss.detach()
            if it == 0:
                first_terms = terms
                if keep_maps:
                    result.maps_before = [m.detach().float().cpu() for m in maps]
                if self.on_maps is not None:
                    self.on_maps([m.detach() for m in maps], rows)
                if self.on_words is not None and words is not None:
                    self.on_words(words, rows)
            active: list[bool] = []
            if eager:
                values = torch.stack([last_loss, *(v.detach() for v in per_image)]).tolist()
                result.final_loss = values[0]
                if it == 0:
                    result.loss = values[0]
                if not math.isfinite(values[0]):
                    result.skipped = _bad_loss(values[0], step)
                    break
                # the first update of a step is always made; later ones only for images still above the target
                active = [it == 0 or v > target for v in values[1:]]
                if not any(active):
                    break
            if not loss.requires_grad:
                break
            with backward_context():
                (grad,) = torch.autograd.grad(loss, z)
            if rule.blur and maps:
                grad = lowpass(grad, tuple(maps[0].shape[-2:]), rule.blur)
            grad_ok = torch.isfinite(grad).all()
            if eager:
                if not bool(grad_ok):
                    result.skipped = _bad_gradient(step)
                    break
                if not all(active):
                    grad = grad * torch.tensor(active, dtype=grad.dtype, device=grad.device).reshape(
                        -1, *([1] * (grad.dim() - 1)))
                x_cur = self._moved(rule, x_cur, alpha * scale * grad)
                result.updates += 1
            else:  # applied on the device only if the loss and the gradient are finite
                loss_ok = torch.isfinite(last_loss)
                x_cur = torch.where(loss_ok & grad_ok, self._moved(rule, x_cur, alpha * scale * grad), x_cur)
                checks = [loss_ok, grad_ok]
        self._finish(result, maps, rows, first_terms, last_loss, checks, eager)
        return x_cur.to(x.dtype), result

    @staticmethod
    def _moved(rule, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x - delta, at x's RMS per image when the rule keeps the norm."""
        return keep_rms(x - delta, x) if rule.keep_norm else x - delta

    def _finish(self, result: StepResult, maps: Sequence[torch.Tensor], rows: Sequence[int],
                first_terms: Sequence[dict[str, torch.Tensor]], last_loss: torch.Tensor | None,
                checks: Sequence[torch.Tensor], eager: bool) -> None:
        """The step's one read-back: the first forward's loss terms, (one-update steps) the loss and the
        finiteness checks, and whether each image's maps are finite; then the new retention masks."""
        renew = self.params.method != "aae"  # no retention term: no masks to keep
        masks = [binarize(m, self.params.threshold_mode, self.params.threshold) for m in maps] if renew else []
        names = [k for image_terms in first_terms for k in image_terms]
        values: list[torch.Tensor] = [v.float() for image_terms in first_terms for v in image_terms.values()]
        if not eager and last_loss is not None:
            values += [last_loss.float(), *(c.float() for c in checks)]
        values += [torch.isfinite(m).all().float() for m in maps] if renew else []
        back = torch.stack(values).tolist() if values else []
        for k, v in zip(names, back, strict=False):
            result.parts[k] = result.parts.get(k, 0.0) + v
        back = back[len(names):]
        if not eager and last_loss is not None:
            value, flags, back = back[0], back[1:1 + len(checks)], back[1 + len(checks):]
            result.loss = result.final_loss = value
            if not math.isfinite(value):
                result.skipped = _bad_loss(value, result.step)
            elif flags and not flags[1]:
                result.skipped = _bad_gradient(result.step)
            elif flags:
                result.updates = 1
        for mask, finite, row in zip(masks, back, rows, strict=False):
            if finite:
                self.prev_masks[row] = mask

    def reset(self) -> None:
        self.prev_masks = [None] * len(self.prev_masks)
