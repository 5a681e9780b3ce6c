"""The architecture as rules on the import graph (read from the source with `ast`, so function-level
imports count too) and on what the two distributions install.

Layers, lowest first: the runtime core `onestory` (torch + einops + safetensors), the ComfyUI pack
(`nodes/`: glue, then node files), the lab (`lab/onestory_lab`). Imports only go down; inside the
core there is no cycle; node files never import each other; nothing edits sys.path.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_DEPS = {"torch", "einops", "safetensors"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
# an edit of the import path in code: sys.path.insert / .append, pytest's syspath_prepend
SYS_PATH_EDIT = re.compile(r"sys\.path\.(insert|append)\(|syspath_prepend\(")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "lab":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything `path` imports at run time (TYPE_CHECKING blocks excluded).
    The repository root package (what ComfyUI imports) is called ``pack``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    module = _module_name(path)
    package = module if _is_package(path) else module.rpartition(".")[0]
    if path.parent == ROOT:
        module = package = "pack"
    elif path.relative_to(ROOT).parts[0] == "nodes":    # nodes/ is a subpackage of the pack
        package = "pack." + package
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found.update(f"{target}.{a.name}" if not node.module else target for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module":
            found.add("<dynamic>")
    return found


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _local(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_core_imports_only_torch_einops_safetensors_and_itself():
    for path in _files("onestory"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top in STDLIB | CORE_DEPS | {"onestory"}, f"{path.relative_to(ROOT)} imports {name}"


def test_core_import_graph_has_no_cycle():
    modules = {_module_name(p): p for p in _files("onestory")}
    graph = {}
    for mod, path in modules.items():
        deps = set()
        for name in imports_of(path):
            # "from . import x" / "from .a import b": the longest known module name
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != mod and name != "onestory":
                deps.add(name)
        graph[mod] = deps
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, dep]))
            if dep not in state:
                visit(dep, trail + [node])
        state[node] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])
    assert "onestory.conditioner" in graph and "onestory.frame_selector" in graph


def test_pack_layers():
    node_files = [p for p in (ROOT / "nodes").glob("*.py") if p.name not in ("__init__.py", "extension.py")]
    assert len(node_files) >= 6
    node_modules = {"pack.nodes." + p.stem for p in node_files}
    for path in _files("nodes") + [ROOT / "__init__.py"]:
        rel = path.relative_to(ROOT).as_posix()
        names = imports_of(path)
        for name in names:
            assert not _local(name, "onestory_lab"), f"{rel} imports the lab ({name})"
            assert not _local(name, "onestory"), f"{rel} imports the core by its top-level name ({name}); " \
                                                 "take core names from nodes/glue/core.py"
            assert not _local(name, "pack.onestory") or rel == "nodes/glue/core.py", \
                f"{rel} imports the core directly ({name}); use nodes/glue/core.py"
            if rel.startswith("nodes/glue/"):
                assert not any(_local(name, m) for m in node_modules), f"glue {rel} imports node file {name}"
            elif path in node_files:
                own = "pack.nodes." + path.stem
                others = [m for m in node_modules if m != own and _local(name, m)]
                assert not others, f"node file {rel} imports node file {others}"
    assert "<dynamic>" in imports_of(ROOT / "nodes" / "glue" / "core.py")


def test_lab_imports_comfyui_only_in_its_hook_benchmark():
    """The lab sits on the core; only the benchmark of the ComfyUI hook (run in ComfyUI's Python)
    reaches into ComfyUI and the pack."""
    for path in _files("lab/onestory_lab"):
        rel = path.relative_to(ROOT).as_posix()
        for name in imports_of(path):
            top = name.split(".")[0]
            if rel == "lab/onestory_lab/bench/hook_bench.py" and (top.startswith("comfy") or name == "<dynamic>"):
                continue
            assert top not in ("nodes", "comfyui_onestory", "pack", "<dynamic>") and not top.startswith("comfy"), \
                f"{rel} imports {name}"


def test_no_sys_path_edits():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "node_modules" in rel or rel.startswith((".git/", "build/")):
            continue
        text = path.read_text(errors="replace")
        if SYS_PATH_EDIT.search(text):
            offenders.append(rel)
    assert offenders == []


CORE_IMPORT_SCRIPT = r"""
import json, pkgutil, sys
import torch, einops, safetensors, safetensors.torch
before = {m.split(".")[0] for m in sys.modules}
import onestory
names = [m.name for m in pkgutil.walk_packages(onestory.__path__, "onestory.")]
for name in names:
    __import__(name)
after = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"modules": names, "new": sorted(after - before - set(sys.stdlib_module_names))}))
"""


def test_core_needs_nothing_beyond_its_three_dependencies():
    done = subprocess.run([sys.executable, "-c", CORE_IMPORT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"onestory.wan", "onestory.frame_selector", "onestory.conditioner"} <= set(report["modules"])
    assert report["new"] == ["onestory"], report["new"]


@pytest.fixture(scope="module")
def pack_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = list(out.glob("comfyui_onestory-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_pack_wheel_holds_what_comfyui_loads_and_nothing_of_the_lab(pack_wheel):
    names = zipfile.ZipFile(pack_wheel).namelist()
    for required in ("onestory/wan.py", "onestory/frame_selector.py", "comfyui_onestory/__init__.py",
                     "comfyui_onestory/nodes/extension.py", "comfyui_onestory/nodes/glue/hook.py",
                     "comfyui_onestory/js/memory_strip.js", "comfyui_onestory/js/docs/OneStoryNextShot.md"):
        assert required in names, required
    assert any(n.startswith("comfyui_onestory/example_workflows/") and n.endswith(".json") for n in names)
    leaked = [n for n in names if "onestory_lab" in n or n.endswith(".safetensors") or "/tests/" in n
              or n.startswith(("tests/", "lab/", "docs/"))]
    assert leaked == []


def test_installed_pack_binds_nodes_to_the_top_level_core(pack_wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(pack_wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    code = ("import onestory, comfyui_onestory.nodes.glue.core as c;"
            "print(c.CORE_PACKAGE, onestory.__file__, c.MemoryBank.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    core_package, core_file, bank_module = out.stdout.split()
    assert core_package == "onestory" and core_file.startswith(str(target)) and bank_module == "onestory.memory"
