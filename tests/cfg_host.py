"""A minimal classifier-free-guidance model for driving real k-diffusion samplers with a SegretSession,
shaped like the WebUI's CFG denoiser (cond rows first, uncond last), without any WebUI code."""

from __future__ import annotations

import torch

from segret_lib.engine.session import SegretSession


class CFGModel:
    def __init__(self, denoiser, cond: torch.Tensor, uncond: torch.Tensor, scale: float = 7.0,
                 session: SegretSession | None = None) -> None:
        self.denoiser, self.cond, self.uncond, self.scale, self.session = denoiser, cond, uncond, scale, session
        self.calls: list[tuple[float, bool]] = []  # (sigma, refined)

    def run_unet(self, x_model, sigma, rows):
        return self.denoiser(x_model, sigma, cond={"c_crossattn": [self.cond[list(rows)]]})

    def __call__(self, x, sigma, **kwargs):
        refined = None
        if self.session is not None:
            refined = self.session.before_model_call(x, sigma, self.run_unet)
        self.calls.append((float(sigma.reshape(-1)[0]), refined is not None))
        n = x.shape[0]
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                            cond={"c_crossattn": [torch.cat([self.cond, self.uncond])]})
        d_c, d_u = out[:n], out[n:]
        return d_u + (d_c - d_u) * self.scale

    def callback(self, d):
        if self.session is not None:
            self.session.on_sampler_callback()
