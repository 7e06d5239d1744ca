"""A stand-in for Forge extensions that replace cross-attention through the UNet patcher (like the built-in
IP-Adapter: `set_model_attn2_replace`), installed by tests/integration/setup_forge.sh. Forge then calls the patch
with projected q, k, v instead of attn2.forward. Off unless a request turns it on:
{"alwayson_scripts": {"Forge attn2 hook": {"args": [true]}}}. Prints how often the patch ran."""

import torch
from modules import scripts

CALLS = [0]


def _attention(q, k, v, extra_options):
    CALLS[0] += 1
    heads = extra_options["n_heads"]
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(t.shape[0], -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, inner)


class ForgeAttn2Hook(scripts.Script):
    def title(self):
        return "Forge attn2 hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(value=False, label="Forge attn2 hook (test)")]

    def process(self, p, enabled=False, *args):
        CALLS[0] = 0

    def process_before_every_sampling(self, p, enabled=False, *args, **kwargs):
        if not enabled:
            return
        unet = p.sd_model.forge_objects.unet.clone()
        for name, count in (("input", 12), ("middle", 1), ("output", 12)):
            for number in range(count):
                unet.set_model_attn2_replace(_attention, name, number, 0)
        p.sd_model.forge_objects.unet = unet

    def postprocess(self, p, processed, enabled=False, *args):
        if enabled:
            print(f"[Forge attn2 hook] patch calls: {CALLS[0]}")
