#!/usr/bin/env bash
# Prepares the real Stable Diffusion WebUI Forge for the integration tests, offline, on the CPU:
#   - a separate venv (python 3.11, torch 2.14.1 + torchvision 0.29.1, Forge's requirements_versions.txt),
#   - a writable copy of the Forge tree named by SEGRET_FORGE_DIR with this extension copied into extensions/,
#     its bundled SD1.5 and SDXL text-encoder and VAE configs shrunk (the tiny checkpoints below match them),
#   - a tiny random-weight SD1.5-shaped checkpoint (320 base channels, context 768: what Forge recognises) and an
#     SDXL-shaped one (320 channels, context 2048, vector 2816, transformer depths [0,0,2,2,10,10]).
# Everything goes under SEGRET_FORGE_WORK (default: .forge-work in the repository root; git-ignored), except the
# venv: SEGRET_FORGE_VENV, default ~/.cache/sd-webui-segret/forge-venv, kept between runs while its requirements
# are unchanged; WORK/venv links to it. The tree and the SD1.5 model are rebuilt on every run, the SDXL model
# (510 MiB) only when its recipe changed (make_forge_model.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/integration/host_setup.sh
REPO=$PWD
SRC=${SEGRET_FORGE_DIR:?set SEGRET_FORGE_DIR to a Stable Diffusion WebUI Forge tree}
WORK=${SEGRET_FORGE_WORK:-$REPO/.forge-work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
VENV=${SEGRET_FORGE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-webui-segret/forge-venv}

# ---- Forge's own environment -------------------------------------------------------------------------
REQ=$WORK/requirements.txt
{
  grep -v -E '^(torch|setuptools)([=<> ]|$)' "$SRC/requirements_versions.txt"
  echo 'setuptools>=77.0.3,<81'   # torch 2.14.1 needs >=77; <81 keeps pkg_resources
  echo 'joblib'                   # the built-in soft-inpainting script imports it; Forge does not list it
  echo 'torch==2.14.1'
  echo 'torchvision==0.29.1'
} > "$REQ.new"
host_venv "$VENV" "$WORK" "$REQ.new"
[ "${1:-}" = "--venv-only" ] && exit 0

# bitsandbytes for the NF4 check only (forge_nf4_check.py puts it on its own path): Forge does not list it, so it
# stays out of Forge's venv and the server never sees it
BNB=bitsandbytes==0.50.2
if [ "$(cat "$WORK/bnb/.segret-version" 2>/dev/null)" != "$BNB" ]; then
  rm -rf "$WORK/bnb"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-compile --no-deps --target "$WORK/bnb" "$BNB"
  echo "$BNB" > "$WORK/bnb/.segret-version"
fi

# ---- a writable copy of the tree, with this extension installed as a copy ---------------------------
host_tree "$SRC" "$WORK/forge"

# a stand-in for extensions that replace cross-attention through the UNet patcher (see its docstring)
cp -r tests/integration/forge_attn2_hook "$WORK/forge/extensions/forge-attn2-hook"

# ---- the tiny model (and the configs it matches) ------------------------------------------------------
"$VENV/bin/python" tests/integration/make_forge_model.py "$WORK"
"$VENV/bin/python" tests/integration/make_forge_controlnet.py "$WORK"  # after the checkpoint: the ControlNet matches its UNet
echo "forge ready in $WORK"
