#!/usr/bin/env bash
# Creates .venv in the repository root with everything the tests need, CPU only, from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# torch: the CPU build (pip takes 2.13.0 from this machine's local index; never a CUDA build)
$PIP install -q --disable-pip-version-check torch==2.13.0
# The same Stability ldm code the WebUI runs, the k-diffusion samplers and the CLIP BPE tokenizer.
# --no-deps: their declared dependencies pin old training stacks (pytorch-lightning, transformers, torchvision)
# that the tested code never imports.
$PIP install -q --disable-pip-version-check --no-deps stable-diffusion-sdkit==2.1.5 k-diffusion==0.1.1.post1 \
    open-clip-torch==3.3.0
$PIP install -q --disable-pip-version-check -r tests/requirements.txt torch==2.13.0
.venv/bin/python -c "import torch, ldm, gradio; print('test environment ready: torch', torch.__version__, '| gradio', gradio.__version__)"
