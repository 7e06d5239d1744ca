"""Tiny random-weight SD1.5- and SDXL-shaped checkpoints for the real Forge, built offline with Forge's own modules
(run with the Forge venv's python: python make_forge_model.py WORK).

Forge recognises SD1.5 by a UNet with 320 base channels and a 768-wide context; depth and levels are free, so
the UNet has three levels of one res block and transformers only at 1/4 of the latent (where A-STAR reads its
maps). The text encoder and VAE configs bundled with the copied tree (backend/huggingface/runwayml/
stable-diffusion-v1-5) are shrunk first (CLIP-L to 2 layers, the VAE to 32 channels), and the checkpoint matches
them, so it is about 110 MB instead of 540 MB. WORK/models/Stable-diffusion/tiny-sd15.safetensors.

SDXL: Forge recognises it only with 320 base channels, a 2048-wide context (CLIP-L's 768 + CLIP-G's 1280 hidden
sizes), a 2816-wide vector (CLIP-G's 1280 pooled + six 256-wide size embeddings), linear proj_in/out and
transformer depths of exactly [0, 0, 2, 2, 10, 10] over the six input res blocks. Levels and channel_mult are
free: three levels of two res blocks at 320 channels (channel_mult 1, 1, 1), no transformer in the middle block
and one in the first output block, so the 20 + 1 transformer blocks at 1/4 of the latent (where A-STAR reads its
maps) are the only ones. The bundled SDXL text-encoder and VAE configs (backend/huggingface/stabilityai/
stable-diffusion-xl-base-1.0) are shrunk to two layers and 32 channels (the hidden sizes stay); the token
embeddings get unit variance (at the real models' 0.02 the context is almost the same for every token and the
maps are flat). WORK/models/Stable-diffusion/tiny-sdxl.safetensors (written only when missing or built from
another recipe: WORK/models/Stable-diffusion/tiny-sdxl.recipe holds the key), and tiny-sdxl-refiner.safetensors, a
link to it (another checkpoint to Forge: the SDXL refiner in the tests).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch

WORK = Path(sys.argv[1]).resolve()
TREE = WORK / "forge"
REPO = TREE / "backend" / "huggingface" / "runwayml" / "stable-diffusion-v1-5"
XL_REPO = TREE / "backend" / "huggingface" / "stabilityai" / "stable-diffusion-xl-base-1.0"
sys.path[:0] = [str(TREE), str(TREE / "packages_3rdparty")]  # Forge bundles gguf there
sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend.args parses the command line on import


def update_config(path: Path, **values) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(values)
    path.write_text(json.dumps(cfg, indent=2))


def shrink_configs() -> None:
    """Small text encoders and VAEs in the tree's bundled SD1.5 and SDXL configs (the hidden sizes stay: 768 for
    CLIP-L, 1280 for CLIP-G)."""
    update_config(REPO / "text_encoder" / "config.json", num_hidden_layers=2, intermediate_size=768)
    update_config(REPO / "vae" / "config.json", block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    update_config(XL_REPO / "text_encoder" / "config.json", num_hidden_layers=2, intermediate_size=768)
    update_config(XL_REPO / "text_encoder_2" / "config.json", num_hidden_layers=2, intermediate_size=1280)
    update_config(XL_REPO / "vae" / "config.json", block_out_channels=[32, 32, 32, 32], layers_per_block=1)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, zero-initialised output layers included (else the UNet ignores its input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def kohya_lora(unet_sd: dict[str, torch.Tensor], rank: int = 4) -> None:
    """A LoRA on the attention projections, keys `lora_unet_<ldm name>.lora_down.weight` (Forge maps them to the
    UNet's ldm names): WORK/models/Lora/tiny-lora.safetensors."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(11)
    sd = {}
    for key, w in unet_sd.items():
        if key.endswith(".weight") and w.dim() == 2 and any(s in key for s in ("attn1.to_", "attn2.to_", "ff.net.2")):
            base = "lora_unet_" + key[: -len(".weight")].replace(".", "_")
            sd[f"{base}.lora_down.weight"] = (torch.randn(rank, w.shape[1], generator=g) * 0.5).half()
            sd[f"{base}.lora_up.weight"] = (torch.randn(w.shape[0], rank, generator=g) * 0.5).half()
            sd[f"{base}.alpha"] = torch.tensor(float(rank))
    out = WORK / "models" / "Lora"
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / "tiny-lora.safetensors"), metadata={"ss_network_module": "networks.lora"})


def half(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to(torch.float16).contiguous().clone() for k, v in module.state_dict().items()
            if not k.endswith("position_ids")}


