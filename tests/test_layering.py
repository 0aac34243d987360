"""linfit's modules form layers that only point down (DESIGN.md, issue 12).

The package is parsed with `ast`, not imported. Every module must be placed
in a layer; a module-level import may point to its own layer or lower, and
the module-level imports have no cycle; a function-local import must point
strictly down and exist only to delay a heavy import (its target imports
TensorFlow, Keras or matplotlib when loaded). The checker is tried on small
synthetic packages too, so it is known to fail when it should.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "linfit"

# Lowest first. Imports may point to the same layer or lower, never up.
LAYERS = [
    ["errors", "interrupts", "arguments", "compat"],
    ["config", "toml_text", "fileio", "history", "variables", "runtime"],
    ["weights_file", "npz_files", "data_files", "arrays", "shards", "standardizer", "streams",
     "agreement", "reference", "training_state"],
    ["checkpoint", "data", "losses"],
    ["models", "pipeline", "stream_formats", "streaming"],
    ["callbacks", "fit_inputs", "loops", "loops.plan", "loops.steps", "loops.manual",
     "loops.keras_fit"],
    ["recording", "loops.failures"],
    ["trainer"],
    ["experiment", "comparison"],
    ["plot_kit"],
    ["report", "plots", "plot_comparison", "console", "run_records"],
    ["rundir"],
    ["job"],
    ["config_help", "train", "predict", "compare", "convert", "__main__", "__init__"],
]
# Slow to import: a function-local import may delay these (numpy and h5py too,
# so that --help, --print-config and config mistakes answer at once).
HEAVY = ("tensorflow", "keras", "matplotlib", "numpy", "h5py")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(tree: ast.Module, package: str, name: str) -> list[tuple[str, bool]]:
    """(imported module, whether at module level) for each import in the tree."""
    found = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = ".".join([package, *name.split(".")][:-node.level] or [package])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(target, id(node) in top_level) for target in targets]
    return found


def check_layers(root: Path, layers: list[list[str]], heavy=HEAVY) -> list[str]:
    """Every violation of the layering rule in the package at `root`, as sentences."""
    package = root.name
    layer_of = {module: index for index, names in enumerate(layers) for module in names}
    modules = {module_name(path, root): ast.parse(path.read_text())
               for path in sorted(root.rglob("*.py"))}
    problems = [f"{name} is in no layer: add it to LAYERS" for name in modules
                if name not in layer_of]
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lazy: dict[str, set[str]] = {name: set() for name in modules}
    external: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for target, top_level in imports(tree, package, name):
            if not target.startswith(package + "."):
                if top_level:
                    external[name].add(target.split(".")[0])
                continue
            inner = target[len(package) + 1:]
            if inner not in modules:
                continue  # `from linfit import x` names x's module as well
            (graph if top_level else lazy)[name].add(inner)
    for name in modules:
        for target in graph[name]:
            if layer_of.get(target, -1) > layer_of.get(name, -1):
                problems.append(f"{name} imports {target}, a higher layer")
        for target in lazy[name]:
            if layer_of.get(target, -1) >= layer_of.get(name, -1):
                problems.append(f"{name} imports {target} inside a function, but not from "
                                "a lower layer")
            elif not heavy_closure(target, graph, external) & set(heavy):
                problems.append(f"{name} imports {target} inside a function, but it delays "
                                f"no heavy import ({', '.join(heavy)})")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def heavy_closure(start: str, graph, external) -> set[str]:
    """The external packages `start` imports at module level, directly or through others."""
    seen, stack, found = set(), [start], set()
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            found |= external[name]
            stack += graph[name]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other."""
    found, state = [], {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_linfit_imports_only_point_down():
    assert check_layers(PACKAGE, LAYERS) == []


def make_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__": "", **files}.items():
        path = package / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


SYNTHETIC_LAYERS = [["low"], ["middle", "sub", "sub.inner"], ["high", "__init__"]]


@pytest.mark.parametrize("files, expected", [
    ({"low": "", "middle": "from pkg import low\n", "high": "import pkg.middle\n"}, []),
    ({"low": "from pkg import high\n", "middle": "", "high": ""},
     ["low imports high, a higher layer"]),
    ({"low": "", "middle": "from pkg import sub\n", "sub": "from pkg.middle import x\n",
      "high": ""}, ["import cycle: middle -> sub -> middle"]),
    ({"low": "", "middle": "", "high": "",
      "sub.inner": "from .. import middle\n", "sub": ""}, []),
    ({"low": "", "middle": "def f():\n    from pkg import high\n", "high": ""},
     ["middle imports high inside a function, but not from a lower layer"]),
    ({"low": "import json\n", "middle": "def f():\n    from pkg import low\n", "high": ""},
     ["middle imports low inside a function, but it delays no heavy import "
      "(tensorflow, keras, matplotlib, numpy, h5py)"]),
    ({"low": "import tensorflow\n", "middle": "def f():\n    from pkg import low\n",
      "high": ""}, []),
    ({"low": "", "middle": "", "high": "", "stray": ""},
     ["stray is in no layer: add it to LAYERS"]),
], ids=["clean", "upward", "planted-cycle", "relative", "lazy-upward", "lazy-for-nothing",
        "lazy-tensorflow", "unplaced"])
def test_the_checker_finds_what_it_should(tmp_path, files, expected):
    assert check_layers(make_package(tmp_path, files), SYNTHETIC_LAYERS) == expected


def test_the_readme_layout_names_every_module_in_its_layer():
    """README's Layout: one line per module, under the layer LAYERS gives it."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("### Layout", 1)[1].split("```", 2)[1]
    listed, layer = {}, None
    for line in block.splitlines():
        found = re.match(r"(?:layer (\d+))?\s+([\w/]+)\.py\s", line)
        if found:
            layer = int(found.group(1)) if found.group(1) else layer
            listed[found.group(2).replace("/", ".")] = layer
    expected = {module: index for index, names in enumerate(LAYERS) for module in names
                if module != "loops"}
    assert listed == expected
