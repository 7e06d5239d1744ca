"""StableDiffusionProcessing and process_images in the WebUI's order of script calls (no VAE: the
'images' are made from latents, which are kept on Processed.latents for the tests)."""

from __future__ import annotations

from contextlib import closing

import numpy as np
import torch
from PIL import Image

from modules import infotext_utils, prompt_parser, sd_samplers, shared
from modules.shared import state


def latent_to_image(latent: torch.Tensor) -> Image.Image:
    rgb = torch.tanh(latent[:3].float().cpu()).add(1).mul(127.5).clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(rgb))


class Processed:
    def __init__(self, p, images_list, infotexts, latents):
        self.images = images_list
        self.infotexts = infotexts
        self.latents = latents
        self.prompt = p.prompt
        self.seed = p.seed
        self.info = infotexts[0] if infotexts else ""


class StableDiffusionProcessing:
    def __init__(self, prompt="", negative_prompt="", seed=1, steps=6, batch_size=1, n_iter=1, width=256,
                 height=256, cfg_scale=7.0, sampler_name="Euler", sd_model=None, script_args=None, scripts=None):
        self.prompt, self.negative_prompt, self.seed = prompt, negative_prompt, seed
        self.steps, self.batch_size, self.n_iter = steps, batch_size, n_iter
        self.width, self.height, self.cfg_scale, self.sampler_name = width, height, cfg_scale, sampler_name
        self.sd_model = sd_model or shared.sd_model
        self.script_args = list(script_args or [])
        self.scripts = scripts
        self.extra_generation_params = {}
        self.sampler = None
        self.c = self.uc = None
        self.is_hr_pass = False
        self.iteration = 0
        self.closed = False

    def close(self):
        self.sampler = None
        self.c = None
        self.uc = None
        self.closed = True

    def setup_prompts(self):
        n = self.batch_size * self.n_iter
        self.all_prompts = list(self.prompt) if isinstance(self.prompt, list) else [self.prompt] * n
        self.all_negative_prompts = [self.negative_prompt] * n
        self.all_seeds = [self.seed + i for i in range(n)]

    def noise(self, shape):
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in self.seeds]
        return torch.stack(noise).to(self.sd_model.device)

    def setup_conds(self):
        config = sd_samplers.find_sampler_config(self.sampler_name)
        self.firstpass_steps = config.total_steps(self.steps) if config else self.steps  # schedules count evaluations
        self.c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, self.prompts, self.firstpass_steps)
        self.uc = prompt_parser.get_learned_conditioning(self.sd_model, self.negative_prompts, self.firstpass_steps)

    def image_conditioning(self, x):
        return x.new_zeros(x.shape[0], 5, 1, 1)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr=False, hr_scale=2.0, hr_second_pass_steps=0, denoising_strength=0.7,
                 hr_sampler_name=None, hr_prompt="", **kwargs):
        super().__init__(**kwargs)
        self.enable_hr, self.hr_scale, self.hr_second_pass_steps = enable_hr, hr_scale, hr_second_pass_steps
        self.denoising_strength, self.hr_sampler_name, self.hr_prompt = denoising_strength, hr_sampler_name, hr_prompt

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.noise((4, self.height // 8, self.width // 8))
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                      image_conditioning=self.image_conditioning(x))
        if not self.enable_hr or state.interrupted:
            return samples
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        self.is_hr_pass = True
        h, w = int(samples.shape[-2] * self.hr_scale), int(samples.shape[-1] * self.hr_scale)
        samples = torch.nn.functional.interpolate(samples, size=(h, w), mode="nearest")
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        noise = self.noise((4, h, w))
        self.hr_prompts = [self.hr_prompt or p for p in self.prompts]
        config = sd_samplers.find_sampler_config(self.hr_sampler_name or self.sampler_name)
        hr_steps = self.hr_second_pass_steps or self.steps
        hr_c = prompt_parser.get_multicond_learned_conditioning(self.sd_model, self.hr_prompts, self.firstpass_steps,
                                                                config.total_steps(hr_steps))
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=hr_c, uc=self.uc)
        samples = self.sampler.sample_img2img(self, samples, noise, hr_c, self.uc,
                                              steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=self.image_conditioning(samples))
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_latent=None, denoising_strength=0.6, **kwargs):
        super().__init__(**kwargs)
        self.init_latent_source = init_latent
        self.denoising_strength = denoising_strength

    def init(self):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        init = self.init_latent_source.to(self.sd_model.device).expand(len(self.prompts), -1, -1, -1).clone()
        x = self.noise(tuple(init.shape[1:]))
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=init, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        return self.sampler.sample_img2img(self, init, x, conditioning, unconditional_conditioning,
                                           image_conditioning=self.image_conditioning(x))


def create_infotext(p, index):
    params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale,
              "Seed": p.all_seeds[index], "Size": f"{p.width}x{p.height}", **p.extra_generation_params}
    text = ", ".join(f"{k}: {infotext_utils.quote(v)}" for k, v in params.items() if v is not None)
    return f"{p.all_prompts[index]}\nNegative prompt: {p.all_negative_prompts[index]}\n{text}"


def process_images(p) -> Processed:
    p.setup_prompts()
    if isinstance(p, StableDiffusionProcessingImg2Img):
        p.init()
    images, infotexts, latents = [], [], []
    with torch.no_grad():
        if p.scripts is not None:
            p.scripts.process(p)
        for n in range(p.n_iter):
            p.iteration = n
            if state.skipped:
                state.skipped = False
            if state.interrupted:
                break
            sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds)
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds)
            p.setup_conds()
            dtype = p.sd_model.dtype_unet  # sampling runs under devices.autocast()
            with torch.autocast(p.sd_model.device.type, dtype=dtype, enabled=dtype != torch.float32):
                samples = p.sample(p.c, p.uc, p.seeds, None, 0.0, p.prompts)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, samples, batch_number=n)
            for i, latent in enumerate(samples):
                latents.append(latent.detach().float().cpu())
                images.append(latent_to_image(latent))
                infotexts.append(create_infotext(p, n * p.batch_size + i))
    res = Processed(p, images, infotexts, latents)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res


def run_generation(p) -> Processed:
    """What modules/txt2img.py and img2img.py (and the API) do: the processing object is closed even on errors."""
    state.begin()
    with closing(p):
        processed = p.scripts.run(p, *p.script_args) if p.scripts is not None else None
        if processed is None:
            processed = process_images(p)
    return processed
