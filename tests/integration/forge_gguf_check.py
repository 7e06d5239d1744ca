"""Run by Forge's own Python (test_real_forge_lowbit.py): writes a tiny Q8_0 GGUF with the `gguf` package Forge
bundles, reads it back into Forge's own ParameterGGUF (backend/operations_gguf.py), places it in a module, and
prints what A-STAR's weight check says of it as JSON. Forge does not load a whole tiny GGUF checkpoint here
(docs/forge.md#low-bit-weights), so this is as far as Forge's loading goes on this machine.

    python forge_gguf_check.py FORGE_TREE REPO OUT_DIR
"""

import importlib.util
import json
import sys
from pathlib import Path

forge, repo, out = (Path(a) for a in sys.argv[1:4])
sys.path[:0] = [str(forge / "packages_3rdparty"), str(repo)]  # Forge's gguf; not the tree's `modules`

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from segret_lib.hosts.lowbit import refusal, unsupported_weights  # noqa: E402

spec = importlib.util.spec_from_file_location("forge_operations_gguf", forge / "backend" / "operations_gguf.py")
operations_gguf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(operations_gguf)

path = out / "tiny.gguf"
writer = gguf.GGUFWriter(str(path), "sd1")
weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
writer.add_tensor("proj.weight", gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()

tensor = gguf.GGUFReader(str(path)).tensors[0]
param = operations_gguf.ParameterGGUF(tensor)
model = torch.nn.Sequential(torch.nn.Linear(32, 64, bias=False), torch.nn.Linear(64, 8))
before = unsupported_weights(model)
model[0].weight = param
restored = param.dequantize_as_pytorch_parameter().float()  # bakes, then dequantizes (Forge's own path)
print(json.dumps({"class": type(param).__name__, "shape": [int(s) for s in param.shape], "before": before,
                  "after": unsupported_weights(model), "message": refusal(model),
                  "dequantized_error": float((restored - torch.from_numpy(weight)).abs().max())}))
