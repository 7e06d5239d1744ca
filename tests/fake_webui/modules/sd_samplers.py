from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps

all_samplers = [
    sd_samplers_common.SamplerData(
        label, lambda model, f=funcname: sd_samplers_kdiffusion.KDiffusionSampler(f, model), [], options)
    for label, funcname, options in sd_samplers_kdiffusion.samplers_k_diffusion
] + [
    sd_samplers_common.SamplerData(
        label, lambda model, f=funcname: sd_samplers_timesteps.CompVisSampler(f, model), [], {})
    for label, funcname in (("DDIM", "ddim"), ("PLMS", "plms"))
]
all_samplers_map = {x.name: x for x in all_samplers}


def find_sampler_config(name):
    return all_samplers_map.get(name)


def create_sampler(name, model):
    config = all_samplers_map.get(name)
    if config is None:
        raise ValueError(f"bad sampler name: {name}")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler
