"""Evaluations of each finished arm's final model, run once, cached, and joined to the
sweep's table as columns.

An experiment declares what its question needs beyond the run's own held-out loss::

    EVALS = [
        evals.ArmEval("tables", task="bpb", args=("--source=tables",),
                      columns={"tables_bpb": "eval_bpb"}),
        evals.ArmEval("exercises", task="exercises", where={"config": "sft"},
                      columns={"exact": "exact_match", "response_bpb": "bpb"}),
    ]

For every finished arm that matches ``where`` (swept fields, as the table names them),
``python -m phijax.evaluate --workdir=ARM --task=TASK ARGS --out=ARM/evals-NAME`` runs
once, ``parallel`` at a time on the cores the sweep runner would give them, its log in
``ARM/evals-NAME.log``. Its report is reused while it is of the arm's final step and was
made with the same task and arguments, so ``python -m phijax.results`` is cheap the
second time. ``{experiment}`` in an argument is the experiment file's path (for
``--config={experiment}:finetune``).

``columns`` maps a table column to a key of the report's ``scores`` (dots go into nested
dicts: ``"by_length.3.accuracy"``) or to ``fn(scores) -> value``. The columns join
``results.csv``, both tables of ``results.md``, and can be a ``COMPARISONS`` metric.
A measurement ``phijax.evaluate`` does not make is ``ArmEval(NAME, fn=f)`` with
``f(arm_dir) -> {column: value}``, run in this process, cached in ``ARM/evals-NAME.json``
under the arm's final step and ``version`` (raise it when ``f`` changes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from typing import Callable

from phijax.sweeps import runner


@dataclasses.dataclass(frozen=True)
class ArmEval:
  name: str  # ARM/evals-NAME; one name per experiment
  task: str | None = None  # a phijax.evaluate task (or fn)
  args: tuple = ()
  columns: dict = dataclasses.field(default_factory=dict)  # {column: scores key or fn}
  where: dict = dataclasses.field(default_factory=dict)
  fn: Callable | None = None  # fn(arm_dir) -> {column: value}
  version: int = 1
  fmt: str = ".4f"  # how results.md shows the columns

  def __post_init__(self):
    if (self.task is None) == (self.fn is None):
      raise ValueError(f"ArmEval {self.name!r}: give task= (a phijax.evaluate task) or "
                       "fn= (a function of the arm's directory), one of the two")
    if self.task is not None and not self.columns:
      raise ValueError(f"ArmEval {self.name!r}: columns= names which scores of the "
                       f"{self.task} report become table columns")


def final_step(arm_dir: str) -> int | None:
  """The arm's newest checkpoint step (its final model), or None."""
  try:
    steps = [int(d) for d in os.listdir(os.path.join(arm_dir, "checkpoints")) if d.isdigit()]
  except OSError:
    return None
  return max(steps) if steps else None


def _lookup(scores: dict, key):
  if callable(key):
    return key(scores)
  value = scores
  for part in str(key).split("."):
    if not isinstance(value, dict) or part not in value:
      return math.nan
    value = value[part]
  return value


def _command(ev: ArmEval, arm_dir: str, experiment: str) -> list[str]:
  args = [a.replace("{experiment}", experiment) for a in ev.args]
  return [sys.executable, "-m", "phijax.evaluate", f"--workdir={arm_dir}",
          f"--task={ev.task}", *args, f"--out={os.path.join(arm_dir, f'evals-{ev.name}')}"]


def _report_path(ev: ArmEval, arm_dir: str) -> str:
  if ev.fn is not None:
    return os.path.join(arm_dir, f"evals-{ev.name}.json")
  # phijax.evaluate names the report after the task (or the problems file).
  name = ev.task
  for a in ev.args:
    if a.startswith("--problems="):
      name = os.path.basename(a.split("=", 1)[1]).split(".")[0]
  return os.path.join(arm_dir, f"evals-{ev.name}", "evals", f"{name}.json")


def _key(ev: ArmEval, arm_dir: str, experiment: str) -> dict:
  args = _command(ev, arm_dir, experiment)[3:] if ev.task else []
  return {"step": final_step(arm_dir), "args": args, "version": ev.version}


def _cached(ev: ArmEval, arm_dir: str, experiment: str) -> dict | None:
  """The cached report's scores, if it is of this arm's final model and these settings."""
  try:
    with open(_report_path(ev, arm_dir)) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  if report.get("phijax_results_key") != _key(ev, arm_dir, experiment):
    return None
  return report.get("scores")


