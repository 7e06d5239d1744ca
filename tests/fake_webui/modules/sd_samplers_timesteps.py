"""Timestep samplers (DDIM): x is the DDPM latent z_t and the model returns eps; 'sigma' holds timesteps."""

import inspect

import torch

from modules import sd_samplers_common, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser


class CompVisTimestepsDenoiser(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = CompVisTimestepsDenoiser(shared.sd_model)
        return self.model_wrap


class _Schedule:
    """alphas_cumprod at the sampler's timesteps and the DDIM update x_t -> x_prev for a given eps."""

    def __init__(self, model, x, timesteps):
        alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
        self.alphas = alphas_cumprod[timesteps]
        self.alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
        self.s_x = x.new_ones((x.shape[0], 1, 1, 1))

    def update(self, x, e_t, index):
        a_t = self.alphas[index].item() * self.s_x
        a_prev = self.alphas_prev[index].item() * self.s_x
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0


def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    sched = _Schedule(model, x, timesteps)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones(x.shape[0])
    # as the WebUI's: len(timesteps) - 1 model calls, highest timestep first (timesteps[0] only gives the last
    # step's alphas_prev); the callback's i counts down
    for i in range(len(timesteps) - 1, 0, -1):
        e_t = model(x, timesteps[i].item() * s_in, **extra_args)
        x, pred_x0 = sched.update(x, e_t, i)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    """Pseudo linear multistep: the first step evaluates the model twice (a pseudo improved Euler step),
    later steps once, combining up to four previous eps."""
    sched = _Schedule(model, x, timesteps)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones(x.shape[0])
    old_eps = []
    for i in range(len(timesteps) - 1, 0, -1):  # len(timesteps) - 1 steps, as the WebUI's
        e_t = model(x, timesteps[i].item() * s_in, **extra_args)
        if not old_eps:
            x_prev, _ = sched.update(x, e_t, i)
            e_t_next = model(x_prev, timesteps[max(i - 1, 0)].item() * s_in, **extra_args)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = sched.update(x, e_t_prime, i)
        old_eps = [*old_eps, e_t][-3:]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.func = {"ddim": ddim, "plms": plms}[funcname]
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        # as the WebUI's: range(0, 1000, 1000 // steps) holds one more timestep when steps does not divide 1000
        return torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        timesteps = self.get_timesteps(p, steps)
        self.initialize(p, x, conditioning, unconditional_conditioning, image_conditioning)
        # as the WebUI's: `timesteps` goes in only where the function's signature names it
        extra = {"timesteps": timesteps} if "timesteps" in inspect.signature(self.func).parameters else {}
        return self.launch_sampling(steps, lambda: self.func(
            self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=True,
            callback=self.callback_state, **extra))
