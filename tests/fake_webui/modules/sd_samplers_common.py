from collections import namedtuple

from modules.shared import state


class InterruptedException(BaseException):
    pass


class SamplerData(namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])):
    def total_steps(self, steps):
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def setup_img2img_steps(p, steps=None):
    requested_steps = steps or p.steps
    steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
    t_enc = requested_steps - 1
    return steps, t_enc


class Sampler:
    """Shared parts of the WebUI's samplers (modules.sd_samplers_common.Sampler)."""

    def __init__(self, funcname):
        self.funcname = funcname
        self.config = None
        self.last_latent = None
        self.s_min_uncond = 0.0
        self.sampler_extra_args = {}

    def callback_state(self, d):
        state.sampling_step = d["i"]
        self.last_latent = d["denoised"]

    def launch_sampling(self, steps, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p, x, conditioning, unconditional_conditioning, image_conditioning):
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.p = p
        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale,
                                   "s_min_uncond": self.s_min_uncond}
