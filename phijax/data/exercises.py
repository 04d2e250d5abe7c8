"""phi-1-style code exercises cut from Python source: prompt = a function's signature
and docstring, response = its body.

    python -m phijax.data.exercises --split=train --out=exercises.jsonl

Why: phi-1's CodeExercises are "write the body that this docstring describes"; the
stdlib already holds thousands of them, written by people, and pairing each with the
pretraining split gives an exercise set whose held-out part the model has never seen.

What counts as an exercise (``Selection``; every function, method and nested
function is a candidate):

- a real docstring: at least ``min_doc_words`` (4) words; placeholders such as
  "Internal." or "See foo." say too little to write a body from;
- a body (what follows the docstring) of ``min_body_lines`` to ``max_body_lines``
  (2 to 15) non-blank lines: one-liners are mostly delegation, long bodies are
  beyond what an exact-match score can say anything about;
- not a stub: bodies of only ``pass``, ``...`` and ``raise NotImplementedError``
  are left out;
- the body starts on its own line, below the docstring, and every non-blank line of
  it is indented: a body line at column 0 (inside a multi-line string, or a comment)
  would look like the end of the function to a model continuing the prompt.

The function's source segment (decorators included: ``@property``,
``@contextmanager``, ``@staticmethod`` change what the body must do) is dedented by
the ``def`` line's indentation, so a method or nested function becomes top-level
code and ``prompt + response`` parses on its own; lines of multi-line strings that
carry that indentation lose it too, as ``textwrap.dedent`` would. ``prompt`` runs from
the first decorator through the docstring's closing line, ``response`` from the next
line through the last line of the body; both end with a newline. Names are qualified
as ``__qualname__`` is: ``Class.method``, ``outer.<locals>.inner``.

Split: exercises from a file are train or held-out as that file is in pretraining:
``stdlib_exercises`` asks ``phijax.data.sources.stdlib_source`` (the function the
training pipeline builds the stdlib source with) which files are held out, so no
held-out exercise comes from a file the model was trained on.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import json
import os
import pathlib
import sys

from phijax.data import config as data_config, corpus, sources
from phijax.data.errors import DataError

SPLITS = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which functions become exercises (see the module docstring)."""
  min_doc_words: int = 4
  min_body_lines: int = 2
  max_body_lines: int = 15

  def __post_init__(self):
    if self.min_doc_words < 0 or self.min_body_lines < 1:
      raise ValueError(f"exercise selection: min_doc_words must be >= 0 and "
                       f"min_body_lines >= 1, got {self}")
    if self.max_body_lines < self.min_body_lines:
      raise ValueError(f"exercise selection: max_body_lines ({self.max_body_lines}) is "
                       f"below min_body_lines ({self.min_body_lines})")


@dataclasses.dataclass(frozen=True)
class Exercise:
  name: str  # qualified: Class.method, outer.<locals>.inner
  path: str  # the file, relative to the corpus root (the pretraining document key)
  lineno: int  # the ``def`` line (1-based)
  prompt: str  # decorators + signature + docstring, dedented, ending in a newline
  response: str  # the body after the docstring, dedented, ending in a newline

  def record(self) -> dict:
    """The SFT record (``phijax.data.sft``) plus where it comes from."""
    return {"prompt": self.prompt, "response": self.response, "name": self.name,
            "path": self.path, "lineno": self.lineno}


def _lines(text: str) -> list[str]:
  # ast numbers lines at \n, \r\n and \r only; str.splitlines would also split at
  # form feeds and other separators the stdlib has inside lines.
  return io.StringIO(text, newline="").readlines()


def _is_stub(stmt: ast.stmt) -> bool:
  if isinstance(stmt, ast.Pass):
    return True
  if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
    return True  # ``...`` or a second string
  if isinstance(stmt, ast.Raise) and stmt.exc is not None:
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
  return False


# A def is a statement: only statements and the clauses that hold them can contain one
# (expressions are not walked, which makes the scan several times faster).
_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)


