# Shell functions shared by setup_webui.sh and setup_forge.sh (sourced, not run).

# host_venv VENV WORK REQ: build the venv VENV from the requirements file REQ unless it was built from the same
# file before (it is kept between runs and fresh clones); REQ is removed; WORK/venv becomes a link to VENV.
host_venv() {
  local venv=$1 work=$2 req=$3
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/.segret-requirements"; then
    echo "venv up to date ($venv)"
  else
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "${PYTHON311:-python3.11}" -m venv "$venv"
    "$venv/bin/python" -m pip --disable-pip-version-check -q install --no-compile -r "$req"
    cp "$req" "$venv/.segret-requirements"
  fi
  rm -f "$req"
  if [ "$(readlink -f "$work/venv")" != "$(readlink -f "$venv")" ]; then
    rm -rf "$work/venv"
    ln -s "$venv" "$work/venv"
  fi
}

# host_tree SRC DEST: a writable copy of the host tree SRC at DEST, with this checkout's tracked and
# untracked-but-not-ignored files (what a clone of the working tree would hold) in DEST/extensions/sd-webui-segret.
# Run from the repository root.
host_tree() {
  local src=$1 dest=$2 ext=$2/extensions/sd-webui-segret f
  rm -rf "$dest"
  cp -r "$src" "$dest"
  chmod -R u+w "$dest"
  mkdir -p "$ext"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] || continue
    mkdir -p "$ext/$(dirname "$f")"
    cp -p "$f" "$ext/$f"
  done
}
