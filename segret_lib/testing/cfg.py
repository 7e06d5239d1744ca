"""The classifier-free-guidance model wrapper that drives real k-diffusion samplers with a SegretSession, shaped like
the WebUI's CFG denoiser (cond rows first, uncond last), without any WebUI code. Used by the tests, the speed
benchmark and quality/."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.session import SegretSession


class CFGModel:
    """k-diffusion model: calls the session before each evaluation, then the guided prediction.

    clip_denoised: clip the guided prediction of the clean image to [-1, 1], as pixel-space samplers do (DDPM's
    clip_denoised); quality/'s shapes model needs it (without it its errors at high noise accumulate into tinted,
    grainy images)."""

    def __init__(self, denoiser, cond: torch.Tensor, uncond: torch.Tensor, scale: float = 7.0,
                 session: SegretSession | None = None, clip_denoised: bool = False) -> None:
        self.denoiser, self.cond, self.uncond, self.scale, self.session = denoiser, cond, uncond, scale, session
        self.clip_denoised = clip_denoised
        self.calls: list[tuple[float, bool]] = []  # (sigma, refined)

    def run_unet(self, x_model: torch.Tensor, sigma: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """The conditional model on images `rows` (the session's RunUnet)."""
        return self.denoiser(x_model, sigma, cond={"c_crossattn": [self.cond[list(rows)]]})

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        refined = None
        if self.session is not None:
            refined = self.session.before_model_call(x, sigma, self.run_unet)
        self.calls.append((float(sigma.reshape(-1)[0]), refined is not None))
        n = x.shape[0]
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                            cond={"c_crossattn": [torch.cat([self.cond, self.uncond])]})
        d_c, d_u = out[:n], out[n:]
        guided = d_u + (d_c - d_u) * self.scale
        return guided.clamp(-1, 1) if self.clip_denoised else guided

    def callback(self, _info) -> None:
        """The sampler's per-step callback."""
        if self.session is not None:
            self.session.on_sampler_callback()
