"""AUTOMATIC1111 WebUI host: the tokenizer and UNet of its models and the UNet runner through the CFG
denoiser's inner model. The script's life cycle (shared with Forge) is in lifecycle.

With webui_prompts and forge, in hosts/, the only package of segret_lib that imports the WebUI (`modules`).
Everything installed is put back at the end of each sampling pass, in postprocess, and in p.close() (which
the WebUI runs even when a generation fails), so no hook outlives a generation.
"""

from __future__ import annotations

import torch
from modules import prompt_parser, scripts, shared
from modules.ui_components import InputAccordion
from torch import nn

from ..engine.prompt_plan import PromptPlan
from ..engine.session import ModelSwitched
from ..ui.xyz_axes import add_xyz_axes as _add_xyz_axes
from .host_pass import HostPass
from .lifecycle import Host, ScriptLifecycle, cat_padded
from .webui_prompts import prompt_plan, text_encoder

HOST_NAME = "AUTOMATIC1111 WebUI"


def add_xyz_axes() -> bool:
    """Register the A-STAR axes with the WebUI's X/Y/Z plot (called from scripts/segret.py on every (re)load)."""
    return _add_xyz_axes(scripts.scripts_data)


class WebUIHost(Host):
    """The A1111 script API (also what Forge keeps of it): state, options, prompt parsing, the CFG denoiser's
    conditioning layout."""

    name = HOST_NAME
    always_visible = scripts.AlwaysVisible
    input_accordion = staticmethod(InputAccordion)  # a function in Forge: not to be bound to the host

    @property
    def state(self):
        return shared.state

    def stopped(self) -> bool:
        return bool(shared.state.interrupted or shared.state.skipped)

    def use_old_scheduling(self) -> bool:
        return bool(getattr(shared.opts, "use_old_scheduling", False))

    def text_encoder(self, sd_model):
        return text_encoder(sd_model)

    def prompt_plan(self, sd_model, prompts, concepts, steps, hires_steps) -> PromptPlan:
        return prompt_plan(self.text_encoder(sd_model), prompts, concepts, steps, hires_steps,
                           self.use_old_scheduling())

    def unet(self, sd_model) -> nn.Module:
        return sd_model.model.diffusion_model

    def begin_pass(self, p, unet: nn.Module) -> HostPass:
        return WebUIPass()


class WebUIPass(HostPass):
    """A sampling pass in the A1111 WebUI: nothing to set up; the runners call the CFG denoiser's inner model."""

    def runners(self, denoiser, session, cond, uncond, image_cond):
        model = session.model
        return _unet_runner(denoiser, model, cond, image_cond), _unet_runner(denoiser, model, cond, image_cond, uncond)


class SegretScript(ScriptLifecycle, scripts.Script):
    """A-STAR: test-time attention segregation and retention."""

    host = WebUIHost()


def batch_conds(cond, uncond, step: int, rows, parts):
    """The conditioning of images `rows` (sub-prompt `parts[i]` each) at `step` from the CFG denoiser's cond and
    uncond: (cond tensor or dict, uncond tensor or dict or None)."""
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, step)
    idx = [conds_list[r][part][0] for r, part in zip(rows, parts, strict=True)]
    c = {k: v[idx] for k, v in tensor.items()} if isinstance(tensor, dict) else tensor[idx]
    if uncond is None:
        return c, None
    un = prompt_parser.reconstruct_cond_batch(uncond, step)
    u = {k: v[rows] for k, v in un.items()} if isinstance(un, dict) else un[rows]
    return c, u


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
        c, un = batch_conds(cond, uncond, denoiser.step, rows, parts)
        ic = image_cond[rows] if image_cond is not None else None
        if un is None:
            c = {**c, "c_concat": [ic]} if isinstance(c, dict) else {"c_crossattn": [c], "c_concat": [ic]}
            return model(x, sigma, cond=c)
        ic2 = torch.cat([ic, ic]) if ic is not None else None
        if isinstance(c, dict):
            c = {k: cat_padded(v, un[k]) for k, v in c.items()}
            c["c_concat"] = [ic2]
        else:
            c = {"c_crossattn": [cat_padded(c, un)], "c_concat": [ic2]}
        return model(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=c)

    return run