def _store(ev: ArmEval, arm_dir: str, experiment: str, scores: dict | None) -> None:
  """Stamps the report with what it was made from (the evaluate report keeps its own
  fields; an fn's values are written as a report of the same shape)."""
  path = _report_path(ev, arm_dir)
  report = {}
  if ev.task:
    with open(path) as f:
      report = json.load(f)
  else:
    report["scores"] = scores
  report["phijax_results_key"] = _key(ev, arm_dir, experiment)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(report, f, indent=2)
  os.replace(tmp, path)


def _say(msg: str) -> None:
  print(f"{runner.stamp()} phijax.results: {msg}", file=sys.stderr, flush=True)


def _run_tasks(jobs, experiment: str, parallel: int) -> None:
  """phijax.evaluate for each (eval, arm_dir), ``parallel`` at a time, each on its own
  share of the cores; progress and failures (naming the log) on stderr."""
  slots = runner.core_slices(parallel)
  free, running, done = list(range(parallel)), [], 0
  jobs = list(jobs)
  total = len(jobs)
  while jobs or running:
    while jobs and free:
      ev, arm_dir = jobs.pop(0)
      slot = free.pop(0)
      cores = slots[slot]
      log = open(os.path.join(arm_dir, f"evals-{ev.name}.log"), "w")
      preexec = (lambda c=cores: os.sched_setaffinity(0, c)) if cores else None
      proc = subprocess.Popen(_command(ev, arm_dir, experiment), stdout=log,
                              stderr=subprocess.STDOUT, env=runner.arm_env(cores),
                              preexec_fn=preexec)
      running.append((proc, log, slot, ev, arm_dir, time.time()))
    time.sleep(0.2)
    for item in list(running):
      proc, log, slot, ev, arm_dir, start = item
      if proc.poll() is None:
        continue
      log.close()
      running.remove(item)
      free.append(slot)
      done += 1
      where = f"{ev.name} of {os.path.basename(arm_dir)}"
      if proc.returncode:
        _say(f"[{done}/{total}] {where} failed (exit {proc.returncode}); its columns stay "
             f"empty; see {log.name}")
      else:
        _store(ev, arm_dir, experiment, None)
        _say(f"[{done}/{total}] {where}: {time.time() - start:.0f} s")


def add_columns(table, sweep_dir: str, arm_evals, experiment: str,
                parallel: int | None = None) -> list[tuple[str, str, str]]:
  """Runs what is not cached, puts every eval's columns into ``table.rows`` (NaN where
  an arm is unfinished, not selected or failed), and returns the columns as
  ``(column, header, format)`` for the tables."""
  arm_evals = list(arm_evals)
  # The arm directories enter the cache key (--workdir, --out): absolute, so that
  # `python -m phijax.results runs/x` reuses what the sweep runner (absolute) cached.
  sweep_dir = os.path.abspath(sweep_dir)
  names = [ev.name for ev in arm_evals]
  if len(set(names)) != len(names):
    raise ValueError(f"EVALS names {names}: give each evaluation its own name")
  def chosen(ev):
    return [r for r in table.where(**ev.where) if r.get("status") == "done"]
  jobs = [(ev, os.path.join(sweep_dir, r["arm"])) for ev in arm_evals if ev.task
          for r in chosen(ev)]
  jobs = [(ev, d) for ev, d in jobs if _cached(ev, d, experiment) is None]
  if jobs:
    _say(f"evaluating {len(jobs)} arm model(s) (cached under ARM/evals-NAME)")
    _run_tasks(jobs, experiment, parallel or runner.default_parallel())
  columns = []
  taken = set(table.fields) | set(table.rows[0] if table.rows else ())
  for ev in arm_evals:
    picked = {r["arm"] for r in chosen(ev)}
    per_arm = {}
    for arm in picked:
      arm_dir = os.path.join(sweep_dir, arm)
      scores = _cached(ev, arm_dir, experiment)
      if scores is None and ev.fn is not None:
        _say(f"{ev.name} of {arm}")
        scores = dict(ev.fn(arm_dir))
        _store(ev, arm_dir, experiment, scores)
      if ev.fn is not None:
        per_arm[arm] = scores or {}
      elif scores is not None:
        per_arm[arm] = {c: _lookup(scores, k) for c, k in ev.columns.items()}
    keys = list(dict.fromkeys([*ev.columns, *(k for v in per_arm.values() for k in v)]))
    clash = sorted(set(keys) & taken)
    if clash:
      raise ValueError(f"EVALS {ev.name!r} makes column(s) {clash}, which the table "
                       "already has; name them apart")
    taken |= set(keys)
    for r in table.rows:
      for k in keys:
        r[k] = per_arm.get(r["arm"], {}).get(k, math.nan)
    columns += [(k, k, ev.fmt) for k in keys]
  return columns
