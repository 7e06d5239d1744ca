"""Runs the node tests of javascript/segret.js (chip words, concept toggling, DOM glue on a fake DOM)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_javascript_node_tests():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    # Explicit files, not the bare directory: node 20 searches a directory argument, node >= 21 treats it as a
    # glob that matches the directory itself and then fails with MODULE_NOT_FOUND.
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "javascript" / "tests").glob("*.test.js"))
    assert files, "no javascript/tests/*.test.js files"
    proc = subprocess.run(
        [node, "--test", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stdout)
        print(proc.stderr)
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr}"
