"""The A-STAR script's life cycle, shared by every WebUI-like host (AUTOMATIC1111, Forge): arguments, infotext,
per-pass setup, the sampler's forward/callback hooks and the cleanup that runs even when a generation fails.

Host-free: everything that differs between hosts (the tokenizer, the UNet, the model call, gradient guards,
memory) comes through a `Host` object; the host files (a1111.py, forge.py) define the Script
class as `class SegretScript(ScriptLifecycle, <host>.scripts.Script)` with their host. A third host is one more
such file.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..engine.prompt_plan import PromptPlan
from ..engine.schedule import evaluation_pattern
from ..engine.session import PassInfo, SegretSession
from ..engine.session_factory import new_session
from ..settings.params import INFOTEXT_PREFIX, ParamError
from ..settings.table import OUTPUT_KEYS, infotext_key
from ..settings.text import shorten
from ..ui.accordion import build_ui
from ..ui.script_args import OVERRIDES_ATTR, looks_enabled, params_from_args
from .generation import Generation
from .host_pass import HostPass

log = logging.getLogger("segret")

TITLE = "A-STAR"
WARNINGS_KEY, RESULT_KEY = (infotext_key(k) for k in OUTPUT_KEYS)  # no setting may use them (settings/table.py)


class Host:
    """What one host provides. Subclasses override what differs; the defaults suit the A1111 script API."""

    name = "webui"
    always_visible: Any = True  # scripts.AlwaysVisible
    input_accordion: Any = None  # modules.ui_components.InputAccordion

    def stopped(self) -> bool:
        """The user interrupted or skipped the current image."""
        return False

    def use_old_scheduling(self) -> bool:
        return False

    def prompt_plan(self, sd_model, prompts: list[str], concepts, steps: int, hires_steps: int | None) -> PromptPlan:
        raise NotImplementedError

    def unet(self, sd_model) -> nn.Module:
        """The UNet (diffusion_model) whose cross-attention layers are captured."""
        raise NotImplementedError

    def is_timestep_sampler(self, sampler) -> bool:
        """Whether the CFG denoiser receives timesteps (DDIM/PLMS/UniPC) rather than sigmas."""
        return type(sampler).__name__ == "CompVisSampler" or hasattr(sampler, "alphas_cumprod")

    def begin_pass(self, p, unet: nn.Module) -> HostPass:
        """Set up one sampling pass (gradient guards, memory): its runners and what undoes the setup (its close(),
        which gen.end_pass() calls). A setup that fails half-way undoes itself and raises."""
        raise NotImplementedError


class ScriptLifecycle:
    """The AlwaysOn script's methods; mixed into each host's scripts.Script subclass, which sets `host`."""

    host: Host = Host()
    sorting_priority = 20

    def __init__(self) -> None:
        super().__init__()
        self.gen: Generation | None = None

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool):
        return self.host.always_visible

    # ------------------------------------------------------------------ UI
    def ui(self, is_img2img: bool):
        parts = build_ui(is_img2img, self.host.input_accordion)
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
                message = shorten(f"not applied: {e}")
                print(f"[A-STAR] {message}")
                p.extra_generation_params[WARNINGS_KEY] = message
            return
        if not params.enabled:
            return
        self.gen = Generation(params)
        p.extra_generation_params.update(params.to_infotext())
        chain_close(p, self._cleanup)

    def process_batch(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        # the WebUI builds each image's infotext from p.extra_generation_params right after its batch: the
        # entries of the previous batch must not carry over
        gen.begin_batch()
        write_batch_infotext(p, gen)

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
        write_batch_infotext(p, gen)

    def postprocess_batch(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.end_batch()
        write_batch_infotext(p, gen)

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
        if gen.fallbacks.out_of_memory and gen.session is None:
            gen.warn("out of memory in an earlier batch; A-STAR switched off for this generation")
            return
        host = self.host
        sampler = p.sampler
        prompts = list(getattr(p, "hr_prompts", None) or p.prompts) if hires else list(p.prompts)
        steps = int((getattr(p, "hr_second_pass_steps", 0) or p.steps) if hires else p.steps)
        config = getattr(sampler, "config", None)
        plan = host.prompt_plan(p.sd_model, prompts, gen.params.concepts, *schedule_steps(p, config, hires))
        for w in plan.warnings:
            gen.warn(w)
        concepts, keys = plan.at_step(0)
        if not plan.found_any:
            gen.warn("none of the concepts is in the prompt; nothing to refine")
            return
        if (gen.params.method == "astar" and len(gen.params.concepts) > 1 and all(len(c) < 2 for c in concepts if c)
                and gen.params.ret_weight == 0):
            gen.warn("segregation needs two concepts in the prompt")
        unet = host.unet(p.sd_model)
        gen.host_pass = host.begin_pass(p, unet)
        if gen.session is None:
            gen.session = new_session(gen.params, unet, concepts, keys, fallbacks=gen.fallbacks)
        else:
            gen.session.set_tokens(concepts, keys)
        latent = tuple(x.shape[-2:]) if x is not None else (p.height // 8, p.width // 8)
        name = getattr(config, "name", None) or getattr(p, "sampler_name", "") or ""
        second = getattr(config, "options", {}).get("second_order") if config is not None else None
        timestep = host.is_timestep_sampler(sampler)
        info = PassInfo(latent, steps, "timestep" if timestep else "sigma", evaluation_pattern(name, second),
                        "hires pass" if hires else "first pass")
        gen.session.begin_pass(info)
        self._hook_sampler(p, sampler, gen, plan)

    def _hook_sampler(self, p, sampler, gen: Generation, plan: PromptPlan) -> None:
        host = self.host
        session: SegretSession = gen.session
        host_pass: HostPass = gen.host_pass
        denoiser = sampler.model_wrap_cfg
        first_call = [True]
        in_use = [plan.key(0)]  # the prompt-editing entries the session's token positions belong to
        loop_steps = [0]  # model steps of a timestep sampler's loop, read from the timesteps it is given

        def make_forward(original):
            def forward(x, sigma, *args, **kwargs):
                if not forward.segret_inert and not host.stopped():
                    if first_call[0]:
                        first_call[0] = False
                        session.set_total_steps(loop_steps[0] or pass_steps(host, denoiser,
                                                                            session.current.total_steps))
                    step = int(getattr(denoiser, "step", 0) or 0)
                    if plan.key(step) != in_use[0]:  # prompt editing switched the conditioning rows
                        in_use[0] = plan.key(step)
                        session.set_tokens(*plan.at_step(step))
                    uncond = kwargs.get("uncond", args[0] if len(args) > 0 else None)
                    cond = kwargs.get("cond", args[1] if len(args) > 1 else None)
                    image_cond = kwargs.get("image_cond", args[4] if len(args) > 4 else None)
                    session.before_model_call(x, sigma, *host_pass.runners(denoiser, session, cond, uncond, image_cond))
                return original(x, sigma, *args, **kwargs)

            return forward

        def make_callback(original):
            def callback_state(d):
                if not callback_state.segret_inert:
                    session.on_sampler_callback()
                return original(d)

            return callback_state

        def make_func(original):
            @functools.wraps(original)  # the WebUI passes `timesteps` only if inspect.signature(func) has it
            def func(*args, **kwargs):
                if not func.segret_inert:
                    loop_steps[0] = timestep_loop_steps(original, args, kwargs)
                return original(*args, **kwargs)

            return func

        gen.sampler_patches.patch(denoiser, "forward", make_forward)
        gen.sampler_patches.patch(sampler, "callback_state", make_callback)
        if host.is_timestep_sampler(sampler) and callable(getattr(sampler, "func", None)):
            gen.sampler_patches.patch(sampler, "func", make_func)


# The WebUI's (and Forge's) DDIM, DDIM CFG++ and PLMS loop over len(timesteps) - 1 model steps: timesteps[0]
# only gives the last step its alphas_prev. So at 8 steps they evaluate the model 7 times (the progress bar's
# step count is one more than the steps they run), and at 6 steps, where 1000 // 6 leaves one more timestep,
# 6 times. Every one of those steps is refined; this is the count the infotext reports.
ONE_LESS_LOOPS = frozenset({"ddim", "ddim_cfgpp", "plms"})


def timestep_loop_steps(func, args: tuple, kwargs: dict) -> int:
    """The model steps a timestep sampler's function runs for the timesteps it is called with (0: unknown)."""
    if getattr(func, "__name__", "") not in ONE_LESS_LOOPS:
        return 0
    timesteps = kwargs.get("timesteps", args[2] if len(args) > 2 else None)
    try:
        return max(len(timesteps) - 1, 0)
    except TypeError:
        return 0


