"""CFGDenoiser with the WebUI's forward signature and order of operations."""

import torch

from modules import prompt_parser, sd_samplers_common, shared
from modules.shared import state


def catenate_conds(conds):
    if not isinstance(conds[0], dict):
        return torch.cat(conds)
    return {key: torch.cat([x[key] for x in conds]) for key in conds[0]}


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.model_wrap = None
        self.step = 0
        self.steps = None
        self.total_steps = None
        self.p = None
        self.calls = 0  # test bookkeeping: model evaluations

    @property
    def inner_model(self):
        raise NotImplementedError

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def apply_refiner(self):
        """sd_samplers_common.apply_refiner: past the switch the WebUI loads the refiner checkpoint, a new model
        object even for the same architecture, and rebuilds the inner model (tests set p.refiner_model)."""
        p = self.p
        refiner = getattr(p, "refiner_model", None)
        if refiner is None or shared.sd_model is refiner or self.step < p.refiner_switch_at * self.steps:
            return
        p.extra_generation_params["Refiner"] = "refiner"
        shared.sd_model = refiner
        self.model_wrap = None  # update_inner_model

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        self.calls += 1
        self.apply_refiner()
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        repeats = [len(conds_list[i]) for i in range(len(conds_list))]
        if isinstance(uncond, dict):
            def make_condition_dict(c_crossattn, c_concat):
                return {**c_crossattn, "c_concat": [c_concat]}
        else:
            def make_condition_dict(c_crossattn, c_concat):
                return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}
        x_in = torch.cat([torch.stack([x[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [x])
        sigma_in = torch.cat([torch.stack([sigma[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [sigma])
        image_cond_in = torch.cat([torch.stack([image_cond[i] for _ in range(n)]) for i, n in enumerate(repeats)]
                                  + [image_cond])
        if tensor.shape[1] == uncond.shape[1]:
            cond_in = catenate_conds([tensor, uncond])
            x_out = self.inner_model(x_in, sigma_in, cond=make_condition_dict(cond_in, image_cond_in))
        else:  # prompts of different chunk counts: cond and uncond batches run separately
            n = tensor.shape[0]
            x_out = torch.zeros_like(x_in)
            x_out[:n] = self.inner_model(x_in[:n], sigma_in[:n], cond=make_condition_dict(tensor, image_cond_in[:n]))
            x_out[n:] = self.inner_model(x_in[n:], sigma_in[n:], cond=make_condition_dict(uncond, image_cond_in[n:]))
        denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale)
        self.step += 1
        return denoised
