"""A stand-in for extensions whose attention hooks assume the CFG batch layout (like Incantations' Smoothed
Energy Guidance: `q_uncond, q = output.chunk(2, dim=0)`), installed by tests/integration/setup_webui.sh.
Off unless a request turns it on: {"alwayson_scripts": {"CFG split hook": {"args": [true]}}}."""

import torch
from modules import scripts, shared


def _hook(module, args, output):
    uncond, cond = output.chunk(2, dim=0)  # ValueError on a batch of one
    return torch.cat([uncond, cond])


HANDLES = []  # the hooks installed for the current generation


class CfgSplitHook(scripts.Script):
    def title(self):
        return "CFG split hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(value=False, label="CFG split hook (test)")]

    def process(self, p, enabled=False, *args):
        self._remove()
        if not enabled:
            return
        unet = shared.sd_model.model.diffusion_model
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                HANDLES.append(module.register_forward_hook(_hook))

    def postprocess(self, p, processed, *args):
        self._remove()

    def _remove(self):
        for h in HANDLES:
            h.remove()
        HANDLES.clear()