def pass_steps(host: Host, denoiser, fallback: int) -> int:
    """The steps the sampler really runs (the host's sampling state, else the denoiser's, else `fallback`)."""
    state = getattr(host, "state", None)
    steps = getattr(state, "sampling_steps", 0) or getattr(denoiser, "steps", 0) or fallback
    return int(steps)


def schedule_steps(p, config, hires: bool) -> tuple[int, int | None]:
    """(base_steps, hires_steps) as the WebUI passes them to the prompt scheduler for this pass: the sampler's
    total steps (second-order samplers count two per step)."""
    def total(steps: int) -> int:
        return int(config.total_steps(steps)) if config is not None and hasattr(config, "total_steps") else steps

    base = int(getattr(p, "firstpass_steps", 0) or total(int(p.steps)))
    return (base, total(int(getattr(p, "hr_second_pass_steps", 0) or p.steps))) if hires else (base, None)


def write_batch_infotext(p, gen: Generation) -> None:
    """The current batch's warnings and result as infotext entries (absent when there are none)."""
    for key, value in ((WARNINGS_KEY, "; ".join(gen.batch_warnings)), (RESULT_KEY, gen.batch_summary)):
        if value:
            p.extra_generation_params[key] = value
        else:
            p.extra_generation_params.pop(key, None)


def cat_padded(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """cond rows then uncond rows; token lists of different length are padded with their last vector (the
    WebUI pads with an empty chunk; only the cond rows' maps are read)."""
    if cond.dim() == 3 and cond.shape[1] != uncond.shape[1]:
        n = max(cond.shape[1], uncond.shape[1])

        def pad(t):
            return torch.cat([t, t[:, -1:].expand(-1, n - t.shape[1], -1)], dim=1) if t.shape[1] < n else t

        cond, uncond = pad(cond), pad(uncond)
    return torch.cat([cond, uncond])


def chain_close(p, cleanup: Callable[[], None]) -> None:
    """Run our cleanup in p.close(), which the WebUI calls even when the generation raised."""
    original = p.close

    def close(*args, **kwargs):
        try:
            cleanup()
        except Exception:  # cleanup must never stop the WebUI from closing p
            log.exception("A-STAR cleanup failed")
        return original(*args, **kwargs)

    p.close = close
