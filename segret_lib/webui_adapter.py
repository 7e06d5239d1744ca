"""AUTOMATIC1111 WebUI glue: the AlwaysOn script, its per-generation sampler hooks and the UNet runner.

With webui_prompts, the only modules of segret_lib that import the WebUI (`modules`); arguments, UI and X/Y/Z
axes live in host-free modules (script_args, script_ui, xyz_axes). Everything installed here is put back at the
end of each sampling pass, in postprocess, and in p.close() (which the WebUI runs even when a generation
fails), so no hook outlives a generation.
"""

from __future__ import annotations

import logging

import torch
from modules import prompt_parser, scripts, shared
from modules.ui_components import InputAccordion

from .capture import cross_attention_modules
from .checkpointing import unet_blocks
from .generation import Generation
from .params import INFOTEXT_PREFIX, ParamError
from .prompt_plan import PromptPlan
from .schedule import evaluation_pattern
from .script_args import OVERRIDES_ATTR, looks_enabled, params_from_args
from .script_ui import build_ui
from .session import ModelSwitched, PassInfo, SegretSession
from .webui_prompts import prompt_plan, text_encoder
from .xyz_axes import add_xyz_axes as _add_xyz_axes

log = logging.getLogger("segret")

TITLE = "A-STAR"
WARNINGS_KEY = f"{INFOTEXT_PREFIX} warnings"
RESULT_KEY = f"{INFOTEXT_PREFIX} result"


def add_xyz_axes() -> bool:
    """Register the A-STAR axes with the WebUI's X/Y/Z plot (called from scripts/segret.py on every (re)load)."""
    return _add_xyz_axes(scripts.scripts_data)


