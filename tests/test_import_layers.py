"""Imports go one way: prompt -> diffusion + capture -> masks -> cache -> data -> Lightning -> W&B.

Every module of the package is parsed (``ast``; function-local and ``TYPE_CHECKING`` imports
count too) and its imports are reduced to an edge between *layers*: a package of ``synthmask``
(``synthmask.world``), a top-level module (``synthmask.synthesis``), or one of the Lightning
folders installed under the namespace (``synthmask.datamodules``). The test fails on

- an edge between two layers that ``ALLOWED`` does not list (each layer names what it may
  import, read bottom-up; tests check that the table itself has no cycle and that no core layer
  lists a Lightning folder or the command line),
- a third-party import that ``FORBIDDEN_THIRD_PARTY`` rules out (core -> lightning, world ->
  diffusers / transformers); the command line (``ENTRY_POINTS``: ``synthmask.cli``, the
  LightningCLI) is not core,
- a cycle between layers (reported as the strongly connected group).
- a cycle between the modules (files) of one package of ``synthmask``, e.g. between the
  store, writer and recovery of ``synthmask.cache``.

An import listed in ``KNOWN_EXCEPTIONS`` (module, layer) is let through and printed, until the
work that removes it lands.

``python tests/test_import_layers.py [ROOT]`` prints the layer graph of a checkout.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source folder -> import name (the Lightning folders are installed under synthmask.*).
SOURCE_DIRS = {
    "synthmask": "synthmask",
    "lightning_modules": "synthmask.lightning_modules",
    "datamodules": "synthmask.datamodules",
    "callbacks": "synthmask.callbacks",
}
LIGHTNING_LAYERS = {"lightning_modules", "datamodules", "callbacks"}
# Modules of synthmask/ that are the command line, not core: they may import Lightning.
ENTRY_POINTS = {"cli", "__main__"}

# What each layer may import from the others (names without the "synthmask." prefix), from the
# bottom up. A layer not named here may import nothing of synthmask.
ALLOWED: dict[str, set[str]] = {
    # -- core (no Lightning) ------------------------------------------------------------------
    "prompt_types": set(),  # Prompt / ClassWord: the data type every layer passes around
    "world": {"prompt_types"},  # pure scene rendering: shapes, palette, scenes, captions
    "prompts": {"prompt_types", "world"},  # vocabularies (the shapes one reads the world)
    "models": set(),  # segmentation networks, losses, metrics
    "diffusion": {"prompt_types"},  # pipelines, attention capture, sampling, LoRA
    "masks": {"diffusion"},  # heatmaps -> pseudo-masks (capture settings' types)
    "cache": {"prompt_types"},  # sharded sample store
    "training": {"models"},  # robust-training math (pruning, co-training, copy-paste)
    "ldm": {"diffusion", "masks", "prompt_types", "world"},  # the shapes world's tiny LDM
    "synthesis_plan": {"cache", "masks", "prompts", "prompt_types"},
    "synthesis": {"cache", "diffusion", "masks", "prompts", "prompt_types", "synthesis_plan"},
    "synthesis_processes": {"cache", "diffusion", "synthesis", "synthesis_plan"},
    "export": {"cache"},  # cached samples -> VOC / folder layouts
    "cli_errors": set(),  # one-screen user errors of the console script
    "wandb_mode": set(),  # which W&B mode a run starts in (environment and files only)
    "run_identity": {"masks"},  # run names, tags, flat settings, code provenance
    "run_records": {"run_identity"},  # run.json and `synthmask runs`
    # -- entry points: the console script wires everything, so it may import any layer ---------
    "cli": {"cache", "callbacks", "cli_errors", "export", "run_records"},
    "__main__": {"cli"},
    # -- Lightning folders ----------------------------------------------------------------------
    "callbacks": {
        "cache",
        "masks",
        "models",
        "prompt_types",
        "run_identity",
        "run_records",
        "synthesis_plan",
        "wandb_mode",
    },
    "datamodules": {
        "cache",
        "diffusion",
        "masks",
        "prompts",
        "prompt_types",
        "synthesis",
        "synthesis_plan",
        "synthesis_processes",
        "training",
        "world",
    },
    "lightning_modules": {
        "diffusion",
        "ldm",
        "masks",
        "models",
        "prompt_types",
        "prompts",
        "training",
        "world",
    },
}

# Third-party packages a layer must not import, with the reason.
CORE_NO_LIGHTNING = "core (synthmask/ outside the Lightning folders) never imports lightning"
FORBIDDEN_THIRD_PARTY: dict[str, dict[str, str]] = {
    **{
        layer: {"lightning": CORE_NO_LIGHTNING, "pytorch_lightning": CORE_NO_LIGHTNING}
        for layer in ALLOWED
        if layer not in LIGHTNING_LAYERS | ENTRY_POINTS
    },
    "world": {
        "lightning": CORE_NO_LIGHTNING,
        "pytorch_lightning": CORE_NO_LIGHTNING,
        "diffusers": "the world renders scenes; diffusion models live in synthmask.ldm",
        "transformers": "the world renders scenes; text encoders live in synthmask.ldm",
    },
}

# Edges that break the table today and are being removed: (importer module, imported layer).
# Each is printed by the test; remove an entry as soon as its edge is gone.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every module of the package under ``root``."""
    for folder, package in SOURCE_DIRS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


