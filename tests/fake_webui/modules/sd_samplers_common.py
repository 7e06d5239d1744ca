from collections import namedtuple


class InterruptedException(BaseException):
    pass


class SamplerData(namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])):
    def total_steps(self, steps):
        if self.options.get("second_order", False):
            steps = steps * 2 - 1
        return steps


def setup_img2img_steps(p, steps=None):
    requested_steps = steps or p.steps
    steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
    t_enc = requested_steps - 1
    return steps, t_enc
