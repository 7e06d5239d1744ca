"""Run by Forge's own Python (test_real_forge_lowbit.py): NF4-quantizes a tiny weight with bitsandbytes, writes it
as Forge's NF4 checkpoints store it (the packed uint8 weight and its `weight.*` quant-state tensors) to a
safetensors file, loads that file into Forge's own 4-bit layer (backend/operations_bnb.py, ForgeLoader4Bit), places
the layer in a module, and prints what A-STAR's weight check says of it as JSON.

    python forge_nf4_check.py FORGE_TREE REPO BNB_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path

forge, repo, bnb_dir, out = (Path(a) for a in sys.argv[1:5])
sys.path[:0] = [str(bnb_dir), str(forge / "packages_3rdparty"), str(forge), str(repo)]
sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend reads its command line when imported

import torch  # noqa: E402
from backend import operations_bnb  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from segret_lib.hosts.lowbit import refusal, unsupported_weights  # noqa: E402

weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
quantized = operations_bnb.ForgeParams4bit(weight.clone(), requires_grad=False, quant_type="nf4")
quantized = quantized._quantize(torch.device("cpu"))
state = {"weight": quantized.data, **{f"weight.{k}": v for k, v in quantized.quant_state.as_dict(packed=True).items()}}
save_file(state, str(out / "tiny_nf4.safetensors"))

layer = operations_bnb.ForgeLoader4Bit(device=torch.device("cpu"), dtype=torch.float32, quant_type="nf4")
layer.load_state_dict(load_file(str(out / "tiny_nf4.safetensors")), strict=False)
param = layer.weight
restored = operations_bnb.dequantize_4bit(param, quant_state=param.quant_state, blocksize=param.blocksize,
                                         quant_type=param.quant_type)  # Forge's own call, minus its .cuda()
model = torch.nn.Sequential(torch.nn.Linear(32, 64, bias=False), torch.nn.Linear(64, 8))
before = unsupported_weights(model)
model[0].weight = param
corr = torch.corrcoef(torch.stack([restored.flatten().float(), weight.flatten()]))[0, 1]
print(json.dumps({"class": type(param).__name__, "quant_type": param.quant_type,
                  "stored": [str(param.dtype), int(param.numel())], "before": before,
                  "after": unsupported_weights(model), "message": refusal(model),
                  "correlation": float(corr), "keys": sorted(state)}))
