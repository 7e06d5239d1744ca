"""One generation's A-STAR state: hooks, token positions, step tracking, refinement, warnings, snapshots.

The session is host-agnostic: a host (the WebUI adapter, or a test) calls `before_model_call` before each
model evaluation of the sampler with the sampler's own latent, which is then moved in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field

import torch
from torch import nn

from ..settings.params import SegretParams
from .attention_maps import capture_hw, concept_maps, device_ints
from .binding import WordMaps, bound_labels, has_modifiers, word_tokens
from .capture import AttentionCapture, CaptureComplete
from .checkpointing import checkpointed
from .foreign_hooks import foreign_forward, grad_safe_hooks
from .layout import image_target
from .map_history import ImageMaps, MapAccumulator
from .patching import parameters_frozen
from .refine import NoAttentionGradient, Refiner, StepResult
from .schedule import StepTracker, is_refined_step, last_refined_step, latent_scale, snapshot_steps
from .tokens import ConceptTokens

log = logging.getLogger("segret")

# run_unet(x_model, sigma, rows[, parts]) runs the conditional model on images `rows` (the host knows their
# conditioning); `parts`, passed only when a concept sits in a later AND sub-prompt, names the sub-prompt of each
# row (x_model then holds one row per (image, sub-prompt) pair). A host may also offer a runner with the CFG batch
# layout: the same rows' conditional inputs followed by their unconditional ones, as the WebUI's CFG denoiser
# batches them (the maps are read from the first rows).
RunUnet = Callable[..., object]
# An image's prompt keys: the real tokens' key positions (an int n: the first chunk's 1..n), or, with AND, a
# mapping from sub-prompt index to those positions.
Keys = int | Sequence[int] | Mapping[int, Sequence[int]]

BATCH_LAYOUTS = {"cond": "conditional rows only", "cfg": "CFG batch layout (cond + uncond rows)"}


class ModelSwitched(RuntimeError):
    """The host's model is no longer the one hooked at the start of the pass (e.g. the SDXL refiner switch)."""


def is_out_of_memory(err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    return isinstance(err, oom_types) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass
class Fallbacks:
    """What the session's fallbacks decided; its owner (the generation) hands the same object to the next batch's
    session, which starts from it."""

    chunk_size: int = 0  # images refined together; 0 = the whole batch (1 after running out of memory)
    low_vram: bool = False  # recompute the UNet's activations in the backward pass
    batch_layout: str = "cond"  # of the refinement call (BATCH_LAYOUTS); "cfg" once the cond-only call failed
    out_of_memory: bool = False  # ran out of memory even with every fallback: A-STAR switched off


def _fallback(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.fallbacks, name),
                    lambda self, value: setattr(self.fallbacks, name, value), doc=doc)


@dataclass
class Snapshot:
    step: int
    before: list[torch.Tensor]  # per image [C, H, W] on CPU
    after: list[torch.Tensor] | None = None


@dataclass
class PassInfo:
    """A sampling pass (first pass or hires second pass)."""

    latent_hw: tuple[int, int]
    total_steps: int
    parameterization: str = "sigma"  # "sigma" (k-diffusion) or "timestep" (DDIM/PLMS/UniPC)
    pattern: str = "first_order"
    label: str = "first pass"
    results: list[StepResult] = field(default_factory=list)
    steps_started: int = 0  # steps the sampler really made (UniPC and DPM adaptive make other counts)
    batch_layout: str = "cond"  # the batch layout the refinement calls used (BATCH_LAYOUTS)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)