def _functions(tree: ast.Module):
  """``(qualified name, node)`` of every function in source order."""
  def walk(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        name = prefix + child.name
        yield name, child
        yield from walk(child, name + ".<locals>.")
      elif isinstance(child, ast.ClassDef):
        yield from walk(child, prefix + child.name + ".")
      elif isinstance(child, _BLOCKS):  # if / try / with ...: the scope's prefix
        yield from walk(child, prefix)
  yield from walk(tree, "")


def _dedent(lines: list[str], prefix: str) -> str:
  return "".join(l[len(prefix):] if l.startswith(prefix) else l for l in lines)


def _with_newline(text: str) -> str:
  return text if text.endswith(("\n", "\r")) else text + "\n"


def _candidate(name, node, lines, path, sel: Selection, why: dict):
  """The exercise of one function, or None (the reason is counted in ``why``)."""
  body = node.body
  doc = body[0] if body else None
  if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
          and isinstance(doc.value.value, str)):
    why["no_docstring"] += 1
    return None
  if len(doc.value.value.split()) < sel.min_doc_words:
    why["short_docstring"] += 1
    return None
  rest = body[1:]
  if not rest:
    why["no_body"] += 1
    return None
  if all(_is_stub(s) for s in rest):
    why["stub_body"] += 1
    return None
  start = min([node.lineno] + [d.lineno for d in node.decorator_list])
  if rest[0].lineno <= doc.end_lineno:
    why["same_line"] += 1  # def f(): "doc"; return 1  or  """doc"""; x = 1
    return None
  first = lines[start - 1]
  prefix = first[:len(first) - len(first.lstrip(" \t\f"))]
  head = lines[start - 1:doc.end_lineno]
  tail = lines[doc.end_lineno:node.end_lineno]
  prompt = _with_newline(_dedent(head, prefix))
  response = _with_newline(_dedent(tail, prefix))
  body_lines = [l for l in _lines(response) if l.strip()]
  if not sel.min_body_lines <= len(body_lines) <= sel.max_body_lines:
    why["body_too_short" if len(body_lines) < sel.min_body_lines else "body_too_long"] += 1
    return None
  if any(not l[0].isspace() for l in body_lines):
    why["unindented_body_line"] += 1
    return None
  try:
    ast.parse(prompt + response)
  except SyntaxError:  # never seen on the stdlib; counted, not raised
    why["unparseable"] += 1
    return None
  return Exercise(name, path, node.lineno, prompt, response)


REASONS = ("no_docstring", "short_docstring", "no_body", "stub_body", "same_line",
           "body_too_short", "body_too_long", "unindented_body_line", "unparseable")


def extract(source_text: str, *, path: str = "<string>",
            selection: Selection | None = None, skipped: dict | None = None
            ) -> list[Exercise]:
  """The exercises of one Python source, in source order.

  ``skipped``, if given, is a dict whose counts (``REASONS`` plus ``functions``) are
  increased. A source that does not parse is a ``DataError`` naming ``path``.
  """
  sel = selection or Selection()
  why = {k: 0 for k in REASONS}
  try:
    tree = ast.parse(source_text)
  except SyntaxError as e:
    raise DataError(f"{path}:{e.lineno}: not Python ({e.msg}); exercises are cut from "
                    "parseable .py files only") from None
  lines = _lines(source_text)
  out, functions = [], 0
  for name, node in _functions(tree):
    functions += 1
    ex = _candidate(name, node, lines, path, sel, why)
    if ex is not None:
      out.append(ex)
  if skipped is not None:
    skipped["functions"] = skipped.get("functions", 0) + functions
    for k, v in why.items():
      skipped[k] = skipped.get(k, 0) + v
  return out


# ------------------------------------------------------------------ the stdlib


def default_heldout_fraction() -> float:
  return float(data_config.defaults().heldout_fraction)


@dataclasses.dataclass
class Scan:
  """Every exercise of a corpus, by split, with the counts the README quotes."""
  train: list
  heldout: list
  counts: dict


@functools.lru_cache(maxsize=4)
def _scan_stdlib(path: str, heldout_fraction: float, selection: Selection) -> Scan:
  src = sources.stdlib_source("stdlib", path, heldout_fraction)
  heldout = set(src.heldout_indices().tolist())
  split = {"train": [], "heldout": []}
  files = {"train": 0, "heldout": 0}
  why = {}
  not_python = []
  for i, key in enumerate(src.keys):
    side = "heldout" if i in heldout else "train"
    files[side] += 1
    try:
      split[side].extend(extract(src.text(i), path=key, selection=selection,
                                 skipped=why))
    except DataError:
      not_python.append(key)
  counts = {"files": len(src.keys), "files_train": files["train"],
            "files_heldout": files["heldout"], "files_not_python": len(not_python),
            "functions": why.pop("functions", 0),
            "exercises_train": len(split["train"]),
            "exercises_heldout": len(split["heldout"]),
            "skipped": {k: why.get(k, 0) for k in REASONS},
            "heldout_fraction": heldout_fraction, "selection": dataclasses.asdict(selection)}
  return Scan(split["train"], split["heldout"], counts)


