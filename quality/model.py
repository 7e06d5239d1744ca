"""The tiny text-to-image model: an ldm UNetModel in pixel space (32x32 RGB) with cross-attention at 8x8
(the level A-STAR captures for a 32x32 latent, the only level with attention, so all text reaches the image
through the maps A-STAR reads), a word-preserving text encoder over CLIP BPE ids (77 tokens,
start/end/padding like SD1), and an eps-prediction alphas_cumprod that k-diffusion's CompVisDenoiser uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from torch import nn
from torch.nn import functional as F

from segret_lib.engine.tokens import CHUNK_TOKENS
from segret_lib.testing.thirdparty import ClipWords

from .dataset import COLOURS, SHAPES

CONTEXT_DIM = 64
CONTEXT_TOKENS = CHUNK_TOKENS + 2
WEIGHTS = Path(__file__).resolve().parent / "weights" / "shapes_t2i.safetensors"
UNET_CONFIG: dict = dict(
    image_size=32, in_channels=3, out_channels=3, model_channels=32, num_res_blocks=[0, 1, 1],
    attention_resolutions=(4,), channel_mult=(1, 1, 2), num_heads=4, use_spatial_transformer=True,
    transformer_depth=1, context_dim=CONTEXT_DIM, legacy=False, conv_resample=False,
)
VOCAB_WORDS = ("a", "and", *COLOURS, *SHAPES)
MIXES = {"none": 0, "left": 2, "both": 3}
"""Text encoder variants by the kernel of their neighbour mix: none (each token is its word and position only),
left (each token also sees the word before it, so "circle" knows it is red, as in CLIP's causal encoder),
both (the word before and after: the first model, whose shape words did not localise)."""


def alphas_cumprod(steps: int = 1000, logsnr_max: float = 10.0, logsnr_min: float = -6.5) -> torch.Tensor:
    """Cosine schedule (log-SNR = -2 log tan(pi u / 2)) stretched so that abar runs from sigmoid(10) to
    sigmoid(-6.5) = 0.0015 (sigma_max 25.8; SD's scaled-linear ends at 0.0047, sigma 14.6). Lower terminal SNR
    (1e-4, sigma 100) broke eps-prediction sampling: a 1% bias of the predicted noise, times sigma_max,
    became a saturated background colour."""
    u_lo = 2 / math.pi * math.atan(math.exp(-logsnr_max / 2))
    u_hi = 2 / math.pi * math.atan(math.exp(-logsnr_min / 2))
    u = u_lo + (u_hi - u_lo) * torch.arange(1, steps + 1, dtype=torch.float64) / steps
    logsnr = -2 * torch.log(torch.tan(math.pi * u / 2))
    return torch.sigmoid(logsnr).float()


class WordEncoder(ClipWords, nn.Module):
    """Text encoder that keeps each word's identity: token embedding + position embedding + (mix "left", the
    trained model) a residual mix with the word before only (so "circle" also knows it is red, as a causal CLIP
    encoder's noun does), then LayerNorm. No global mixing: a mixing transformer lets every later token carry
    the whole caption, and then no single word's attention map is localised (issue 12). With the word after
    mixed in too ("both"), "red" carried the shape and shape words did not localise; with no mix ("none"),
    shape words did not localise either after 4500 steps. Unknown CLIP ids share one embedding."""

    def __init__(self, dim: int = CONTEXT_DIM, mix: str = "left") -> None:
        super().__init__()
        self.init_clip_words()
        ids = [self.bos, self.eos] + [i for w in VOCAB_WORDS for i in self.tokenizer.encode(w)]
        self.register_buffer("lookup", torch.full((len(self.tokenizer.encoder),), len(ids), dtype=torch.long),
                             persistent=False)
        self.lookup[torch.tensor(ids)] = torch.arange(len(ids))
        self.embed = nn.Embedding(len(ids) + 1, dim)
        self.pos = nn.Parameter(torch.zeros(CONTEXT_TOKENS, dim))
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, not {mix!r}")
        self.mix_kind = mix
        self.mix = None if mix == "none" else nn.Conv1d(dim, dim, kernel_size=MIXES[mix], bias=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.pos, std=0.3)
        if self.mix is not None:
            nn.init.zeros_(self.mix.weight)

    def ids(self, prompts: list[str]) -> torch.Tensor:
        """[B, 77] CLIP ids: start, the first 75 tokens, end, end-padding (SD1)."""
        return torch.tensor([list(self.prompt_tokens(p).ids[:CONTEXT_TOKENS]) for p in prompts])

    def forward(self, prompts: list[str]) -> torch.Tensor:
        e = self.embed(self.lookup[self.ids(prompts).to(self.lookup.device)])
        if self.mix is not None:
            pad = (1, 1) if self.mix_kind == "both" else (1, 0)
            e = e + self.mix(F.pad(e.transpose(1, 2), pad)).transpose(1, 2)
        return self.norm(e + self.pos)


class ShapesLDM(nn.Module):
    """What samplers and the extension use of a CompVis LatentDiffusion: alphas_cumprod, apply_model, and the
    UNet at model.diffusion_model; plus the text encoder."""

    parameterization = "eps"

    def __init__(self, mix: str = "left") -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = UNetModel(**UNET_CONFIG)
        self.text = WordEncoder(mix=mix)
        self.register_buffer("alphas_cumprod", alphas_cumprod())

    @property
    def unet(self) -> UNetModel:
        return self.model.diffusion_model

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.unet(x, t, context=torch.cat(cond["c_crossattn"], 1))


def save(model: ShapesLDM, path: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "alphas_cumprod"}
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})


def load(path: Path = WEIGHTS) -> ShapesLDM:
    """The trained model in eval mode, without gradients on its weights."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    mix = state.get("text.mix.weight")
    model = ShapesLDM(mix="none" if mix is None else {v: k for k, v in MIXES.items()}[mix.shape[-1]])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "alphas_cumprod"]:
        raise RuntimeError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)
