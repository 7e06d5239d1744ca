"""Shared builders for tests: a tiny SD1 model with a k-diffusion denoiser, prompts and sessions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segret_lib.engine.session import PassInfo, SegretSession
from segret_lib.engine.session_factory import session_for_prompts
from segret_lib.settings.params import SegretParams
from segret_lib.testing.cfg import CFGModel
from segret_lib.testing.thirdparty import k_diffusion
from segret_lib.testing.tiny_models import TinyLDM, TinyTextEncoder, tiny_unet


@dataclass
class Rig:
    unet: torch.nn.Module
    ldm: TinyLDM
    denoiser: torch.nn.Module
    encoder: TinyTextEncoder

    def session(self, prompts, concepts=("cat", "dog"), **param_changes) -> SegretSession:
        param_changes.setdefault("step_rule", "steady")  # every step refined; the default rule has its own tests
        params = SegretParams(enabled=True, concepts=tuple(concepts), **param_changes)
        tokens = [self.encoder.prompt_tokens(prompt) for prompt in prompts]
        session, _ = session_for_prompts(params, self.unet, tokens, self.encoder.encode)
        return session

    def sample(self, prompts, sampler="sample_euler", steps=6, seed=0, session=None, pattern="first_order",
               scale=7.0):
        ks, _ = k_diffusion()
        sigmas = self.denoiser.get_sigmas(steps)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(len(prompts), 4, 32, 32, generator=g) * sigmas[0]
        cond, uncond = self.encoder(list(prompts)), self.encoder([""] * len(prompts))
        model = CFGModel(self.denoiser, cond, uncond, scale, session)
        if session is not None:
            session.begin_pass(PassInfo((32, 32), steps, "sigma", pattern))
        extra = {"noise_sampler": _noise_sampler(seed)} if "ancestral" in sampler or "sde" in sampler else {}
        try:
            with torch.no_grad():
                out = getattr(ks, sampler)(model, x, sigmas, callback=model.callback, disable=True, **extra)
        finally:
            if session is not None:
                session.close()
        return out, model


def _noise_sampler(seed):
    g = torch.Generator().manual_seed(seed + 1)
    return lambda sigma, sigma_next: torch.randn(1, 4, 32, 32, generator=g)


def make_rig(kind="sd1", seed=0) -> Rig:
    _, ke = k_diffusion()
    unet = tiny_unet(kind, seed)
    ldm = TinyLDM(unet)
    return Rig(unet, ldm, ke.CompVisDenoiser(ldm), TinyTextEncoder())