def scan_stdlib(*, path: str = "", heldout_fraction: float | None = None,
                selection: Selection | None = None) -> Scan:
  """Exercises of the stdlib corpus (``path``: another stdlib root, as
  ``config.data.sources.stdlib.path``), split as pretraining with
  ``heldout_fraction`` (default: ``config.data.heldout_fraction``'s default).
  Cached per arguments: the scan parses every file (seconds)."""
  fraction = default_heldout_fraction() if heldout_fraction is None else heldout_fraction
  return _scan_stdlib(path, float(fraction), selection or Selection())


def stdlib_exercises(split: str = "train", **kwargs) -> list[Exercise]:
  """The ``train`` or ``heldout`` exercises of the stdlib, ordered by file (sorted
  relative path) then by line. Keyword arguments as ``scan_stdlib``."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  return list(getattr(scan_stdlib(**kwargs), split))


def counts(**kwargs) -> dict:
  """Files scanned, functions seen, exercises per split and why the rest were
  skipped. Keyword arguments as ``scan_stdlib``."""
  return dict(scan_stdlib(**kwargs).counts)


def write_jsonl(exercises, path) -> int:
  """Writes SFT JSON Lines (``{"prompt", "response", "name", "path", "lineno"}``)
  that a ``source("sft", PATH)`` data source reads; returns the count."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    for ex in exercises:
      f.write(json.dumps(ex.record()) + "\n")
  tmp.replace(path)
  return len(exercises)


# ------------------------------------------------------------------ preference pairs


def shuffled_lines(text: str, key: str) -> str | None:
  """``text`` with its lines in another order, the same for the same ``key``: a
  rejected response that keeps every token of the real one but not its order. None
  when no other order exists (fewer than two distinct lines)."""
  import random
  lines = _lines(_with_newline(text))
  if len(set(lines)) < 2:
    return None
  rng = random.Random(key)  # str seeds are hashed with sha512: stable across runs
  while True:
    order = rng.sample(lines, len(lines))
    if order != lines:
      return "".join(order)


def preference_pairs(exercises, seed: int = 0) -> list[dict]:
  """DPO records for ``phijax.data.preferences``: ``prompt`` = the exercise's prompt,
  ``chosen`` = its real body, ``rejected`` = the body with its lines shuffled
  (``shuffled_lines``, keyed by ``seed``, file and line, so the pairs are the same on
  every run). Exercises whose lines have no other order are left out."""
  out = []
  for ex in exercises:
    rejected = shuffled_lines(ex.response, f"{seed}:{ex.path}:{ex.lineno}")
    if rejected is not None:
      out.append({"prompt": ex.prompt, "chosen": ex.response, "rejected": rejected,
                  "name": ex.name, "path": ex.path, "lineno": ex.lineno})
  return out


