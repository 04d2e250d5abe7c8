"""A sweep's table: one row per arm (its swept fields and ``run_summary``'s numbers),
as markdown, with the arms that differ only in the seed collapsed to mean ± std.
``Table`` is what an experiment's ``summarize(table)`` receives.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Iterable

from phijax.sweeps.arms import aliases, format_value, read_sweep_file
from phijax.sweeps.runs import finite, run_summary

SEED_FIELDS = ("seed", "data_seed")  # train.seed, train.data_seed (stats.SEED_FIELDS)

METRICS = [  # (column, markdown header, format)
    ("eval_loss", "held-out loss", ".4f"),
    ("eval_bpb", "bits/byte", ".4f"),
    ("best_eval_loss", "best eval loss", ".4f"),
    ("spikes", "spike steps", "d"),
    ("max_loss_ratio", "max loss ratio", ".3f"),
    ("max_grad_norm", "max grad norm", ".2f"),
    ("skipped", "skipped", "d"),
    ("steps", "steps", "d"),
    ("tokens", "tokens", ",d"),
    ("tokens_per_sec", "tokens/s", ".0f"),
    ("wall_s", "wall (s)", ".0f"),
]
CSV_METRICS = ["status"] + [m for m, _, _ in METRICS] + ["gzip_bpb"]


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
  """(mean, sample standard deviation (ddof 1; 0 for one value), n) of the finite values."""
  vals = [float(v) for v in values if finite(v)]
  if not vals:
    return math.nan, math.nan, 0
  return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


class Table:
  """One row per arm: ``arm``, the swept fields (by short name), the metrics. What an
  experiment's ``summarize(table)`` receives."""

  def __init__(self, rows: list[dict], fields: list[str]):
    self.rows, self.fields = rows, fields
    self.extra = []  # (column, header, format) of the experiment's EVALS

  @property
  def metrics(self) -> list[tuple[str, str, str]]:
    """The columns results.md shows: the run's numbers, then the EVALS' columns."""
    return METRICS + self.extra

  def values(self, field: str) -> list:
    return sorted({r[field] for r in self.rows if field in r}, key=_sort_key)

  def where(self, **equal) -> list[dict]:
    return [r for r in self.rows if all(r.get(k) == v for k, v in equal.items())]

  def mean(self, column: str, **equal) -> float:
    return mean_std(r.get(column) for r in self.where(**equal))[0]

  def groups(self) -> list[tuple[dict, list[dict]]]:
    """Arms that differ only in their seeds: ({field: value} without them, rows)."""
    keys = [f for f in self.fields if f not in SEED_FIELDS]
    out = {}
    for r in self.rows:
      out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return [(dict(zip(keys, k)), rows) for k, rows in out.items()]


def _sort_key(v):
  return (0, v, "") if finite(v) else (1, 0, str(v))


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def collect(sweep_dir: str) -> tuple[Table, dict]:
  """The table of ``sweep_dir``'s arms and the runner's sweep.json (or {})."""
  meta = read_sweep_file(sweep_dir)
  if meta:
    arms = [(a["name"], a["overrides"]) for a in meta["arms"]]
    names = meta.get("aliases") or aliases([k for _, o in arms for k in o])
  else:
    dirs = sorted(d for d in os.listdir(sweep_dir)
                  if os.path.exists(os.path.join(sweep_dir, d, "config.json")))
    if not dirs:
      raise FileNotFoundError(f"no run directories (*/config.json) in {sweep_dir}")
    configs = {d: _flatten(json.load(open(os.path.join(sweep_dir, d, "config.json"))))
               for d in dirs}
    keys = sorted({k for c in configs.values() for k in c})
    swept = [k for k in keys if len({json.dumps(c.get(k)) for c in configs.values()}) > 1
             and not k.startswith(("data.tokenizer.", "train.wandb."))]
    arms = [(d, {k: configs[d].get(k) for k in swept}) for d in dirs]
    names = aliases(swept)
  # Arms never started (another --only, a sweep still running) are left out.
  arms = [(n, o) for n, o in arms if os.path.isdir(os.path.join(sweep_dir, n))]
  if not arms:
    raise FileNotFoundError(f"no arm of {sweep_dir} has started yet")
  rows = []
  for name, overrides in arms:
    row = {"arm": name, **{names[k]: v for k, v in overrides.items()}}
    row.update(run_summary(os.path.join(sweep_dir, name)))
    rows.append(row)
  fields = list(dict.fromkeys(names[k] for _, o in arms for k in o))
  return Table(rows, fields), meta


def _fmt(v, spec: str) -> str:
  if isinstance(v, bool) or isinstance(v, str):
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
  if not finite(v):
    return "-"
  if spec.endswith("d"):
    return format(int(round(v)), spec)
  return format(v, spec)


def format_field(v) -> str:
  """A swept field's value as arm names show it; ``-`` for an arm that does not set it."""
  return format_value(v) if v is not None else "-"


def markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(_fmt(r.get(c, math.nan), f) for c, _, f in columns) + " |")
  return "\n".join(lines)


def arm_table(table: Table) -> str:
  rows = []
  for r in table.rows:
    shown = dict(r, **{f: format_field(r.get(f)) for f in table.fields})
    if r["status"] != "done":  # the state (and error) where the loss would be
      shown["eval_loss"] = r["status"] + (f": {r['error']}" if r.get("error") else "")
      shown["eval_loss"] = shown["eval_loss"].replace("|", "/")
    rows.append(shown)
  columns = [("arm", "arm", "s")] + [(f, f, "s") for f in table.fields] + table.metrics
  return markdown(rows, columns)


def grouped_table(table: Table) -> str | None:
  """Arms that differ only in their seeds: mean ± std (n)."""
  if not set(SEED_FIELDS) & set(table.fields):
    return None
  rows = []
  for key, members in table.groups():
    row = {f: format_field(v) for f, v in key.items()}
    members = [r for r in members if r["status"] == "done"]
    for col, _, spec in table.metrics:
      m, s, n = mean_std(r.get(col) for r in members)
      spec = ".1f" if spec.endswith("d") and spec != ",d" else spec
      row[col] = f"{_fmt(m, spec)} ± {_fmt(s, spec)}" if n > 1 else _fmt(m, spec)
    row["n"] = len(members)
    rows.append(row)
  keys = [f for f in table.fields if f not in SEED_FIELDS]
  columns = [(f, f, "s") for f in keys] + [("n", "n (done)", "d")] + [
      (c, h, "s") for c, h, _ in table.metrics]
  return markdown(rows, columns)


def summary_table(rows: list[dict]) -> str:
  columns = []
  for r in rows:
    for k in r:
      if k not in columns:
        columns.append(k)
  def spec(v):
    return ".4f" if isinstance(v, float) else "s" if isinstance(v, str) else "d"
  return markdown(rows, [(c, c, spec(rows[0].get(c))) for c in columns])
