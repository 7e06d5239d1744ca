"""Tiny real models in the shape of the WebUI's loaded checkpoint (shared.sd_model)."""

from __future__ import annotations

import re
from collections import namedtuple

import torch
from torch import nn

from segret_lib.testing.tiny_models import TinyTextEncoder, tiny_unet

PromptChunk = namedtuple("PromptChunk", ["tokens", "multipliers", "fixes"])
PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])
Embedding = namedtuple("Embedding", ["name", "vec", "vectors"])  # the fields of textual_inversion.Embedding used
re_attention = re.compile(r"\(([^():]+)(?::\s*([-+]?\d*\.?\d+))?\)")


class FrozenCLIPEmbedderWithCustomWords(nn.Module):
    """tokenize / tokenize_line like modules.sd_hijack_clip, over the real CLIP BPE tokenizer."""

    chunk_length = 75

    def __init__(self, dim: int, seed: int = 1) -> None:
        super().__init__()
        self.encoder = TinyTextEncoder(dim, seed)
        self.id_start, self.id_end = self.encoder.bos, self.encoder.eos
        self.id_pad = self.id_end
        self.wrapped = nn.Module()
        self.wrapped.tokenizer = self.encoder.tokenizer

        self.embeddings: dict[str, Embedding] = {}  # textual-inversion embeddings by name

    def add_embedding(self, name: str, vectors: int, seed: int = 7) -> Embedding:
        vec = torch.randn(vectors, self.encoder.table.shape[1], generator=torch.Generator().manual_seed(seed))
        self.embeddings[name] = Embedding(name, vec, vectors)
        return self.embeddings[name]

    def tokenize(self, texts):
        return [self.encoder.encode(t) for t in texts]

    def _embedding_at(self, ids, position):
        """Like embedding_db.find_embedding_at_position: an embedding whose name's BPE ids start here."""
        for emb in self.embeddings.values():
            name_ids = self.encoder.encode(emb.name)
            if ids[position:position + len(name_ids)] == name_ids:
                return emb, len(name_ids)
        return None, 0

    def tokenize_line(self, line):
        chunks, tokens, mults, fixes = [], [], [], []
        token_count = 0

        def flush():
            nonlocal tokens, mults, fixes
            pad = self.chunk_length - len(tokens)
            chunks.append(PromptChunk([self.id_start, *tokens, self.id_end] + [self.id_pad] * pad,
                                      [1.0, *mults, 1.0] + [1.0] * pad, fixes))
            tokens, mults, fixes = [], [], []

        for part_index, part in enumerate(re.split(r"\bBREAK\b", line)):
            if part_index > 0:
                flush()
            pos = 0
            for m in [*re_attention.finditer(part), None]:
                plain = part[pos:m.start()] if m else part[pos:]
                pieces = [(plain, 1.0)] + ([(m.group(1), float(m.group(2) or 1.1))] if m else [])
                for text, weight in pieces:
                    ids, position = self.encoder.encode(text), 0
                    while position < len(ids):
                        if len(tokens) == self.chunk_length:
                            flush()
                        emb, length = self._embedding_at(ids, position)
                        if emb is None:
                            tokens.append(ids[position])
                            mults.append(weight)
                            token_count += 1
                            position += 1
                            continue
                        if len(tokens) + emb.vectors > self.chunk_length:
                            flush()
                        fixes.append(PromptChunkFix(len(tokens), emb))  # placeholder ids, vectors put in later
                        tokens += [0] * emb.vectors
                        mults += [weight] * emb.vectors
                        token_count += emb.vectors
                        position += length
                if m:
                    pos = m.end()
        if tokens or not chunks:
            flush()
        return chunks, token_count

    def forward(self, prompts):
        rows = []
        for prompt in prompts:
            chunks, _ = self.tokenize_line(prompt)
            embs = []
            for c in chunks:
                dev = self.encoder.table.device
                e = self.encoder.table[torch.tensor(c.tokens, device=dev)]
                for offset, emb in c.fixes:  # like EmbeddingsWithFixes: vectors at offset + 1 ..
                    e = torch.cat([e[:offset + 1], emb.vec.to(e), e[offset + 1 + emb.vectors:]])
                e = e + self.encoder.pos
                embs.append(e * torch.tensor(c.multipliers, device=dev)[:, None])
            rows.append(torch.cat(embs))
        n = max(r.shape[0] for r in rows)
        rows = [torch.cat([r, r[-77:].repeat((n - r.shape[0]) // 77, 1)]) for r in rows]
        return torch.stack(rows)


class GeneralConditioner(nn.Module):
    """SDXL: two text encoders whose features are concatenated, plus a pooled 'vector'."""

    def __init__(self, dims=(32, 32)) -> None:
        super().__init__()
        self.embedders = nn.ModuleList([FrozenCLIPEmbedderWithCustomWords(d, seed=i + 1) for i, d in enumerate(dims)])

    def forward(self, prompts):
        feats = [e(prompts) for e in self.embedders]
        crossattn = torch.cat(feats, dim=-1)
        return {"crossattn": crossattn, "vector": crossattn[:, 0, :16].clone()}


class TinySDModel(nn.Module):
    """shared.sd_model: model.diffusion_model, cond_stage_model, alphas_cumprod, apply_model."""

    def __init__(self, kind: str = "sd1", seed: int = 0, device: str = "cpu", dtype=torch.float32) -> None:
        """dtype is the UNet's (the WebUI's devices.dtype_unet: float16 unless --no-half)."""
        super().__init__()
        self.is_sdxl = kind == "sdxl"
        self.model = nn.Module()
        self.model.conditioning_key = "crossattn"
        self.model.diffusion_model = tiny_unet("sd2" if kind != "sd1" else "sd1", seed, context_dim=64)
        self.cond_stage_model = GeneralConditioner() if self.is_sdxl else FrozenCLIPEmbedderWithCustomWords(64)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float())
        self.parameterization = "eps"
        self.unet_calls = 0
        self.to(device)
        self.model.diffusion_model.to(dtype)
        if self.device.type == "cpu" and dtype != torch.float32:
            # CPU autocast does not upcast GroupNorm's parameters (CUDA autocast does): keep norms in float32
            for m in self.model.diffusion_model.modules():
                if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                    m.float()
        self.dtype_unet = dtype

    @property
    def device(self):
        return self.alphas_cumprod.device

    def get_learned_conditioning(self, prompts):
        with torch.no_grad():
            return self.cond_stage_model(list(prompts))

    def apply_model(self, x, t, cond):
        """Like the WebUI's hijacked apply_model: inputs cast to the UNet dtype, output back to float."""
        self.unet_calls += 1
        context = cond["crossattn"] if "crossattn" in cond else torch.cat(cond["c_crossattn"], 1)
        out = self.model.diffusion_model(x.to(self.dtype_unet), t, context=context.to(self.dtype_unet))
        return out.float()