class SegretSession:
    """Refines the sampler's latent once per sampling step for one generation."""

    def __init__(self, params: SegretParams, attn_modules: Sequence[nn.Module],
                 concepts: Sequence[Sequence[ConceptTokens]], keys: Sequence[Keys],
                 record_snapshots: bool | None = None, blocks: Sequence[nn.Module] = (),
                 model: nn.Module | None = None, fallbacks: Fallbacks | None = None) -> None:
        """keys: each image's prompt keys (see Keys);
        blocks: the UNet's top-level blocks (checkpointing.unet_blocks), for low-VRAM refinement;
        model: the UNet, whose parameters stop requiring grad during refinement; fallbacks: what earlier batches'
        fallbacks decided, updated in place (default: a fresh one, low VRAM as params.low_vram). Start with a
        session of one batch; see session_factory.new_session."""
        if len(concepts) != len(keys):
            raise ValueError("one concept list and one set of prompt keys per image are needed")
        self.params = params
        self.modules = list(attn_modules)
        self.concepts = [list(c) for c in concepts]
        self.keys = list(keys)
        self.blocks = list(blocks)
        self.model = model
        self.fallbacks = Fallbacks(low_vram=params.low_vram) if fallbacks is None else fallbacks
        if self.fallbacks.batch_layout not in BATCH_LAYOUTS:
            raise ValueError(f"unknown batch layout {self.fallbacks.batch_layout!r}; one of {tuple(BATCH_LAYOUTS)}")
        self.low_vram = self.low_vram and bool(self.blocks)  # low VRAM needs the blocks to recompute
        self.record_snapshots = (params.show_maps and params.maps_view != "overlay"
                                 if record_snapshots is None else record_snapshots)
        # each image's maps summed over the first pass's refined steps, for the overlays (overlays.py)
        self.overlay_maps = (MapAccumulator(len(self.concepts))
                             if params.show_maps and params.maps_view != "grid" else None)
        # with binding on, each modifier's map next to its noun's (ImageMaps.bound)
        self.overlay_words = (MapAccumulator(len(self.concepts))
                              if self.overlay_maps is not None and params.bind_weight else None)
        self.capture = AttentionCapture()
        self.refiner = Refiner(params, len(self.concepts))
        self.warnings: list[str] = []
        self.passes: list[PassInfo] = []
        self.current: PassInfo | None = None
        self.tracker: StepTracker | None = None
        self.disabled_reason: str | None = None
        self._layers: int | None = None
        self._snap_steps: set[int] = set()
        self._last_step = 0  # this pass's last refined step (1-based; 0 = all), resolved for the method

    chunk_size = _fallback("chunk_size", "Images refined together; 0 = the whole batch.")
    low_vram = _fallback("low_vram", "Recompute the UNet's activations in the backward pass.")
    batch_layout = _fallback("batch_layout", "The refinement call's batch layout (BATCH_LAYOUTS).")
    out_of_memory = _fallback("out_of_memory", "Switched off after every out-of-memory fallback failed.")

    # ------------------------------------------------------------------ lifecycle
    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("A-STAR: %s", message)

    def set_tokens(self, concepts: Sequence[Sequence[ConceptTokens]], keys: Sequence[Keys]) -> None:
        """New concept positions per image (a new pass, or prompt editing switched the conditioning). An image
        whose concept words changed loses its retention mask: the previous step's regions were other words'."""
        for row, (old, new) in enumerate(zip(self.concepts, concepts, strict=True)):
            if [c.word for c in old] != [c.word for c in new]:
                self.refiner.prev_masks[row] = None
        self.concepts = [list(c) for c in concepts]
        self.keys = list(keys)
        self._apply_layout_boxes()

    def _apply_layout_boxes(self) -> None:
        """Each image's layout boxes as retention masks at the pass's capture resolution (layout.py)."""
        if not self.params.layout or self.current is None:
            return
        self.refiner.layout_masks = [
            image_target(self.params.layout, [c.word for c in cs], self.current.latent_hw,
                         self.params.layout_exclusive) if cs else None
            for cs in self.concepts]

    def _collect_maps(self, maps: Sequence[torch.Tensor], rows: Sequence[int]) -> None:
        self.overlay_maps.add(maps, rows, [[c.word for c in self.concepts[r]] for r in rows])

    def _collect_words(self, words: Sequence[WordMaps | None], rows: Sequence[int]) -> None:
        """Each concept with modifiers: its head's map, then its modifiers' (the binding overlay's order)."""
        for w, row in zip(words, rows, strict=True):
            if w is None:
                continue
            concepts = self.concepts[row]
            labels, order = bound_labels(concepts)
            both = torch.cat([w.heads, w.modifiers]).detach()
            self.overlay_words.add([both.index_select(0, device_ints(order, both.device))], [row], [labels])

    def overlay_result(self) -> list[ImageMaps | None]:
        """Each image's concept maps averaged over the first pass's refined steps (with binding, the word maps
        in ImageMaps.bound); the accumulators are emptied."""
        maps = self.overlay_maps.result() if self.overlay_maps is not None else []
        if self.overlay_words is not None:
            for m, bound in zip(maps, self.overlay_words.result(), strict=True):
                if m is not None:
                    m.bound = bound
        return maps

    def begin_pass(self, info: PassInfo) -> None:
        """Install the attention hooks (if not yet) and reset per-pass state."""
        if not self.capture.installed:
            self.capture.install(self.modules)
        self.current = info
        self.passes.append(info)
        self.tracker = StepTracker(info.pattern)
        self.refiner.reset()
        self._apply_layout_boxes()
        first = len(self.passes) == 1
        self.refiner.on_maps = self._collect_maps if self.overlay_maps is not None and first else None
        self.refiner.on_words = self._collect_words if self.overlay_words is not None and first else None
        self._layers = None
        self.set_total_steps(info.total_steps)

    def set_total_steps(self, total_steps: int) -> None:
        """The pass's number of sampling steps (known exactly only once the sampler runs, e.g. img2img)."""
        if self.current is None:
            return
        self.current.total_steps = max(int(total_steps), 1)
        if self.tracker is not None and self.tracker.pattern == "dpm_fast":  # total_steps is its evaluation budget
            self.current.total_steps = self.tracker.set_evaluations(self.current.total_steps)
        self._last_step = last_refined_step(self.params, self.current.total_steps)
        self._snap_steps = (set(snapshot_steps(self.current.total_steps, self._last_step))
                            if self.record_snapshots else set())

    def end_pass(self) -> None:
        if self.current is not None and self.tracker is not None:
            self.current.steps_started = max(self.current.steps_started, self.tracker.steps_started)
        self.current = None
        self.tracker = None

    def close(self) -> int:
        """Remove every hook; returns the number of forwards restored. Idempotent."""
        self.end_pass()
        return self.capture.remove()

    @property
    def active(self) -> bool:
        return self.current is not None and self.disabled_reason is None and any(self.concepts)

    # ------------------------------------------------------------------ sampler hooks
    def on_sampler_callback(self) -> None:
        if self.tracker is not None:
            self.tracker.on_callback()

    def before_model_call(self, x: torch.Tensor, sigma: torch.Tensor, run_unet: RunUnet,
                          run_unet_cfg: RunUnet | None = None) -> StepResult | None:
        """Call before every model evaluation with the sampler's own latent x (first len(concepts) rows).

        At the first evaluation of each refined step, x is updated in place. Never raises for refinement
        problems: they become warnings and refinement stops or skips the step. run_unet_cfg: the same call in
        the CFG batch layout, tried when the conditional-only call fails (hooks of other extensions that
        expect cond and uncond rows); once it worked it is used for the rest of the session.
        """
        if self.tracker is None:
            return None
        step = self.tracker.on_eval()
        if step is None or not self.active or not is_refined_step(step, self._last_step):
            return None
        runners = {"cond": run_unet, "cfg": run_unet_cfg}
        try:
            try:
                return self._refine_step(x, sigma, step, runners[self.batch_layout] or run_unet)
            except Exception as err:
                if (self.batch_layout != "cond" or run_unet_cfg is None or is_out_of_memory(err)
                        or isinstance(err, (NoAttentionGradient, ModelSwitched))):
                    raise
                self.batch_layout = "cfg"
                self.warn(f"the conditional-only refinement call failed ({type(err).__name__}: {err}); "
                          f"refining with the {BATCH_LAYOUTS['cfg']}")
                return self._refine_step(x, sigma, step, run_unet_cfg)
        except Exception as err:  # the image must still generate
            if is_out_of_memory(err):
                _free_memory()
                if self.chunk_size != 1 and len(self.concepts) > 1:
                    self.chunk_size = 1
                    self.warn("out of memory during refinement: now refining one image at a time")
                    return None
                if not self.low_vram and self.blocks:
                    self.low_vram = True
                    self.warn("out of memory during refinement: now recomputing the UNet's activations (low VRAM)")
                    return None
                self.out_of_memory = True
                self.disabled_reason = "out of memory during refinement; A-STAR switched off for this generation"
            elif isinstance(err, ModelSwitched):
                self.disabled_reason = f"{err}; A-STAR stopped at step {step + 1}"
            elif isinstance(err, NoAttentionGradient):
                owner = foreign_forward(self.model)
                why = str(err) if owner is None else (
                    f"the attention maps carry no gradient: another extension replaced the UNet's forward ({owner}) "
                    "and runs it without gradients (sd-webui-controlnet does once a unit's ending control step "
                    "has passed)")
                self.disabled_reason = f"{why}; switched off for this image at step {step + 1}"
            else:
                self.disabled_reason = f"refinement failed ({type(err).__name__}: {err}); switched off for this image"
                log.exception("A-STAR refinement failed")
            self.warn(self.disabled_reason)
            return None

    # ------------------------------------------------------------------ refinement
    def _rows_to_refine(self) -> list[int]:
        return [i for i, c in enumerate(self.concepts) if c]

    def _refine_step(self, x: torch.Tensor, sigma: torch.Tensor, step: int, run_unet: RunUnet) -> StepResult:
        rows = self._rows_to_refine()
        chunk = self.chunk_size if self.chunk_size > 0 else len(rows)
        merged = StepResult(step=step, loss=0.0, final_loss=0.0)
        updates = []
        # Forge-style front ends sample under inference mode: work on normal tensors, write back afterwards.
        # Only d(loss)/d(latent) is needed: the UNet's weights stop requiring grad meanwhile (LoRA swaps them
        # in place on the first forward after a change). In the CFG batch layout, other extensions' forward hooks
        # that write into views in place (autograd forbids it under grad; Incantations' SEG with one image per
        # half) run without autograd recording them (foreign_hooks).
        hooks = grad_safe_hooks(self.model) if self.batch_layout == "cfg" else nullcontext()
        with torch.inference_mode(False), parameters_frozen(self.model), hooks:
            sig = sigma.detach().clone().reshape(-1)
            for start in range(0, len(rows), chunk):
                part = rows[start:start + chunk]
                index = device_ints(tuple(part), x.device)
                updates.append((index, self._refine_rows(x.index_select(0, index).clone(), sig, part, index,
                                                         step, run_unet, merged)))
        for index, new_x in updates:
            x.index_copy_(0, index, new_x.to(x.dtype))
        self.current.results.append(merged)
        self.current.batch_layout = self.batch_layout
        return merged

    def _refine_rows(self, xs: torch.Tensor, sig: torch.Tensor, part: list[int], index: torch.Tensor, step: int,
                     run_unet: RunUnet, merged: StepResult) -> torch.Tensor:
        info = self.current
        s = latent_scale(sig.index_select(0, index) if sig.numel() > 1 else sig.expand(len(part)),
                         info.parameterization)
        s = s.reshape(-1, *([1] * (xs.dim() - 1)))
        snapshot = step in self._snap_steps
        with checkpointed(self.blocks if self.low_vram else ()):
            new_x, res = self.refiner.refine(
                xs, s, step, info.total_steps,
                lambda xm: self._forward_maps(xm, sig, part, index, run_unet, words=bool(self.params.bind_weight)),
                rows=part, keep_maps=snapshot,
                backward_context=self.capture.replay if self.low_vram else nullcontext,
            )
        merged.loss = (merged.loss or 0.0) + (res.loss or 0.0)
        merged.final_loss = (merged.final_loss or 0.0) + (res.final_loss or 0.0)
        merged.updates = max(merged.updates, res.updates)
        merged.images += res.images
        for k, v in res.parts.items():
            merged.parts[k] = merged.parts.get(k, 0.0) + v
        if res.skipped:
            merged.skipped = res.skipped
            self.warn(res.skipped)
        if snapshot:
            self._record_snapshot(step, part, res, new_x, sig, index, run_unet)
        return new_x

    def _forward_maps(self, x_model: torch.Tensor, sig: torch.Tensor, rows: Sequence[int],
                      index: torch.Tensor, run_unet: RunUnet, words: bool = False,
                      ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[WordMaps | None]]:
        """Per image, its concept maps [C, H, W] from one conditional UNet call; words: also, per image, the
        word maps of attribute binding (binding.py; None for an image without a modifier) from the same call."""
        info = self.current
        assert info is not None
        hw = capture_hw(*info.latent_hw)
        sigma = sig.index_select(0, index) if sig.numel() > 1 else sig.expand(len(rows))
        # one UNet row per (image, AND sub-prompt holding one of its concepts); usually one per image
        pairs = [(i, row, part) for i, row in enumerate(rows) for part in sorted({c.part for c in self.concepts[row]})]
        extra = any(part for _, _, part in pairs) or len(pairs) != len(rows)
        stop = self._layers if self.params.early_exit else None
        rise = self.params.early_exit and self._layers is None  # first refined step: layer count not known yet
        with self.capture.capturing(hw[0] * hw[1], stop_after=stop, stop_on_rise=rise) as probs, \
                suppress(CaptureComplete):
            if extra:
                take = [i for i, _, _ in pairs]
                run_unet(x_model.index_select(0, device_ints(tuple(take), x_model.device)),
                         sigma.index_select(0, device_ints(tuple(take), sigma.device)),
                         [row for _, row, _ in pairs], parts=[part for _, _, part in pairs])
            else:
                run_unet(x_model, sigma, rows)
        if not probs:
            raise RuntimeError(f"no hooked cross-attention layer ran at {hw[0]}x{hw[1]}: the image size does not "
                               "fit the UNet, or the model was switched during sampling (e.g. the SDXL refiner)")
        if self._layers is None:
            self._layers = len(probs)
        avg = torch.stack(probs).mean(dim=0)[:len(pairs)]  # [pairs, N, K]; CFG layout: the cond rows come first
        p = self.params
        maps: dict[int, list[torch.Tensor] | torch.Tensor] = {row: [None] * len(self.concepts[row]) for row in rows}
        bind = {row: has_modifiers(self.concepts[row]) for row in rows} if words else {}
        word_maps: dict[int, list[torch.Tensor]] = {row: [] for row in rows if bind.get(row)}
        for j, (_, row, part) in enumerate(pairs):  # each sub-prompt's concepts, put back in the concepts' order
            slots = [k for k, c in enumerate(self.concepts[row]) if c.part == part]
            held = [self.concepts[row][k] for k in slots]
            found = concept_maps(avg[j], hw, self._keys(row, part), held, p.softmax_temperature, p.token_combine,
                                 p.smooth_kernel, p.smooth_sigma)
            if bind.get(row):
                word_maps[row].append(concept_maps(avg[j], hw, self._keys(row, part), word_tokens(held)[0],
                                                   p.softmax_temperature, p.token_combine, p.smooth_kernel,
                                                   p.smooth_sigma))
            if len(slots) == len(self.concepts[row]):  # all of the image's concepts, in order: no restacking
                maps[row] = found
                continue
            for k, m in zip(slots, found, strict=True):
                maps[row][k] = m
        out = [maps[row] if isinstance(maps[row], torch.Tensor)
               else torch.stack(maps[row]) if maps[row] else avg.new_zeros((0, *hw)) for row in rows]
        if not words:
            return out
        return out, [self._word_maps(row, word_maps[row], pairs) if bind.get(row) else None for row in rows]

    def _word_maps(self, row: int, per_part: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int, int]],
                   ) -> WordMaps:
        """An image's binding maps from its sub-prompts' word maps (heads, then modifiers, per sub-prompt), in
        the image's concept order."""
        concepts = self.concepts[row]
        _, owner = word_tokens(concepts)
        parts = [part for _, r, part in pairs if r == row]
        if len(parts) == 1:  # one sub-prompt holds every concept: already in order
            return WordMaps(per_part[0][:len(concepts)], per_part[0][len(concepts):], owner)
        heads: list[torch.Tensor] = [None] * len(concepts)
        mods: dict[int, list[torch.Tensor]] = {}
        for part, m in zip(parts, per_part, strict=True):
            slots = [k for k, c in enumerate(concepts) if c.part == part]
            for i, k in enumerate(slots):
                heads[k] = m[i]
            at = len(slots)
            for k in slots:
                n = len(concepts[k].modifiers)
                mods[k] = list(m[at:at + n])
                at += n
        return WordMaps(torch.stack(heads), torch.stack([x for k in sorted(mods) for x in mods[k]]), owner)

    def _keys(self, row: int, part: int) -> int | Sequence[int]:
        keys = self.keys[row]
        if isinstance(keys, Mapping):
            return keys[part]
        return keys

    def _record_snapshot(self, step, rows, res: StepResult, x_after, sig, index, run_unet) -> None:
        info = self.current
        snap = info.snapshots.setdefault(step, Snapshot(step, [None] * len(self.concepts), [None] * len(self.concepts)))
        with torch.no_grad():
            after = self._forward_maps(x_after, sig, rows, index, run_unet)
        for i, row in enumerate(rows):
            snap.before[row] = (res.maps_before or [None] * len(rows))[i]
            snap.after[row] = after[i].detach().float().cpu()

    # ------------------------------------------------------------------ reporting
    def summary(self) -> str:
        """Short infotext summary per pass: refined steps, the segregation loss at the first and the last
        refined step, and the retention loss at the last one (A-STAR), the Attend-and-Excite loss at the first
        and the last refined step (A&E), each as a mean over the refined images."""
        parts = []
        for info in self.passes:
            if not info.results:
                continue
            done = sum(r.updates > 0 for r in info.results)
            # the sampler's own step count where it differs from the requested one (UniPC at some step counts,
            # DPM adaptive, which counts every attempted step)
            total = max(info.total_steps, info.steps_started, len(info.results))
            text = f"{info.label}: {done}/{total} steps"
            if info.batch_layout != "cond":
                text += f" ({BATCH_LAYOUTS[info.batch_layout]})"
            first, last = info.results[0], info.results[-1]
            if "seg" in first.parts and "seg" in last.parts:
                text += f", L_seg {_per_image(first, 'seg'):.3f}->{_per_image(last, 'seg'):.3f}"
            if "ret" in last.parts:
                text += f", L_ret {_per_image(last, 'ret'):.3f}"
            if "bind" in first.parts and "bind" in last.parts:  # attribute binding (binding.py)
                text += f", L_bind {_per_image(first, 'bind'):.3f}->{_per_image(last, 'bind'):.3f}"
            if "inbox" in first.parts and "inbox" in last.parts:  # layout: boxed concepts' map mass in their box
                text += f", in box {_per_image(first, 'inbox'):.2f}->{_per_image(last, 'inbox'):.2f}"
            if "aae" in first.parts and "aae" in last.parts:
                text += f", L_A&E {_per_image(first, 'aae'):.3f}->{_per_image(last, 'aae'):.3f}"
            parts.append(text)
        return "; ".join(parts)


def _per_image(result: StepResult, name: str) -> float:
    return result.parts[name] / max(result.images, 1)


def _free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
