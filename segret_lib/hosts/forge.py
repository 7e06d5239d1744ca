"""Stable Diffusion WebUI Forge host: what differs from the A1111 WebUI (hosts.a1111).

- the tokenizer is the model's text processing engine (SDXL: the CLIP-L one), the UNet is
  `forge_objects.unet.model.diffusion_model`;
- the model call goes through Forge's `apply_model` (a sigma, denoised output) with a copy of the UNet patcher's
  transformer_options, whose attn2 replace patches (e.g. the built-in IP-Adapter) are wrapped so they report
  their attention probabilities too; DDIM/PLMS/UniPC hand over timesteps, converted to sigmas here;
- ControlNet units (the UNet patcher's `controlnet_linked_list`): the refinement call gets their residuals as
  Forge's sampling call does (`calc_cond_uncond_batch`), with the refined rows' hints, and leaves the control
  objects' state as it found it;
- gradient guards, because Forge samples under inference mode and its transformer blocks add residuals in place:
  weights that are inference tensors are swapped for normal copies (the UNet's and the ControlNets'), weights
  made per call (online LoRA) are copied as Forge's layers fetch them, the transformer blocks' norms get a copy
  of their input and the UNet adds ControlNet residuals out of place while gradients are on. All are checked at
  every refinement call and undone at the end of the pass, identity-checked (Forge may have moved or replaced a
  weight meanwhile);
- the backward pass's memory is reserved through Forge's memory manager (a per-pass UnetPatcher clone).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from modules import scripts
from torch import nn

from ..engine.capture import AttentionCapture, attention_probs
from ..engine.patching import InstancePatches, parameters_frozen
from ..engine.session import ModelSwitched, SegretSession
from .a1111 import WebUIHost, add_xyz_axes, batch_conds
from .host_pass import HostPass
from .lifecycle import ScriptLifecycle, cat_padded
from .lowbit import refusal

__all__ = ["ForgeHost", "SegretScript", "add_xyz_axes"]

HOST_NAME = "WebUI Forge"
BACKWARD_MEMORY_FACTOR = 3  # the refinement keeps activations and their gradients: about 3x an inference call
CONTROLNET_MEMORY_SHARE = 0.5  # a ControlNet model runs a copy of the UNet's encoder: about half its activations


class ForgeHost(WebUIHost):
    """Forge keeps the A1111 script API; the model side is its own backend."""

    name = HOST_NAME

    def text_encoder(self, sd_model):
        for name in ("text_processing_engine", "text_processing_engine_l"):
            engine = getattr(sd_model, name, None)
            if engine is not None and hasattr(engine, "tokenize_line"):
                return engine
        raise RuntimeError("this model has no CLIP text processing engine (A-STAR supports SD1, SD2 and SDXL "
                           "models in Forge)")

    def unet(self, sd_model) -> nn.Module:
        return sd_model.forge_objects.unet.model.diffusion_model

    def is_timestep_sampler(self, sampler) -> bool:
        return bool(getattr(sampler.model_wrap_cfg, "classic_ddim_eps_estimation", False))

    def begin_pass(self, p, unet: nn.Module) -> ForgePass:
        message = refusal(unet)
        if message:
            raise RuntimeError(message)
        host_pass = ForgePass()
        try:
            reserve_backward_memory(p, host_pass)
            guard = GradientGuard(unet)
            host_pass.on_close(guard.remove)  # registered first: undone even if installing fails half-way
            guard.install()
            guard.check()
        except BaseException:
            host_pass.close()
            raise
        host_pass.guard = guard
        return host_pass


class ForgePass(HostPass):
    """A sampling pass in Forge: the backward pass's memory reserved, the gradient guard installed (its runners
    re-check it at every refinement call); close() undoes both."""

    def __init__(self) -> None:
        super().__init__()
        self.guard: GradientGuard | None = None

    def runners(self, denoiser, session, cond, uncond, image_cond):
        return (_forge_runner(denoiser, session, self.guard, cond, image_cond),
                _forge_runner(denoiser, session, self.guard, cond, image_cond, uncond))


class SegretScript(ScriptLifecycle, scripts.Script):
    """A-STAR: test-time attention segregation and retention (Forge)."""

    host = ForgeHost()


def reserve_backward_memory(p, host_pass: HostPass) -> None:
    """Ask Forge's memory manager to keep room for the backward pass: a clone of this pass's UnetPatcher with
    extra preserved memory (more for each ControlNet model the refinement runs too: ControlNet's
    process_before_every_sampling runs before this script's); the previous patcher comes back when the pass is
    closed."""
    objects = p.sd_model.forge_objects
    previous = objects.unet
    patcher = previous.clone()
    rows = max(1, int(getattr(p, "batch_size", 1) or 1))
    shape = [rows, 4, max(1, int(p.height) // 8), max(1, int(p.width) // 8)]
    try:
        nets = len(control_models(control_chain(getattr(patcher, "controlnet_linked_list", None))))
        need = int(patcher.model.memory_required(shape) * BACKWARD_MEMORY_FACTOR
                   * (1 + CONTROLNET_MEMORY_SHARE * nets))
    except Exception:  # an estimate only; Forge's own estimate still applies
        need = 0
    if need > 0:
        patcher.add_extra_preserved_memory_during_sampling(need)
    objects.unet = patcher

    def put_back() -> None:
        if objects.unet is patcher:
            objects.unet = previous

    host_pass.on_close(put_back)


class GradientGuard:
    """Makes Forge's UNet differentiable with respect to its input for the refinement, and undoes it.

    1. Parameters that are inference tensors (Forge loads, casts and moves weights under inference mode) are
       replaced by normal copies that do not require grad; check() runs before each refinement call, since
       Forge makes new inference tensors when it moves or casts the model.
    2. The transformer blocks' norm1/norm2/norm3 get a copy of their input while gradients are on: the block
       adds its residuals in place (`x += ...`) into the tensor the norm saved for backward.
    3. Weights made per call under inference mode (online LoRA) are copied as the layers fetch them.
    4. ControlNet residuals are added out of place while gradients are on: the UNet adds them in place
       (`backend.nn.unet.apply_control`: `h += ctrl`) into skip connections the next block saved for backward.
    A ControlNet's model is covered (1 and 2) from the first refinement call that uses it (cover()).
    """

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.models: list[nn.Module] = [unet]
        self.swapped: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = []
        self.patches = InstancePatches()

    def install(self) -> None:
        """Wrap the norms, the weight fetch and the control residuals' add (check() swaps the weights)."""
        self._wrap_norms(self.unet)
        # 3. weights made per call under inference mode (online LoRA merges them in backend.patcher.lora under
        #    torch.inference_mode()): Forge's layers fetch them through backend.operations.get_weight_and_bias
        operations = sys.modules.get("backend.operations")
        if operations is not None and hasattr(operations, "get_weight_and_bias"):
            self.patches.patch(operations, "get_weight_and_bias", _normal_weights_when_differentiating)
        # 4. the UNet's forward looks apply_control up in its module at every call
        unet_module = sys.modules.get("backend.nn.unet")
        if unet_module is not None and hasattr(unet_module, "apply_control"):
            self.patches.patch(unet_module, "apply_control", _control_out_of_place_when_differentiating)

    def cover(self, model: nn.Module) -> None:
        """Guard another model the refinement call runs (a ControlNet's): its norms now, its weights in check()."""
        if any(m is model for m in self.models):
            return
        self.models.append(model)
        self._wrap_norms(model)

    def _wrap_norms(self, model: nn.Module) -> None:
        for module in model.modules():
            if hasattr(module, "attn2") and all(hasattr(module, n) for n in ("norm1", "norm2", "norm3")):
                for name in ("norm1", "norm2", "norm3"):
                    self.patches.patch(getattr(module, name), "forward", _copy_input_when_differentiating)

    def check(self) -> int:
        """Swap every parameter that is (again) an inference tensor; returns how many were swapped now."""
        count = 0
        with torch.inference_mode(False):
            for module in (m for model in self.models for m in model.modules()):
                for name, param in list(module._parameters.items()):
                    if param is None or not param.is_inference():
                        continue
                    copy = nn.Parameter(param.detach().clone(), requires_grad=False)
                    module._parameters[name] = copy
                    self.swapped.append((module, name, param, copy))
                    count += 1
        return count

    def remove(self) -> None:
        """Put back the original parameters (where ours are still in place) and the norms' forwards."""
        for module, name, original, copy in reversed(self.swapped):
            if module._parameters.get(name) is copy:
                module._parameters[name] = original
        self.swapped.clear()
        self.patches.restore()
        del self.models[1:]


def _copy_input_when_differentiating(original: Callable) -> Callable:
    def forward(x, *args, **kwargs):
        if not forward.segret_inert and torch.is_grad_enabled():
            x = x.clone()
        return original(x, *args, **kwargs)

    return forward


def _normal_weights_when_differentiating(original: Callable) -> Callable:
    def get_weight_and_bias(*args, **kwargs):
        weight, bias = original(*args, **kwargs)
        if not get_weight_and_bias.segret_inert and torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            if weight is not None and weight.is_inference():
                weight = weight.clone()
            if bias is not None and bias.is_inference():
                bias = bias.clone()
        return weight, bias

    return get_weight_and_bias


def _control_out_of_place_when_differentiating(original: Callable) -> Callable:
    def apply_control(h, control, name):
        if (apply_control.segret_inert or not torch.is_grad_enabled() or torch.is_inference_mode_enabled()
                or control is None or not control.get(name)):
            return original(h, control, name)
        ctrl = control[name].pop()
        if ctrl is None:
            return h
        try:
            fits = torch.broadcast_shapes(h.shape, ctrl.shape) == h.shape
        except RuntimeError:
            fits = False
        if not fits:  # what `h += ctrl` refuses (Forge prints the same and goes on)
            print("warning control could not be applied", h.shape, ctrl.shape)
            return h
        return (h + ctrl).to(h.dtype)  # as `h += ctrl` computes and stores it

    return apply_control


def capturing_attn2_patch(capture: AttentionCapture, original: Callable) -> Callable:
    """Wraps another extension's attn2 replace patch (Forge calls it with projected q, k, v instead of calling
    attn2.forward): it also records the text-attention probabilities the capture asks for, then runs as before."""

    def patch(q, k, v, extra_options):
        if capture.active and q.shape[1] == capture.target_pixels:
            heads = int(extra_options["n_heads"])
            d = int(extra_options.get("dim_head", q.shape[-1] // heads))
            capture.record(attention_probs(q, k, heads, d**-0.5))
        return original(q, k, v, extra_options)

    return patch


def transformer_options_for(patcher, capture: AttentionCapture, sigma: torch.Tensor, cond_or_uncond: list[int]):
    """A copy of the patcher's transformer_options for one refinement call (the sampler's own is left alone)."""
    options = dict(patcher.model_options.get("transformer_options", {}))
    replace = options.get("patches_replace")
    if replace and replace.get("attn2"):
        replace = dict(replace)
        replace["attn2"] = {key: capturing_attn2_patch(capture, f) for key, f in replace["attn2"].items()}
        options["patches_replace"] = replace
    per = int(sigma.shape[0]) // max(len(cond_or_uncond), 1)
    options["cond_or_uncond"] = list(cond_or_uncond)
    options["sigmas"] = sigma
    options["cond_mark"] = torch.tensor([c for c in cond_or_uncond for _ in range(per)]).to(sigma)
    options["cond_indices"] = [i for i in range(len(cond_or_uncond) * per) if cond_or_uncond[i // per] == 0]
    options["uncond_indices"] = [i for i in range(len(cond_or_uncond) * per) if cond_or_uncond[i // per] != 0]
    return options


# what a control object (backend.patcher.controlnet: ControlNet, ControlLora, T2IAdapter) keeps between calls that
# control_residuals may change: the transformer_options Forge sets before each call, the hint resized (and
# broadcast to the batch) at the first call, a T2I adapter's cached features, the per-image inputs
_CONTROL_STATE = ("transformer_options", "cond_hint", "control_input", "cond_hint_original",
                  "advanced_mask_weighting", "advanced_frame_weighting")
_PER_IMAGE = ("cond_hint_original", "advanced_mask_weighting", "advanced_frame_weighting")


def control_chain(control) -> list:
    """The units of a ControlNet linked list (UnetPatcher.controlnet_linked_list), newest first."""
    chain = []
    while control is not None:
        chain.append(control)
        control = getattr(control, "previous_controlnet", None)
    return chain


def control_models(chain) -> list[nn.Module]:
    """The torch models a ControlNet chain runs (ControlNet, ControlLora: control_model; T2I adapter: t2i_model)."""
    found = []
    for unit in chain:
        for name in ("control_model", "t2i_model"):
            model = getattr(unit, name, None)
            if isinstance(model, nn.Module) and not any(model is m for m in found):
                found.append(model)
    return found


def control_residuals(control, x: torch.Tensor, sigma: torch.Tensor, cond: dict, options: dict, rows: list[int],
                      chunks: int):
    """The ControlNet residuals for one refinement call, as Forge's sampling call computes them
    (backend/sampling/sampling_function.py, calc_cond_uncond_batch): every unit gets the call's
    transformer_options, then control.get_control(x, sigma, a copy of the conds, chunks), which applies each
    unit's strength, weighting and timestep range. The refinement runs on some of the batch's images (`rows`):
    per-image hints, masks and frame weights are narrowed to those rows (else Forge's broadcast would take the
    batch's first ones). The models' weights do not require grad meanwhile; the gradient goes to `x`. Each
    unit's state is put back afterwards, so the sampling calls find what they left."""
    chain = control_chain(control)
    saved = [(unit, {k: unit.__dict__[k] for k in _CONTROL_STATE if k in unit.__dict__}) for unit in chain]
    try:
        for unit in chain:
            unit.transformer_options = options
            _narrow_to_rows(unit, rows)
        with parameters_frozen(*control_models(chain)):
            return control.get_control(x, sigma, dict(cond), chunks)
    finally:
        for unit, state in saved:
            for k, v in state.items():
                setattr(unit, k, v)


def _narrow_to_rows(unit, rows: list[int]) -> None:
    narrowed = False
    for name in _PER_IMAGE:
        value = unit.__dict__.get(name)
        n = len(value) if isinstance(value, (torch.Tensor, list, tuple)) else 0
        if n <= 1 or max(rows) >= n or rows == list(range(n)):
            continue  # one for the whole batch, not per image, or already these rows
        if isinstance(value, torch.Tensor):
            setattr(unit, name, value[torch.tensor(rows, device=value.device)])
        else:
            setattr(unit, name, [value[r] for r in rows])
        narrowed |= name == "cond_hint_original"
    if narrowed:  # Forge resizes (and caches) the hint again from the narrowed one
        for name in ("cond_hint", "control_input"):
            if name in unit.__dict__:
                setattr(unit, name, None)


def _sigmas_of_timesteps(denoiser, t: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar_t) / abar_t) at the (rounded) timesteps, as Forge's CFG denoiser converts them."""
    abar = denoiser.inner_model.inner_model.alphas_cumprod.to(t.device, torch.float32)
    table = ((1 - abar) / abar) ** 0.5
    return table[t.round().long().clamp(0, table.shape[0] - 1)]


def _forge_runner(denoiser, session: SegretSession, guard: GradientGuard | None, cond, image_cond, uncond=None):
    """run_unet(x, sigma, rows, parts=None) through Forge's apply_model (see a1111._unet_runner)."""

    def run(x, sigma, rows, parts=None):
        patcher = denoiser.inner_model.inner_model.forge_objects.unet
        model = patcher.model
        if session.model is not None and model.diffusion_model is not session.model:
            raise ModelSwitched("the model was switched during sampling (the refiner): A-STAR refines the first "
                                "model only")
        control = getattr(patcher, "controlnet_linked_list", None)  # ControlNet units, as the sampling call
        if guard is not None:
            for net in control_models(control_chain(control)):
                guard.cover(net)
            guard.check()
        rows = list(rows)
        parts = parts or [0] * len(rows)
        c, un = batch_conds(cond, uncond, denoiser.step, rows, parts)
        if getattr(denoiser, "classic_ddim_eps_estimation", False):  # DDIM/PLMS/UniPC: x is the model's input
            sigma = _sigmas_of_timesteps(denoiser, sigma)
            x = x * ((sigma**2 + 1) ** 0.5).reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        if un is not None:
            x, sigma = torch.cat([x, x]), torch.cat([sigma, sigma])
            c = {k: cat_padded(v, un[k]) for k, v in c.items()} if isinstance(c, dict) else cat_padded(c, un)
        extra = {}
        if isinstance(c, dict):
            crossattn = c["crossattn"]
            if c.get("vector") is not None:
                extra["y"] = c["vector"].clone()
        else:
            crossattn = c
        ic = image_cond[rows] if image_cond is not None else None
        if (ic is not None and getattr(model.diffusion_model, "in_channels", 4) > 4
                and ic.shape[-2:] == x.shape[-2:]):  # inpainting models take the masked image as extra channels
            extra["c_concat"] = (torch.cat([ic, ic]) if un is not None else ic).clone()
        options = transformer_options_for(patcher, session.capture, sigma, [0, 1] if un is not None else [0])
        crossattn = crossattn.clone()
        if control is not None:  # as Forge's sampling call: c['control'], c['control_model']
            cond_in = {"c_crossattn": crossattn, "transformer_options": options, **extra}
            extra["control"] = control_residuals(control, x, sigma, cond_in, options, rows,
                                                 2 if un is not None else 1)
            extra["control_model"] = control
        return model.apply_model(x, sigma, c_crossattn=crossattn, transformer_options=options, **extra)

    return run
