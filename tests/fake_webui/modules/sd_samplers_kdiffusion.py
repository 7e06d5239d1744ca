"""KDiffusionSampler: real k-diffusion sampling functions driven like the WebUI drives them."""

import inspect

import torch

from modules import sd_samplers_common, sd_samplers_extra, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from segret_lib.testing.thirdparty import k_diffusion

samplers_k_diffusion = [
    ("Euler a", "sample_euler_ancestral", {"uses_ensd": True}),
    ("Euler", "sample_euler", {}),
    ("LMS", "sample_lms", {}),
    ("Heun", "sample_heun", {"second_order": True}),
    ("DPM2", "sample_dpm_2", {"second_order": True}),
    ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", {"second_order": True, "uses_ensd": True}),
    ("DPM++ 2M", "sample_dpmpp_2m", {}),
    ("DPM++ SDE", "sample_dpmpp_sde", {"second_order": True}),
    ("DPM fast", "sample_dpm_fast", {"uses_ensd": True}),
    ("DPM adaptive", "sample_dpm_adaptive", {"uses_ensd": True}),
    ("Restart", "restart", {"scheduler": "karras", "second_order": True}),
]


class CFGDenoiserKDiffusion(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            _, external = k_diffusion()
            self.model_wrap = external.CompVisDenoiser(shared.sd_model, quantize=shared.opts.enable_quantization)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        sampling, _ = k_diffusion()
        self.func = sd_samplers_extra.restart_sampler if funcname == "restart" else getattr(sampling, funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p, steps):
        return self.model_wrap.get_sigmas(steps)

    def _extra(self, p, x):
        extra = {}
        if "noise_sampler" in self.func.__code__.co_varnames:
            g = torch.Generator().manual_seed(int(p.seeds[0]) + 7)
            extra["noise_sampler"] = lambda s, sn: torch.randn(x.shape, generator=g).to(x.device)
        return extra

    def _run(self, p, x, sigmas, steps, conditioning, unconditional_conditioning, image_conditioning):
        self.initialize(p, x, conditioning, unconditional_conditioning, image_conditioning)
        extra = self._extra(p, x)
        parameters = inspect.signature(self.func).parameters
        if "sigma_min" in parameters:  # DPM fast / adaptive take the range and a number of evaluations
            extra.update(sigma_min=float(sigmas[-2]), sigma_max=float(sigmas[0]))
            if "n" in parameters:
                extra["n"] = steps
        else:
            extra["sigmas"] = sigmas
        return self.launch_sampling(steps, lambda: self.func(
            self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=True,
            callback=self.callback_state, **extra))

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        return self._run(p, x * sigmas[0], sigmas, steps, conditioning, unconditional_conditioning,
                         image_conditioning)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None,
                       image_conditioning=None):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigma_sched = self.get_sigmas(p, steps)[steps - t_enc - 1:]
        return self._run(p, x + noise * sigma_sched[0], sigma_sched, t_enc + 1, conditioning,
                         unconditional_conditioning, image_conditioning)
