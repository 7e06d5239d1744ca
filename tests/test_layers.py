"""The folders of segret_lib are its layers: each imports only its own layer and the ones below it, only the
hosts import the host, only the UI (and the hosts that build it) import gradio, and nothing the extension runs
imports the test support; the test support (segret_lib/testing) is what tests/, quality/ and docs/ share, and nothing
outside tests/ imports tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "segret_lib"
LAYERS = ("settings", "engine", "render", "ui", "hosts")  # bottom to top
HOST_PACKAGES = {"modules", "modules_forge", "backend", "ldm", "sgm", "k_diffusion"}


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names a module imports, relative imports resolved against its package; top_level_only: only the
    imports that run when the module is imported (not those inside functions, classes or TYPE_CHECKING)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in (_import_time_nodes(tree) if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def _import_time_nodes(tree: ast.Module):
    """The module body's statements, descending into if/try blocks (but not `if TYPE_CHECKING:`), not into
    functions or classes."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                stack += node.body
            stack += node.orelse
        elif isinstance(node, ast.Try):
            stack += [*node.body, *node.orelse, *node.finalbody, *(n for h in node.handlers for n in h.body)]


def lib_files() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_lives_in_a_layer_folder():
    loose = [p.name for p in LIB.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a layer folder: {loose}"
    folders = {p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {*LAYERS, "testing"}


def test_layers_import_only_downwards():
    for path in lib_files():
        layer = path.relative_to(LIB).parts[0]
        if layer not in LAYERS:
            continue
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "segret_lib" and len(parts) > 1 and parts[1] in {*LAYERS, "testing"}:
                assert parts[1] in allowed, f"{path.relative_to(ROOT)} ({layer}) imports {name}"


def test_only_host_files_import_the_host_and_only_ui_or_hosts_import_gradio():
    for path in lib_files():
        layer = path.relative_to(LIB).parts[0]
        tops = {name.split(".")[0] for name in imports_of(path)}
        if layer not in ("hosts", "testing"):
            assert not tops & HOST_PACKAGES, f"{path.relative_to(ROOT)} imports the host: {tops & HOST_PACKAGES}"
        if layer not in ("ui", "hosts"):
            assert "gradio" not in tops, f"{path.relative_to(ROOT)} imports gradio"


def test_the_script_entry_stays_thin():
    names = imports_of(ROOT / "scripts" / "segret.py")
    ours = {n for n in names if n.startswith("segret_lib")}
    assert ours <= {"segret_lib.hosts.select", "segret_lib.hosts.select.adapter"}
    assert len((ROOT / "scripts" / "segret.py").read_text().splitlines()) < 25


def test_what_the_extension_runs_never_imports_tests_or_the_test_support():
    runtime = [p for p in lib_files() if p.relative_to(LIB).parts[0] != "testing"]
    runtime += [ROOT / "scripts" / "segret.py", ROOT / "install.py"]
    for path in runtime:
        for name in imports_of(path):
            assert not name.startswith(("tests", "segret_lib.testing", "quality")), f"{path.name} imports {name}"


def test_nothing_outside_tests_imports_tests():
    outside = [p for folder in ("quality", "docs", "segret_lib", "scripts") for p in (ROOT / folder).rglob("*.py")
               if "__pycache__" not in p.parts]
    outside.append(ROOT / "install.py")
    assert len(outside) > 30  # the folders were found
    for path in outside:
        for name in imports_of(path):
            assert name.split(".")[0] != "tests", f"{path.relative_to(ROOT)} imports {name}"


def test_the_test_support_imports_no_host_at_import_time():
    support = sorted((LIB / "testing").glob("*.py"))
    assert {p.name for p in support} >= {"thirdparty.py", "tiny_models.py", "cfg.py", "webui_process.py"}
    for path in support:
        at_import = {name.split(".")[0] for name in imports_of(path, top_level_only=True)}
        assert not at_import & HOST_PACKAGES, f"{path.relative_to(ROOT)} imports {at_import & HOST_PACKAGES}"
        anywhere = {name.split(".")[0] for name in imports_of(path)}
        assert not anywhere & {"modules", "modules_forge", "backend"}, f"{path.relative_to(ROOT)} imports the host"
