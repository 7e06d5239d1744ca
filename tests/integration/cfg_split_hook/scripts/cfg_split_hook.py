"""A stand-in for Incantations' Smoothed Energy Guidance (SEG; v0xie/sd-webui-incantations,
scripts/smoothed_energy_guidance.py), installed by tests/integration/setup_webui.sh. What it does, as SEG does:

- a forward hook on the query projection (to_q) of the middle block's self-attention (attn1);
- it takes the batch as the CFG denoiser's two halves (`first, second = q.chunk(2)`): on a batch of one that
  is `ValueError: not enough values to unpack (expected 2, got 1)`;
- with SEG's default blur (sigma above its threshold: "infinite blur") it overwrites the second half's query,
  seen as (images * heads, head_dim, h, w), with its spatial mean, in place. That tensor is a view of chunk's
  output whenever the reshape can alias (one image per half), and autograd forbids writing into it:
  `RuntimeError: Output 0 of ReshapeAlias is a view and is being modified inplace ...` (fine in no_grad
  sampling; only a call under grad, A-STAR's refinement, meets it).

Off unless a request turns it on: {"alwayson_scripts": {"CFG split hook": {"args": [true]}}}.
"""

import torch
from modules import scripts, shared

HANDLES = []  # the hooks installed for the current generation


def _make_hook(heads: int, aspect: float):
    def smooth_query(module, args, output):
        first, second = output.chunk(2, dim=0)  # ValueError on a batch of one
        n, seq, inner = second.shape
        d = inner // heads
        h = max(1, round((seq * aspect) ** 0.5))
        w = seq // h
        if h * w != seq:
            return None
        grid = second.view(n, seq, heads, d).permute(0, 2, 3, 1).reshape(n * heads, d, h, w)
        grid[:] = grid.mean(dim=(-2, -1), keepdim=True)  # in place: a view of `second` when n == 1
        smoothed = grid.reshape(n, heads, d, seq).permute(0, 3, 1, 2).reshape(n, seq, inner)
        return torch.cat([first, smoothed])

    return smooth_query


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
        aspect = p.height / p.width
        for name, module in unet.named_modules():
            if name.startswith("middle_block") and name.endswith("attn1") and hasattr(module, "to_q"):
                HANDLES.append(module.to_q.register_forward_hook(_make_hook(int(module.heads), aspect)))
        if not HANDLES:
            raise RuntimeError("CFG split hook: no self-attention in the UNet's middle block")

    def postprocess(self, p, processed, *args):
        self._remove()

    def _remove(self):
        for h in HANDLES:
            h.remove()
        HANDLES.clear()