def imported_names(path: Path, module: str) -> set[str]:
    """Absolute names of every import in the file, at any depth (functions, TYPE_CHECKING)."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # "from synthmask import ldm" imports the subpackage synthmask.ldm.
            if target == "synthmask":
                names.update(f"synthmask.{alias.name}" for alias in node.names)
    return names


def layer_of(name: str) -> str | None:
    """Layer of a synthmask module name ("synthmask.world.render" -> "world"); None outside."""
    parts = name.split(".")
    if parts[0] != "synthmask" or len(parts) < 2:
        return None
    return parts[1]


def layer_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """(layer -> imported layers, (layer, imported layer or third-party top name) -> modules)."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], set[str]] = {}
    for module, path in module_files(root):
        source = layer_of(module)
        if source is None:
            continue
        graph.setdefault(source, set())
        for name in imported_names(path, module):
            target = layer_of(name)
            if target is None:
                target = name.split(".")[0]  # third party (or stdlib): keyed by top name
            elif target == source:
                continue
            else:
                graph[source].add(target)
            where.setdefault((source, target), set()).add(module)
    return graph, where


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one layer (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(edges: list[tuple[str, str]], where: dict[tuple[str, str], set[str]]) -> str:
    return "\n".join(f"  {a} -> {b}  (in {', '.join(sorted(where[a, b]))})" for a, b in edges)


def test_allowed_table_is_a_one_way_order() -> None:
    assert cycles(ALLOWED) == []
    assert LIGHTNING_LAYERS <= set(ALLOWED)
    for layer in ALLOWED.keys() - LIGHTNING_LAYERS - ENTRY_POINTS:
        upper = ALLOWED[layer] & (LIGHTNING_LAYERS | ENTRY_POINTS)
        assert not upper, f"core layer {layer} may import {upper}"


def test_every_layer_is_in_the_table() -> None:
    graph, _ = layer_graph()
    unknown = sorted(set(graph) - set(ALLOWED))
    assert not unknown, f"layers missing from ALLOWED (say what they may import): {unknown}"


def test_imports_follow_the_allowed_directions(capsys: pytest.CaptureFixture[str]) -> None:
    graph, where = layer_graph()
    against = sorted(
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if b not in ALLOWED.get(a, set()) and b in ALLOWED
    )
    known = [e for e in against if any((m, e[1]) in KNOWN_EXCEPTIONS for m in where[e])]
    with capsys.disabled():
        for (module, target), why in KNOWN_EXCEPTIONS.items():
            gone = module not in where.get((layer_of(module), target), set())
            note = " (no longer imported: remove this exception)" if gone else ""
            print(f"\nknown layering exception: {module} -> {target}: {why}{note}")
    unexplained = [e for e in against if e not in known]
    assert not unexplained, "imports against the layer table:\n" + _describe(unexplained, where)
    # A known exception must not hide other modules making the same edge.
    for a, b in known:
        extra = {m for m in where[a, b] if (m, b) not in KNOWN_EXCEPTIONS}
        assert not extra, f"{a} -> {b} also imported by {sorted(extra)}"


def test_no_forbidden_third_party_imports() -> None:
    _, where = layer_graph()
    bad = [
        f"  {layer} -> {package} (in {', '.join(sorted(where[layer, package]))}): {why}"
        for layer, rules in FORBIDDEN_THIRD_PARTY.items()
        for package, why in rules.items()
        if (layer, package) in where
    ]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_no_cycle_between_layers() -> None:
    graph, where = layer_graph()
    known_edges = {(layer_of(m), t) for m, t in KNOWN_EXCEPTIONS}
    pruned = {a: {b for b in bs if (a, b) not in known_edges} for a, bs in graph.items()}
    found = cycles(pruned)
    detail = [
        _describe([(a, b) for a in group for b in sorted(graph[a]) if b in group], where)
        for group in found
    ]
    assert not found, "import cycles between layers:\n" + "\n".join(detail)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "synthmask" / "world"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .render import x\n")
    (package / "render.py").write_text(
        "def f():\n    from synthmask.diffusion.capture import CaptureConfig\n"
        "    import diffusers\n"
    )
    for folder in LIGHTNING_LAYERS:
        (tmp_path / folder).mkdir()
    graph, where = layer_graph(tmp_path)
    assert graph == {"world": {"diffusion"}}
    assert where["world", "diffusion"] == {"synthmask.world.render"}
    assert where["world", "diffusers"] == {"synthmask.world.render"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# --------------------------------------------------------------------------- file level
# Inside a package, modules import each other one way too: a cycle between two files of one
# package (even through TYPE_CHECKING or function-local imports) is a design knot.
FILE_LEVEL_PACKAGES = sorted(
    path.parent.relative_to(ROOT).as_posix() for path in (ROOT / "synthmask").glob("*/__init__.py")
)


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (file level; `package` is a
    folder under ``root`` such as "synthmask/cache"). An import of the package itself counts
    as an edge to its ``__init__`` unless every imported name is a submodule."""
    folder = root / package
    dotted = package.replace("/", ".")
    modules = {
        ".".join([dotted, *path.relative_to(folder).with_suffix("").parts]).removesuffix(
            ".__init__"
        ): path
        for path in sorted(folder.rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                subs = {f"{source}.{alias.name}" for alias in node.names}
                targets.update(subs & modules.keys())
                if source in modules and not subs <= modules.keys():
                    targets.add(source)
        graph[module] = targets - {module}
    return graph


@pytest.mark.parametrize("package", FILE_LEVEL_PACKAGES)
def test_no_cycle_between_modules_of_a_package(package: str) -> None:
    graph = module_graph(ROOT, package)
    found = cycles(graph)
    detail = [
        "  " + ", ".join(f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group)
        for group in found
    ]
    assert not found, f"import cycles between modules of {package}:\n" + "\n".join(detail)


def test_the_file_level_checker_sees_type_checking_cycles(tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "sub"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.sub.a import A\n")
    (package / "a.py").write_text("from pkg.sub.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    )
    (package / "c.py").write_text("from pkg.sub import b\n")
    graph = module_graph(tmp_path, "pkg/sub")
    assert graph["pkg.sub"] == {"pkg.sub.a"} and graph["pkg.sub.c"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.sub.a", "pkg.sub.b"]]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    graph, _ = layer_graph(root)
    for layer in sorted(graph):
        print(f"{layer} -> {', '.join(sorted(graph[layer])) or '(nothing)'}")
    print("cycles:", cycles(graph) or "none")
