#!/usr/bin/env bash
# Prepares the real AUTOMATIC1111 WebUI for the integration tests, offline, on the CPU:
#   - a separate venv (python 3.11, torch 2.14.1 + torchvision 0.29.1, the WebUI's requirements_versions.txt),
#   - a writable copy of the WebUI tree named by SEGRET_WEBUI_DIR with this extension copied into extensions/,
#   - tiny random-weight checkpoints (SD1, SDXL), a tiny kohya-style LoRA and the CLIP tokenizer HF cache; the
#     tiny SDXL's OpenCLIP-G config (segret-tiny-g.json) goes into the venv's open_clip/model_configs.
# Everything goes under SEGRET_WEBUI_WORK (default: .webui-work in the repository root; git-ignored), except the
# venv (6.6 GB, about 10 minutes to install): SEGRET_WEBUI_VENV, default ~/.cache/sd-webui-segret/webui-venv,
# kept between runs (and fresh clones, as CI's) while its requirements are unchanged; WORK/venv links to it.
# The tree and the models are rebuilt on every run.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/integration/host_setup.sh
REPO=$PWD
SRC=${SEGRET_WEBUI_DIR:?set SEGRET_WEBUI_DIR to an AUTOMATIC1111 WebUI v1.10.1 tree}
WORK=${SEGRET_WEBUI_WORK:-$REPO/.webui-work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
VENV=${SEGRET_WEBUI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-webui-segret/webui-venv}

# ---- the WebUI's own environment -------------------------------------------------------------------
REQ=$WORK/requirements.txt
{
  grep -v -E '^(torch|setuptools)([=<> ]|$)' "$SRC/requirements_versions.txt"
  echo 'setuptools>=77.0.3,<81'   # torch 2.14.1 needs >=77; <81 keeps pkg_resources for lightning
  echo 'clip-anytorch==2.6.0'     # the WebUI installs the git-only `clip` package; same code on PyPI
  echo 'torch==2.14.1'
  echo 'torchvision==0.29.1'
} > "$REQ.new"
host_venv "$VENV" "$WORK" "$REQ.new"

# ---- a writable copy of the tree, with this extension installed as a copy ---------------------------
host_tree "$SRC" "$WORK/webui"

# a stand-in for extensions whose attention hooks assume the CFG batch layout (see its docstring)
cp -r tests/integration/cfg_split_hook "$WORK/webui/extensions/cfg-split-hook"

# ---- tiny models and the offline tokenizer cache ----------------------------------------------------
"$VENV/bin/python" tests/integration/make_models.py "$WORK"
echo "webui ready in $WORK"
