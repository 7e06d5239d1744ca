"""Tiny random-weight models for the real WebUI, built offline (run with the WebUI venv's python).

WORK/models/Stable-diffusion/a-tiny-sd1.safetensors (+ .yaml) an SD1 checkpoint with small channel counts
WORK/models/Stable-diffusion/b-tiny-sd1-refiner.safetensors     another one (the refiner in the tests)
WORK/models/Stable-diffusion/c-tiny-sdxl.safetensors (+ .yaml) an SDXL checkpoint (sgm DiffusionEngine, CLIP-L +
                                                               OpenCLIP-G text towers, size conditioning)
WORK/models/Stable-diffusion/d-tiny-sdxl-refiner.safetensors    another one (the SDXL refiner in the tests)
WORK/models/Lora/tiny-lora.safetensors                        a LoRA with kohya key names for the SD1 one
WORK/hf/hub/models--openai--clip-vit-large-patch14             the CLIP tokenizer files (from open-clip-torch's
                                                               BPE vocabulary) and a tiny text-model config
open_clip/model_configs/segret-tiny-g.json (in the venv)       the tiny OpenCLIP text tower the SDXL yaml names
                                                               (open_clip builds a model by its config's name)
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import torch

WORK = Path(sys.argv[1]).resolve()
WEBUI = WORK / "webui"
sys.path.insert(0, str(WEBUI / "repositories" / "stable-diffusion-stability-ai"))
sys.path.insert(0, str(WEBUI / "repositories" / "generative-models"))

CONTEXT = 64  # text hidden size = the UNet's context_dim
SNAPSHOT = "0000000000000000000000000000000000000000"

SD1_YAML = f"""\
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: 16
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 16
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [ 2, 4 ]
        num_res_blocks: 1
        channel_mult: [ 1, 2, 2 ]
        num_heads: 4
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: {CONTEXT}
        use_checkpoint: False
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 128
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [ 1, 1, 1, 1 ]
          num_res_blocks: 1
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""

TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": CONTEXT,
    "intermediate_size": 2 * CONTEXT, "num_attention_heads": 2, "num_hidden_layers": 2,
    "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": CONTEXT, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
    "torch_dtype": "float32",
}


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_tokenizer_cache() -> None:
    """openai/clip-vit-large-patch14's tokenizer files, as an HF hub cache snapshot, from open_clip's BPE file."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as f:
        merges = f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    repo = WORK / "hf" / "hub" / "models--openai--clip-vit-large-patch14"
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    (snap / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (snap / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (snap / "special_tokens_map.json").write_text(json.dumps(special))
    (snap / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77, "do_lower_case": True,
                                                            "tokenizer_class": "CLIPTokenizer"}))
    (snap / "config.json").write_text(json.dumps(TEXT_CONFIG))


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, zero-initialised output layers included (else the UNet ignores its input)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def save_checkpoint(name: str, parts, yaml: str) -> dict[str, torch.Tensor]:
    """models/Stable-diffusion/<name>.safetensors from (key prefix, module) parts, in fp32, and its config
    <name>.yaml beside it; returns the state dict written."""
    from safetensors.torch import save_file

    sd = {prefix + k: v.detach().float().contiguous().clone()
          for prefix, m in parts for k, v in m.state_dict().items()}
    out = WORK / "models" / "Stable-diffusion"
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / f"{name}.safetensors"))
    (out / f"{name}.yaml").write_text(yaml)
    return sd


def sd1_checkpoint(name: str, seed: int) -> dict[str, torch.Tensor]:
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = OmegaConf.create(SD1_YAML).model.params
    torch.manual_seed(seed)
    unet = instantiate_from_config(cfg.unet_config)
    vae = instantiate_from_config(cfg.first_stage_config)
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in TEXT_CONFIG.items() if k != "architectures"}))
    randomize(unet, seed)
    with torch.no_grad():  # a non-zero mean: the WebUI's emphasis rescales by the context's mean (0 -> NaN)
        text.text_model.final_layer_norm.bias.copy_(0.5 + 0.1 * torch.randn(CONTEXT))
    sd = save_checkpoint(name, (("model.diffusion_model.", unet), ("first_stage_model.", vae),
                                ("cond_stage_model.transformer.", text)), SD1_YAML)
    return {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}

# SDXL: the sgm config of sd_xl_base.yaml at small size. The UNet's context is CLIP-L's hidden size (CONTEXT) plus
# OpenCLIP-G's width (G_WIDTH); its vector is G's pooled projection plus the six 256-wide size embeddings.
G_WIDTH = 64
G_CONFIG_NAME = "segret-tiny-g"
G_CONFIG = {
    "embed_dim": G_WIDTH,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": G_WIDTH, "heads": 2, "layers": 2},
}

SDXL_YAML = f"""\
model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    scale_factor: 0.13025
    disable_first_stage_autocast: True
    denoiser_config:
      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser
      params:
        num_idx: 1000
        weighting_config:
          target: sgm.modules.diffusionmodules.denoiser_weighting.EpsWeighting
        scaling_config:
          target: sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling
        discretization_config:
          target: sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization
    network_config:
      target: sgm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        adm_in_channels: {G_WIDTH + 6 * 256}
        num_classes: sequential
        use_checkpoint: False
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [4, 2]
        num_res_blocks: 1
        channel_mult: [1, 2, 2]
        num_head_channels: 32
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: [1, 1, 2]
        context_dim: {CONTEXT + G_WIDTH}
        spatial_transformer_attn_type: softmax-xformers
        legacy: False
    conditioner_config:
      target: sgm.modules.GeneralConditioner
      params:
        emb_models:
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenCLIPEmbedder
            params:
              layer: hidden
              layer_idx: 1
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2
            params:
              arch: {G_CONFIG_NAME}
              version: null
              freeze: True
              layer: penultimate
              always_return_pooled: True
              legacy: False
          - is_trainable: False
            input_key: original_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: 256
          - is_trainable: False
            input_key: crop_coords_top_left
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: 256
          - is_trainable: False
            input_key: target_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: 256
    first_stage_config:
      target: sgm.models.autoencoder.AutoencoderKLInferenceWrapper
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          attn_type: vanilla
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [1, 1, 1, 1]
          num_res_blocks: 1
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
"""


def open_clip_config() -> None:
    """The tiny OpenCLIP-G config, where open_clip looks configs up by name (its package's model_configs/)."""
    import open_clip

    path = Path(open_clip.__file__).parent / "model_configs" / f"{G_CONFIG_NAME}.json"
    path.write_text(json.dumps(G_CONFIG, indent=2))
    open_clip.add_model_config(str(path))


def sdxl_checkpoint(name: str, seed: int) -> None:
    """The tiny SDXL checkpoint: each part built on its own (the whole DiffusionEngine would load CLIP-L from the
    hub cache and the OpenCLIP weights), with the key names of the DiffusionEngine."""
    import open_clip
    from omegaconf import OmegaConf
    from sgm.util import instantiate_from_config
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = OmegaConf.create(SDXL_YAML).model.params
    torch.manual_seed(seed)
    unet = instantiate_from_config(cfg.network_config)
    vae = instantiate_from_config(cfg.first_stage_config)
    clip_l = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in TEXT_CONFIG.items() if k != "architectures"}))
    clip_g = open_clip.create_model(G_CONFIG_NAME, pretrained=None)
    del clip_g.visual
    randomize(unet, seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        # unit-variance token embeddings with a non-zero mean: SDXL reads the penultimate layer (no final norm),
        # where tokens initialised at 0.02 give every token almost the same key (flat maps); emphasis rescales
        # by the context's mean
        for emb in (clip_l.text_model.embeddings.token_embedding.weight, clip_g.token_embedding.weight):
            emb.copy_(torch.randn(emb.shape, generator=g) + 0.5)
    sd = save_checkpoint(name, (("model.diffusion_model.", unet), ("first_stage_model.", vae),
                                ("conditioner.embedders.0.transformer.", clip_l),
                                ("conditioner.embedders.1.model.", clip_g)), SDXL_YAML)
    print(f"{name}: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters, {len(sd)} tensors")


def kohya_lora(unet_sd: dict[str, torch.Tensor], rank: int = 4) -> None:
    """LoRA on every attention projection and proj_in/proj_out, keys `lora_unet_<compvis name>.lora_down.weight`
    (the Lora extension maps `lora_unet_` to `diffusion_model_`, as for kohya's SDXL LoRAs)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(11)
    sd = {}
    for key, w in unet_sd.items():
        if not key.endswith(".weight") or w.dim() != 2:
            continue
        if not any(s in key for s in ("attn1.to_", "attn2.to_", "proj_in", "proj_out", "ff.net.2")):
            continue
        base = "lora_unet_" + key[: -len(".weight")].replace(".", "_")
        out_f, in_f = w.shape
        sd[f"{base}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * 0.5
        sd[f"{base}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.5
        sd[f"{base}.alpha"] = torch.tensor(float(rank))
    out = WORK / "models" / "Lora"
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / "tiny-lora.safetensors"), metadata={"ss_network_module": "networks.lora"})
    print(f"LoRA: {len(sd) // 3} layers")


def main() -> None:
    clip_tokenizer_cache()
    unet_sd = sd1_checkpoint("a-tiny-sd1", seed=1)
    sd1_checkpoint("b-tiny-sd1-refiner", seed=2)
    kohya_lora(unet_sd)
    open_clip_config()
    sdxl_checkpoint("c-tiny-sdxl", seed=3)
    sdxl_checkpoint("d-tiny-sdxl-refiner", seed=4)
    print("models ready in", WORK / "models")


if __name__ == "__main__":
    main()