def every_nth(exercises, count: int) -> list:
  """``count`` exercises spread evenly over the list (file order), deterministically:
  a LIMA-sized subset that samples every part of the corpus."""
  exercises = list(exercises)
  if count <= 0 or count >= len(exercises):
    return exercises
  return [exercises[i * len(exercises) // count] for i in range(count)]


def _write_records(records, path) -> int:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent writers: no clash
  with open(tmp, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  tmp.replace(path)
  return len(records)


def write_preferences_jsonl(exercises, path, seed: int = 0) -> int:
  """Writes ``preference_pairs(exercises, seed)`` as JSON Lines; returns the count."""
  return _write_records(preference_pairs(exercises, seed), path)


def cached_jsonl(split: str = "train", kind: str = "sft", *, count: int = 0,
                 seed: int = 0, cache_dir: str = "~/.cache/phijax/exercises",
                 **kwargs) -> str:
  """The path of a JSONL of the stdlib's ``split`` exercises, written once into
  ``cache_dir`` (config files can name it: ``get_config`` runs in every process).
  ``kind``: ``sft`` records or ``preferences`` pairs (``seed``); ``count`` > 0: an
  ``every_nth`` subset. The file name holds everything its content depends on (the
  stdlib, the split's held-out fraction and the selection). Keyword arguments as
  ``scan_stdlib``."""
  import hashlib
  if kind not in ("sft", "preferences"):
    raise ValueError(f"kind must be 'sft' or 'preferences', got {kind!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  path = kwargs.get("path", "")
  fraction = kwargs.get("heldout_fraction")
  fraction = default_heldout_fraction() if fraction is None else float(fraction)
  sel = kwargs.get("selection") or Selection()
  root = str(pathlib.Path(path).expanduser().resolve()) if path else str(
      corpus.stdlib_root())
  key = json.dumps({"v": 1, "root": root, "python": sys.version, "fraction": fraction,
                    "selection": dataclasses.asdict(sel), "seed": seed}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  name = f"{kind}-{split}{f'-{count}' if count else ''}-{digest}.jsonl"
  out = pathlib.Path(cache_dir).expanduser() / name
  if not out.exists():
    exercises = every_nth(stdlib_exercises(split, **kwargs), count)
    if kind == "sft":
      _write_records([ex.record() for ex in exercises], out)
    else:
      write_preferences_jsonl(exercises, out, seed)
  return str(out)


# ------------------------------------------------------------------ the command

CLI_HELP = """Write the stdlib's code exercises as SFT JSON Lines and print the counts.

    python -m phijax.data.exercises --split=train --out=exercises.jsonl
    python -m phijax.data.exercises                      # the counts only
    python -m phijax.data.exercises --kind=preferences --out=pairs.jsonl   # for DPO

Train on them as an ``sft`` data source (loss on the body only):
    c.data.sources.exercises = data_config.source("sft", "exercises.jsonl")
Only --split=train belongs in training: its exercises come from the files pretraining
trains on (with the same --heldout_fraction as the run's config.data.heldout_fraction).
"""


def _parser():
  from phijax import cli
  parser = cli.ArgumentParser(prog="python -m phijax.data.exercises", description=CLI_HELP)
  parser.add_argument("--out", metavar="FILE.jsonl", default=None,
                      help="write the exercises here (default: print the counts only)")
  parser.add_argument("--split", choices=SPLITS, default="train")
  parser.add_argument("--kind", choices=("sft", "preferences"), default="sft",
                      help="sft: prompt/response records (default); preferences: DPO "
                           "pairs, chosen = the body, rejected = its lines shuffled "
                           "(deterministic, --seed)")
  parser.add_argument("--seed", type=int, default=0,
                      help="with --kind=preferences: the shuffles' seed (default 0)")
  parser.add_argument("--stdlib", default="", metavar="DIR",
                      help="another stdlib root (default: the running interpreter's)")
  parser.add_argument("--heldout_fraction", type=float, default=None,
                      help="as config.data.heldout_fraction (default: its default, "
                           f"{default_heldout_fraction()})")
  d = Selection()
  parser.add_argument("--min_doc_words", type=int, default=d.min_doc_words,
                      help=f"docstring words a function needs (default {d.min_doc_words})")
  parser.add_argument("--min_body_lines", type=int, default=d.min_body_lines,
                      help=f"non-blank body lines, at least (default {d.min_body_lines})")
  parser.add_argument("--max_body_lines", type=int, default=d.max_body_lines,
                      help=f"non-blank body lines, at most (default {d.max_body_lines})")
  return parser


def main(args):
  from phijax import cli
  if args.out and (pathlib.Path(args.out).is_dir() or not args.out.endswith(".jsonl")):
    raise cli.UsageError(f"--out={args.out}: give a file name ending in .jsonl")
  if args.heldout_fraction is not None and not 0.0 <= args.heldout_fraction < 1.0:
    raise cli.UsageError(f"--heldout_fraction must be in [0, 1), got {args.heldout_fraction}")
  sel = Selection(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Selection)})
  scan = scan_stdlib(path=args.stdlib, heldout_fraction=args.heldout_fraction, selection=sel)
  print(json.dumps(scan.counts, indent=2), flush=True)
  if args.out:
    if args.kind == "preferences":
      n = write_preferences_jsonl(getattr(scan, args.split), args.out, args.seed)
      what = "preference pairs"
    else:
      n, what = write_jsonl(getattr(scan, args.split), args.out), "exercises"
    print(f"wrote {n} {args.split} {what} to {args.out}", file=sys.stderr, flush=True)


def run(argv=None):
  from phijax import cli
  cli.main(_parser(), main, argv)


if __name__ == "__main__":
  run()