def open_clip_keys(text: torch.nn.Module, projection: torch.Tensor) -> dict[str, torch.Tensor]:
    """An HF CLIPTextModel's weights under OpenCLIP's names, as SDXL checkpoints store CLIP-G
    (conditioner.embedders.1.model.*; Forge converts them back with clip_text_transformers_convert)."""
    sd = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    out = {"token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
           "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
           "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
           "ln_final.bias": sd.pop("text_model.final_layer_norm.bias"),
           "text_projection": projection.t()}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(text.config.num_hidden_layers):
        hf, oc = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for a, b in names.items():
            for y in ("weight", "bias"):
                out[f"{oc}{b}.{y}"] = sd.pop(f"{hf}{a}.{y}")
        for y in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{y}"] = torch.cat([sd.pop(f"{hf}self_attn.{p}_proj.{y}") for p in "qkv"])
    assert not sd, sorted(sd)
    return out


def sdxl_recipe() -> str:
    """What the SDXL checkpoint is built from: this file, the shrunk configs, torch's version."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for sub in ("text_encoder", "text_encoder_2", "vae"):
        h.update((XL_REPO / sub / "config.json").read_bytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()


def sdxl() -> None:
    """The tiny SDXL checkpoint (see the module docstring), unless the one there was built from the same recipe."""
    out = WORK / "models" / "Stable-diffusion"
    out.mkdir(parents=True, exist_ok=True)
    path, stamp = out / "tiny-sdxl.safetensors", out / "tiny-sdxl.recipe"
    refiner = out / "tiny-sdxl-refiner.safetensors"
    recipe = sdxl_recipe()
    if refiner.is_symlink() or refiner.exists():
        refiner.unlink()
    refiner.symlink_to(path.name)
    if path.exists() and stamp.exists() and stamp.read_text() == recipe:
        print(f"tiny SDXL: up to date ({path})")
        return
    import time

    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    start = time.time()
    stamp.unlink(missing_ok=True)
    torch.manual_seed(0)
    unet = IntegratedUNet2DConditionModel(
        in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[2, 2, 2], channel_mult=(1, 1, 1),
        num_heads=-1, num_head_channels=64, use_spatial_transformer=True, use_linear_in_transformer=True,
        transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=-1,
        transformer_depth_output=[0, 0, 0, 0, 0, 0, 0, 0, 1],  # popped from the end: the first output block
        context_dim=2048, num_classes="sequential", adm_in_channels=2816)
    vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(str(XL_REPO / "vae")))
    clip_l = CLIPTextModel(CLIPTextConfig.from_pretrained(str(XL_REPO / "text_encoder")))
    clip_g = CLIPTextModel(CLIPTextConfig.from_pretrained(str(XL_REPO / "text_encoder_2")))
    randomize(unet, 3)
    randomize(vae, 4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for text in (clip_l, clip_g):  # unit-variance tokens with a non-zero mean (emphasis rescales by it)
            emb = text.text_model.embeddings.token_embedding.weight
            emb.copy_(torch.randn(emb.shape, generator=g) + 0.5)
        projection = torch.randn(1280, 1280, generator=g) / math.sqrt(1280)
    sd = {**half("model.diffusion_model.", unet), **half("first_stage_model.", vae),
          **half("conditioner.embedders.0.transformer.", clip_l)}
    sd.update({"conditioner.embedders.1.model." + k: v.to(torch.float16).contiguous().clone()
               for k, v in open_clip_keys(clip_g, projection).items()})
    save_file(sd, str(path))
    stamp.write_text(recipe)
    print(f"tiny SDXL: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, "
          f"{sum(v.numel() for v in sd.values()) / 1e6:.1f} M in all, {path.stat().st_size / 2**20:.0f} MiB, "
          f"built in {time.time() - start:.0f} s: {path}")


def main() -> None:
    shrink_configs()
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = IntegratedUNet2DConditionModel(
        in_channels=4, model_channels=320, out_channels=4, num_res_blocks=1, channel_mult=(1, 1, 1), num_heads=8,
        use_spatial_transformer=True, transformer_depth=[0, 0, 1], transformer_depth_middle=1,
        transformer_depth_output=[1, 1, 0, 0, 0, 0], context_dim=768)
    vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(str(REPO / "vae")))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(REPO / "text_encoder")))
    randomize(unet, 1)
    randomize(vae, 2)
    with torch.no_grad():  # a non-zero mean: emphasis rescales by the context's mean
        text.text_model.final_layer_norm.bias.copy_(0.5 + 0.1 * torch.randn(768))
    sd = {}
    parts = ("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.transformer.", text)
    for prefix, m in parts:
        for k, v in m.state_dict().items():
            if k.endswith("position_ids"):
                continue
            sd[prefix + k] = v.detach().to(torch.float16).contiguous().clone()
    out = WORK / "models" / "Stable-diffusion"
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / "tiny-sd15.safetensors"))
    kohya_lora(unet.state_dict())
    print(f"tiny SD1.5: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, "
          f"{len(sd)} tensors in {out / 'tiny-sd15.safetensors'}")
    sdxl()


if __name__ == "__main__":
    main()
