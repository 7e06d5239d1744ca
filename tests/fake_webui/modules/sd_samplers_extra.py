"""The Restart sampler's structure (modules.sd_samplers_extra): Heun steps whose callback comes between the
two model evaluations, and from 20 steps on a restart segment that adds noise and steps down again."""

import itertools

import torch

from segret_lib.testing.thirdparty import k_diffusion


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0):
    sampling, _ = k_diffusion()
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    segments = []
    if steps >= 20:  # the automatic restart list: 9 steps from sigma 0.1 back up to sigma 2, once
        restart_steps = 9
        sigmas = sampling.get_sigmas_karras(steps - restart_steps, float(sigmas[-2]), float(sigmas[0]))
        at = int(torch.argmin((sigmas - 0.1).abs()))
        top = int(torch.argmin((sigmas - 2.0).abs()))
        if top < at:
            segments = [(at, sampling.get_sigmas_karras(restart_steps + 1, float(sigmas[at]), float(sigmas[top]))[:-1])]
    schedule = []
    for i in range(len(sigmas) - 1):
        schedule.append((sigmas[i], sigmas[i + 1]))
        for at, restart in segments:
            if i + 1 == at:
                schedule.extend(itertools.pairwise(restart))
    last = None
    for step_id, (old, new) in enumerate(schedule):
        if last is not None and last < old:  # restart: noise back up to the segment's top sigma
            x = x + torch.randn_like(x) * s_noise * (old**2 - last**2) ** 0.5
        denoised = model(x, old * s_in, **extra_args)
        d = sampling.to_d(x, old, denoised)
        if callback is not None:
            callback({"x": x, "i": step_id, "sigma": new, "sigma_hat": old, "denoised": denoised})
        if new == 0:
            x = x + d * (new - old)
        else:
            x_2 = x + d * (new - old)
            d_2 = sampling.to_d(x_2, new, model(x_2, new * s_in, **extra_args))
            x = x + (d + d_2) / 2 * (new - old)
        last = new
    return x
