"""A tiny random-weight SD1.5-shaped checkpoint for the real Forge, built offline with Forge's own modules (run
with the Forge venv's python: python make_forge_model.py WORK).

Forge recognises SD1.5 by a UNet with 320 base channels and a 768-wide context; depth and levels are free, so
the UNet has three levels of one res block and transformers only at 1/4 of the latent (where A-STAR reads its
maps). The text encoder and VAE configs bundled with the copied tree (backend/huggingface/runwayml/
stable-diffusion-v1-5) are shrunk first (CLIP-L to 2 layers, the VAE to 32 channels), and the checkpoint matches
them, so it is about 110 MB instead of 540 MB. WORK/models/Stable-diffusion/tiny-sd15.safetensors.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

WORK = Path(sys.argv[1]).resolve()
TREE = WORK / "forge"
REPO = TREE / "backend" / "huggingface" / "runwayml" / "stable-diffusion-v1-5"
sys.path[:0] = [str(TREE), str(TREE / "packages_3rdparty")]  # Forge bundles gguf there
sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend.args parses the command line on import


def shrink_configs() -> None:
    """Small text encoder and VAE in the tree's bundled SD1.5 configs (the hidden size stays 768)."""
    te = REPO / "text_encoder" / "config.json"
    cfg = json.loads(te.read_text())
    cfg.update(num_hidden_layers=2, intermediate_size=768)
    te.write_text(json.dumps(cfg, indent=2))
    vae = REPO / "vae" / "config.json"
    cfg = json.loads(vae.read_text())
    cfg.update(block_out_channels=[32, 32, 32, 32], layers_per_block=1)
    vae.write_text(json.dumps(cfg, indent=2))


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


if __name__ == "__main__":
    main()
