"""Tiny, randomly initialised real components: the ldm UNet (stable-diffusion-sdkit), a CompVis-style model
object around it, and a text encoder stand-in fed by the real CLIP BPE tokenizer. Used by the tests and the speed
benchmark; ldm is imported when a UNet is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.tokens import CHUNK_TOKENS
from .thirdparty import ClipWords

if TYPE_CHECKING:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

CONTEXT_DIM = 64


def sdp_attention_forward(self, x, context=None, mask=None, **kwargs):
    """A CrossAttention.forward on torch's scaled_dot_product_attention, installed on the class the way the
    WebUI's default optimisation (sdp) replaces it; used to test that capture calls through it, and by the
    benchmark so memory is measured with the attention the WebUI runs."""
    h = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def tiny_unet(kind: str = "sd1", seed: int = 0, context_dim: int = CONTEXT_DIM,
              use_checkpoint: bool = False) -> UNetModel:
    """SD-shaped UNet: three levels, cross-attention at 1/2 and 1/4 of the latent (and the middle block).

    sd1: heads by count, conv proj_in (SD1.x). sd2: heads by channels, linear proj_in (SD2.x/SDXL style).
    use_checkpoint: ldm's gradient checkpointing, as the original configs set it (the WebUI turns it off).
    """
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    common = dict(image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1,
                  attention_resolutions=(2, 4), channel_mult=(1, 2, 2), use_spatial_transformer=True,
                  transformer_depth=1, context_dim=context_dim, legacy=False, use_checkpoint=use_checkpoint)
    if kind == "sd1":
        unet = UNetModel(num_heads=4, **common)
    elif kind == "sd2":
        unet = UNetModel(num_head_channels=16, use_linear_in_transformer=True, **common)
    else:
        raise ValueError(kind)
    return unet.eval().requires_grad_(False)


class TinyLDM(nn.Module):
    """The parts of a CompVis LatentDiffusion that samplers use: alphas_cumprod and apply_model(x, t, cond)."""

    parameterization = "eps"

    def __init__(self, unet: UNetModel) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = unet
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float())

    def apply_model(self, x, t, cond):
        context = torch.cat(cond["c_crossattn"], 1)
        return self.model.diffusion_model(x, t, context=context)


class TinyTextEncoder(ClipWords, nn.Module):
    """Embeds real CLIP BPE token ids with a fixed random table (a stand-in for the CLIP text model)."""

    def __init__(self, dim: int = CONTEXT_DIM, seed: int = 1) -> None:
        super().__init__()
        self.init_clip_words()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(len(self.tokenizer.encoder), dim, generator=g) * 0.5,
                                  requires_grad=False)
        self.pos = nn.Parameter(torch.randn(CHUNK_TOKENS + 2, dim, generator=g) * 0.1, requires_grad=False)

    def chunks(self, prompt: str) -> list[list[int]]:
        """77-id chunks the way CLIP front ends split long prompts."""
        real = self.encode(prompt)
        pieces = [real[i:i + CHUNK_TOKENS] for i in range(0, max(len(real), 1), CHUNK_TOKENS)] or [[]]
        return [[self.bos, *p, self.eos] + [self.eos] * (CHUNK_TOKENS - len(p)) for p in pieces]

    def forward(self, prompts: list[str]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            chunks = self.chunks(prompt)
            rows.append(torch.cat([self.table[torch.tensor(c)] + self.pos for c in chunks], 0))
        n = max(r.shape[0] for r in rows)
        rows = [torch.cat([r, r[-77:].repeat(n // 77 - r.shape[0] // 77, 1)], 0) if r.shape[0] < n else r
                for r in rows]
        return torch.stack(rows)
