"""The package's imports follow the flow of a run: no module imports one of a higher
layer, and no two modules import each other (directly or through others).

Pure ``ast`` (nothing is imported): every module under ``phijax/``, its top-level
and its function-level imports alike, since a local import is still a dependency
(one that dodges a cycle is still a cycle). A package ``__init__``'s lazy exports
(``importlib.import_module(f"{__name__}.{...}")``) are not imports; an
``importlib.import_module("phijax.x")`` with a literal name is.
"""

from __future__ import annotations

import ast
import os
import textwrap
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The layers, lowest first, and what each may import besides itself. A module of a
# layer package is its layer; ``BASE`` modules are base; every other top-level module
# (phijax/config.py, the tools, the thin command modules) is "top", which may import
# anything and which no layer imports.
BASE = ("phijax", "phijax.cli", "phijax.config_files", "phijax.files")
MAY_IMPORT = {
    "base": (),
    "kernels": (),  # Pallas kernels: self-contained
    "model": ("kernels", "base"),
    "data": ("base",),
    "convert": ("model", "data", "base"),
    "train": ("model", "data", "convert", "kernels", "base"),
    "evals": ("train", "model", "data", "convert", "kernels", "base"),
    # model-run corpus tools (quality scores, synthetic textbooks): generation, sources
    "curate": ("evals", "train", "model", "data", "convert", "kernels", "base"),
    "sweeps": ("curate", "evals", "train", "model", "data", "convert", "kernels", "base"),
}
TOP = "top"


def module_names(root: str, package: str = "phijax") -> dict[str, str]:
  """``{dotted module name: path}`` of every .py file under ``root/package``."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
    for f in sorted(filenames):
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(dirpath, f)
  return out


def layer(module: str, modules: dict) -> str | None:
  """The module's layer; None for a subpackage the map above does not know."""
  if module in BASE:
    return "base"
  parts = module.split(".")
  if len(parts) == 2 and not modules[module].endswith("__init__.py"):
    return TOP  # a top-level module
  return parts[1] if parts[1] in MAY_IMPORT else None


def imports(module: str, path: str, modules: dict) -> list[tuple[str, int]]:
  """``[(imported module, line)]``: what ``module`` imports, resolved to modules of
  ``modules`` (``from phijax.x import y`` is ``phijax.x.y`` when that is a module,
  else ``phijax.x``); imports of anything else are left out."""
  with open(path, encoding="utf-8") as f, warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a docstring's invalid escape is not this test's
    tree = ast.parse(f.read(), path)
  is_package = os.path.basename(path) == "__init__.py"
  package = module if is_package else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(a.name, node.lineno) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the package, up level - 1 packages
        anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub if sub in modules else base, node.lineno))
    elif (isinstance(node, ast.Call) and node.args
          and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
          and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
               or isinstance(node.func, ast.Name) and node.func.id in (
                   "import_module", "__import__"))):
      out.append((node.args[0].value, node.lineno))
  return [(m, line) for m, line in out if m in modules and m != module]


def import_graph(root: str = ROOT) -> tuple[dict, dict]:
  """(``{module: path}``, ``{module: {imported module: first line}}``)."""
  modules = module_names(root)
  graph = {}
  for module, path in modules.items():
    edges = {}
    for target, line in imports(module, path, modules):
      edges.setdefault(target, line)
    graph[module] = edges
  return modules, graph


def cycles(graph: dict) -> list[list[str]]:
  """One cycle ``[a, b, ..., a]`` through each group of modules that import each
  other (Tarjan's strongly connected components)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def connect(v):  # recursion depth: the longest import chain, a few dozen at most
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(set(group))

  for v in sorted(graph):
    if v not in index:
      connect(v)
  out = []
  for group in groups:  # a shortest way back to the group's first module
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
      path = paths.pop(0)
      nxt = [w for w in sorted(graph[path[-1]]) if w in group]
      if start in nxt:
        out.append(path + [start])
        break
      for w in nxt:
        if w not in seen:
          seen.add(w)
          paths.append(path + [w])
  return sorted(out)


def problems(root: str = ROOT) -> list[str]:
  """Every import cycle and every import of a higher layer, one line each."""
  modules, graph = import_graph(root)
  out = []
  for cycle in cycles(graph):
    steps = [f"{a} ({os.path.relpath(modules[a], root)}:{graph[a][b]})"
             for a, b in zip(cycle, cycle[1:])]
    out.append("import cycle: " + " -> ".join(steps) + f" -> {cycle[-1]}")
  for module in sorted(graph):
    mine = layer(module, modules)
    if mine is None:
      out.append(f"{module}: a package the layer map of tests/test_layers.py does not "
                 "know; add it to MAY_IMPORT")
      continue
    if mine == TOP:
      continue
    for target, line in sorted(graph[module].items()):
      theirs = layer(target, modules)
      if theirs != mine and theirs not in MAY_IMPORT[mine]:
        allowed = ", ".join((mine,) + MAY_IMPORT[mine])
        out.append(f"{os.path.relpath(modules[module], root)}:{line}: {module} ({mine}) "
                   f"imports {target} ({theirs}); {mine} may import only {allowed}")
  return out


def test_no_cycles_and_no_upward_imports():
  found = problems()
  assert not found, "\n".join(found)


def test_the_graph_sees_every_kind_of_import():
  """The walk finds what it must (or the test above would pass on nothing)."""
  modules, graph = import_graph()
  assert len(modules) > 50 and "phijax.model.transformer" in modules
  assert "phijax.sweeps.command" in graph["phijax.sweep"]  # top-level from-import
  assert graph["phijax.data.pipeline"].keys() >= {"phijax.data.sources",
                                                  "phijax.data.packing"}


def _write(root, files: dict) -> None:
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(textwrap.dedent(text))


def test_it_catches_a_cycle_and_an_upward_import(tmp_path):
  _write(tmp_path, {
      "phijax/__init__.py": "",
      "phijax/cli.py": "",
      "phijax/config.py": "from phijax.model import config\n",  # top: may import anything
      "phijax/data/__init__.py": (
          "import importlib\n"
          "def __getattr__(name):\n"
          "  return importlib.import_module(f'{__name__}.{name}')\n"),  # lazy: no import
      "phijax/data/sources.py": (
          "def build(kind):\n"
          "  from phijax.data import arithmetic  # local: still an import\n"),
      "phijax/data/arithmetic.py": "from .sources import build\n",
      "phijax/data/tokenizer.py": "from phijax.model.config import ModelConfig\n",
      "phijax/model/__init__.py": "",
      "phijax/model/config.py": "import phijax.cli\n",
      "phijax/train/__init__.py": "",
      "phijax/train/loop.py": (
          "import importlib\n"
          "def f():\n"
          "  return importlib.import_module('phijax.config')\n"),
      "phijax/extras/__init__.py": "",
  })
  found = problems(str(tmp_path))
  assert found[0] == ("import cycle: phijax.data.arithmetic (phijax/data/arithmetic.py:1) "
                      "-> phijax.data.sources (phijax/data/sources.py:2) -> "
                      "phijax.data.arithmetic"), found
  assert ("phijax/data/tokenizer.py:1: phijax.data.tokenizer (data) imports "
          "phijax.model.config (model); data may import only data, base") in found
  assert ("phijax/train/loop.py:3: phijax.train.loop (train) imports phijax.config (top); "
          "train may import only train, model, data, convert, kernels, base") in found
  assert any(p.startswith("phijax.extras: a package the layer map") for p in found)
  assert len(found) == 4, found
