"""A tiny random-weight ControlNet for the real Forge, and a tiny SD1.5 checkpoint whose maps it can reach, built
offline with Forge's own modules and checked with Forge's own detection (run with the Forge venv's python, after
make_forge_model.py: python make_forge_controlnet.py WORK).

A ControlNet is a copy of the UNet's encoder whose outputs are added to the UNet's middle block and skip
connections, so they reach only the cross-attention layers of the output blocks. In make_forge_model.py's
tiny-sd15 the layers at 1/4 of the latent (where A-STAR reads its maps) are in an input block and the middle block
only, upstream of every residual; so a second checkpoint, WORK/models/Stable-diffusion/tiny-sd15_cnet.safetensors,
has the same UNet plus a transformer in each output block at that level (as SD1.5 has), with tiny-sd15's text
encoder and VAE (the "_" sorts it after tiny-sd15, which Forge loads first).

The ControlNet has the tiny UNets' encoder shape (320 base channels, three levels of one res block, a transformer
at 1/4 of the latent and one in the middle block, a 768-wide context) and a hint block for a 3-channel image; its
zero convolutions are random, not zero (else it adds nothing). ldm ControlNet keys (`input_blocks.*`,
`zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`): Forge's loader (`modules_forge/
supported_controlnet.py`) recognises it by `zero_convs.0.0.weight` and sizes the model from the keys with
huggingface_guess, as done here too. WORK/forge/models/ControlNet/tiny-controlnet.safetensors (the tree's default
ControlNet folder), fp16.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

WORK = Path(sys.argv[1]).resolve()
TREE = WORK / "forge"
sys.path[:0] = [str(TREE), str(TREE / "packages_3rdparty"), str(TREE / "repositories" / "huggingface_guess")]
# random weights everywhere as for the checkpoint (the zero convolutions included: a trained ControlNet's are not
# zero); imported before the command line is replaced below: make_forge_model reads WORK from it too
from make_forge_model import randomize  # noqa: E402

sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend.args parses the command line on import

# the tiny UNet's encoder (make_forge_model.py); the ControlNet's outputs must match its feature maps
CONFIG = dict(in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=1, channel_mult=(1, 1, 1),
              num_heads=8, use_spatial_transformer=True, transformer_depth=[0, 0, 1], transformer_depth_middle=1,
              context_dim=768)


def controlnet() -> Path:
    from backend.nn.cnets import cldm
    from huggingface_guess.detection import model_config_from_unet
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = cldm.ControlNet(**CONFIG)
    randomize(net, 5)
    sd = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in net.state_dict().items()}
    # what Forge's loader does with the file: detect the config from the keys, build, load every key
    detected = model_config_from_unet(sd, "", True).unet_config
    detected.pop("out_channels", None)
    detected["hint_channels"] = sd["input_hint_block.0.weight"].shape[1]
    check = cldm.ControlNet(**detected)
    missing, unexpected = check.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    out = TREE / "models" / "ControlNet"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny-controlnet.safetensors"
    save_file(sd, str(path))
    return path


def checkpoint() -> Path:
    """tiny-sd15 with transformers in the output blocks at 1/4 of the latent too; its text encoder and VAE."""
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from huggingface_guess.detection import model_config_from_unet
    from safetensors.torch import load_file, save_file

    models = WORK / "models" / "Stable-diffusion"
    base = load_file(str(models / "tiny-sd15.safetensors"))
    sd = {k: v for k, v in base.items() if not k.startswith("model.diffusion_model.")}
    torch.manual_seed(0)
    unet = IntegratedUNet2DConditionModel(
        in_channels=4, model_channels=320, out_channels=4, num_res_blocks=1, channel_mult=(1, 1, 1), num_heads=8,
        use_spatial_transformer=True, transformer_depth=[0, 0, 1], transformer_depth_middle=1,
        transformer_depth_output=[1, 1, 0, 0, 1, 1],  # popped from the end: the first two output blocks too
        context_dim=768)
    randomize(unet, 6)
    sd.update({"model.diffusion_model." + k: v.detach().to(torch.float16).contiguous().clone()
               for k, v in unet.state_dict().items()})
    name = type(model_config_from_unet(sd, "model.diffusion_model.")).__name__
    assert name == "SD15", f"Forge would not load it as SD1.5 ({name})"
    path = models / "tiny-sd15_cnet.safetensors"
    save_file(sd, str(path))
    return path


def main() -> None:
    for build in (controlnet, checkpoint):
        start = time.perf_counter()
        path = build()
        print(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB in {path.parent} "
              f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