class SegretScript(scripts.Script):
    """A-STAR: test-time attention segregation and retention."""

    sorting_priority = 20

    def __init__(self) -> None:
        super().__init__()
        self.gen: Generation | None = None

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool):
        return scripts.AlwaysVisible

    # ------------------------------------------------------------------ UI
    def ui(self, is_img2img: bool):
        parts = build_ui(is_img2img, InputAccordion)
        self.infotext_fields, self.paste_field_names = parts.infotext_fields, parts.paste_field_names
        return parts.components

    # ------------------------------------------------------------------ generation lifecycle
    def process(self, p, *args) -> None:
        self._cleanup()  # a previous generation that died before postprocess
        # X/Y/Z plot cells are shallow copies of one p and share extra_generation_params: drop our old entries
        for key in [k for k in p.extra_generation_params if str(k).startswith(f"{INFOTEXT_PREFIX} ")]:
            del p.extra_generation_params[key]
        try:
            params = params_from_args(args, getattr(p, OVERRIDES_ATTR, None))
        except ParamError as e:
            if looks_enabled(args):
                print(f"[A-STAR] not applied: {e}")
                p.extra_generation_params[WARNINGS_KEY] = f"not applied: {e}"
            return
        if not params.enabled:
            return
        self.gen = Generation(params)
        p.extra_generation_params.update(params.to_infotext())
        _chain_close(p, self._cleanup)

    def process_batch(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        # the WebUI builds each image's infotext from p.extra_generation_params right after its batch: the
        # entries of the previous batch must not carry over
        gen.begin_batch()
        _write_batch_infotext(p, gen)

    def process_before_every_sampling(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.end_pass()
        hires = bool(getattr(p, "is_hr_pass", False))
        if hires and not gen.params.hires:
            return
        try:
            self._begin_pass(p, gen, hires, kwargs.get("x"))
        except Exception as e:  # never break the generation
            log.exception("A-STAR setup failed")
            gen.warn(f"not applied to this pass: {type(e).__name__}: {e}")
            gen.end_pass()
        _write_batch_infotext(p, gen)

    def postprocess_batch(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.end_batch()
        _write_batch_infotext(p, gen)

    def postprocess(self, p, processed, *args) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.close()
        first = int(getattr(processed, "index_of_first_image", 0) or 0)
        infotexts = getattr(processed, "infotexts", None)
        overlays = gen.overlay_images(processed.images[first:], int(getattr(p, "batch_size", 1) or 1))
        extra = [(first + k, img) for k, img in overlays] + [(first, img) for img in gen.grids]
        for k, img in extra:  # each overlay with its own image's infotext
            processed.images.append(img)
            if infotexts is not None:
                infotexts.append(infotexts[k] if k < len(infotexts) else (infotexts[0] if infotexts else ""))
        self._cleanup()

    def _cleanup(self) -> None:
        if self.gen is not None:
            self.gen.close()
            self.gen = None

    # ------------------------------------------------------------------ one sampling pass
    def _begin_pass(self, p, gen: Generation, hires: bool, x: torch.Tensor | None) -> None:
        if gen.out_of_memory:
            gen.warn("out of memory in an earlier batch; A-STAR switched off for this generation")
            return
        sampler = p.sampler
        prompts = list(getattr(p, "hr_prompts", None) or p.prompts) if hires else list(p.prompts)
        steps = int((getattr(p, "hr_second_pass_steps", 0) or p.steps) if hires else p.steps)
        config = getattr(sampler, "config", None)
        plan = prompt_plan(text_encoder(p.sd_model), prompts, gen.params.concepts, *_schedule_steps(p, config, hires),
                           bool(getattr(shared.opts, "use_old_scheduling", False)))
        for w in plan.warnings:
            gen.warn(w)
        concepts, keys = plan.at_step(0)
        if not plan.found_any:
            gen.warn("none of the concepts is in the prompt; nothing to refine")
            return
        if (gen.params.method == "astar" and len(gen.params.concepts) > 1 and all(len(c) < 2 for c in concepts if c)
                and gen.params.ret_weight == 0):
            gen.warn("segregation needs two concepts in the prompt")
        if gen.session is None:
            unet = p.sd_model.model.diffusion_model
            gen.session = SegretSession(gen.params, cross_attention_modules(unet), concepts, keys,
                                        chunk_size=gen.chunk_size, blocks=unet_blocks(unet), low_vram=gen.low_vram,
                                        model=unet, layout=gen.layout)
        else:
            gen.session.set_tokens(concepts, keys)
        latent = tuple(x.shape[-2:]) if x is not None else (p.height // 8, p.width // 8)
        name = getattr(config, "name", None) or getattr(p, "sampler_name", "") or ""
        second = getattr(config, "options", {}).get("second_order") if config is not None else None
        timestep = type(sampler).__name__ == "CompVisSampler" or hasattr(sampler, "alphas_cumprod")
        info = PassInfo(latent, steps, "timestep" if timestep else "sigma", evaluation_pattern(name, second),
                        "hires pass" if hires else "first pass")
        gen.session.begin_pass(info)
        self._hook_sampler(sampler, gen, plan)

    def _hook_sampler(self, sampler, gen: Generation, plan: PromptPlan) -> None:
        session = gen.session
        denoiser = sampler.model_wrap_cfg
        first_call = [True]
        in_use = [plan.key(0)]  # the prompt-editing entries the session's token positions belong to

        def make_forward(original):
            def forward(x, sigma, *args, **kwargs):
                if not forward.segret_inert and not (shared.state.interrupted or shared.state.skipped):
                    if first_call[0]:
                        first_call[0] = False
                        session.set_total_steps(_pass_steps(denoiser, session.current.total_steps))
                    step = int(getattr(denoiser, "step", 0) or 0)
                    if plan.key(step) != in_use[0]:  # prompt editing switched the conditioning rows
                        in_use[0] = plan.key(step)
                        session.set_tokens(*plan.at_step(step))
                    uncond = kwargs.get("uncond", args[0] if len(args) > 0 else None)
                    cond = kwargs.get("cond", args[1] if len(args) > 1 else None)
                    image_cond = kwargs.get("image_cond", args[4] if len(args) > 4 else None)
                    session.before_model_call(x, sigma, _unet_runner(denoiser, session.model, cond, image_cond),
                                              _unet_runner(denoiser, session.model, cond, image_cond, uncond))
                return original(x, sigma, *args, **kwargs)

            return forward

        def make_callback(original):
            def callback_state(d):
                if not callback_state.segret_inert:
                    session.on_sampler_callback()
                return original(d)

            return callback_state

        gen.sampler_patches.patch(denoiser, "forward", make_forward)
        gen.sampler_patches.patch(sampler, "callback_state", make_callback)


def _pass_steps(denoiser, fallback: int) -> int:
    steps = getattr(shared.state, "sampling_steps", 0) or getattr(denoiser, "steps", 0) or fallback
    return int(steps)


def _schedule_steps(p, config, hires: bool) -> tuple[int, int | None]:
    """(base_steps, hires_steps) as the WebUI passes them to the prompt scheduler for this pass: the sampler's
    total steps (second-order samplers count two per step)."""
    def total(steps: int) -> int:
        return int(config.total_steps(steps)) if config is not None and hasattr(config, "total_steps") else steps

    base = int(getattr(p, "firstpass_steps", 0) or total(int(p.steps)))
    return (base, total(int(getattr(p, "hr_second_pass_steps", 0) or p.steps))) if hires else (base, None)


def _write_batch_infotext(p, gen: Generation) -> None:
    """The current batch's warnings and result as infotext entries (absent when there are none)."""
    for key, value in ((WARNINGS_KEY, "; ".join(gen.batch_warnings)), (RESULT_KEY, gen.batch_summary)):
        if value:
            p.extra_generation_params[key] = value
        else:
            p.extra_generation_params.pop(key, None)


def _unet_runner(denoiser, unet, cond, image_cond, uncond=None):
    """run_unet(x, sigma, rows, parts=None): the conditional model on images `rows` (with AND, each row's
    sub-prompt `parts[i]`), as the CFG denoiser would call it.

    With uncond: the CFG denoiser's batch layout, the rows' conditional inputs then their unconditional ones
    (for other extensions' hooks that split the batch in two halves). Raises ModelSwitched when the model is
    no longer the one whose UNet was hooked (the SDXL refiner replaces it mid-sampling).
    """

    def run(x, sigma, rows, parts=None):
        model = denoiser.inner_model
        current = getattr(getattr(getattr(model, "inner_model", None), "model", None), "diffusion_model", None)
        if unet is not None and current is not None and current is not unet:
            raise ModelSwitched("the model was switched during sampling (the SDXL refiner): A-STAR refines "
                                "the first model only")
        rows = list(rows)
        parts = parts or [0] * len(rows)
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, denoiser.step)
        idx = [conds_list[r][part][0] for r, part in zip(rows, parts, strict=True)]
        ic = image_cond[rows] if image_cond is not None else None
        if uncond is None:
            if isinstance(tensor, dict):
                c = {k: v[idx] for k, v in tensor.items()}
                c["c_concat"] = [ic]
            else:
                c = {"c_crossattn": [tensor[idx]], "c_concat": [ic]}
            return model(x, sigma, cond=c)
        un = prompt_parser.reconstruct_cond_batch(uncond, denoiser.step)
        ic2 = torch.cat([ic, ic]) if ic is not None else None
        if isinstance(tensor, dict):
            c = {k: _cat_padded(v[idx], un[k][rows]) for k, v in tensor.items()}
            c["c_concat"] = [ic2]
        else:
            c = {"c_crossattn": [_cat_padded(tensor[idx], un[rows])], "c_concat": [ic2]}
        return model(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=c)

    return run


def _cat_padded(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """cond rows then uncond rows; token lists of different length are padded with their last vector (the
    WebUI pads with an empty chunk; only the cond rows' maps are read)."""
    if cond.dim() == 3 and cond.shape[1] != uncond.shape[1]:
        n = max(cond.shape[1], uncond.shape[1])

        def pad(t):
            return torch.cat([t, t[:, -1:].expand(-1, n - t.shape[1], -1)], dim=1) if t.shape[1] < n else t

        cond, uncond = pad(cond), pad(uncond)
    return torch.cat([cond, uncond])


def _chain_close(p, cleanup) -> None:
    """Run our cleanup in p.close(), which the WebUI calls even when the generation raised."""
    original = p.close

    def close(*args, **kwargs):
        try:
            cleanup()
        except Exception:  # cleanup must never stop the WebUI from closing p
            log.exception("A-STAR cleanup failed")
        return original(*args, **kwargs)

    p.close = close
