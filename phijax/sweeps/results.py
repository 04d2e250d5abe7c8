"""Tables and plots from a sweep directory (or any directory of run directories).

    python -m phijax.results runs/seq_warmup

Reads every arm's ``config.json`` and ``metrics.jsonl`` (``DIR/*/``) and writes:

- ``results.csv``: one row per arm, full precision: the swept fields, then
  ``status, eval_loss, eval_bpb`` (final, held-out), ``best_eval_loss``, ``tokens``,
  ``steps``, ``wall_s``, ``tokens_per_sec`` (median of the logged rows), ``skipped``
  (non-finite steps), ``spikes`` and ``max_loss_ratio`` (see ``loss_rises``),
  ``max_grad_norm``, ``gzip_bpb``;
- ``results.md``: the same table, then arms that differ only in ``train.seed``
  collapsed to mean ± std (sample std, ddof 1) with n, then the experiment's
  ``summarize(table)`` (or ``summarize(table, sweep_dir)``) rows, if it has one;
- ``curves.png``: training loss over all tokens (EMA; a token-selection arm's
  ``lm_loss``) and held-out loss against tokens, one colour per arm group, seeds as
  thin lines around their mean;
- ``final.png``: final held-out loss against each swept numeric field (log x for
  learning rates and fields spanning decades);
- ``tb_hparams/``: TensorBoard HParams, one run per arm (``tensorboard --logdir DIR``);
- whatever the experiment's optional ``plot(table, sweep_dir)`` writes (it returns the
  paths of its files), for plots only that experiment needs.

Swept fields come from the runner's ``sweep.json``; without one, from the fields whose
values differ between the arms' ``config.json``.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import statistics
import sys
from typing import Any, Iterable

SMOOTHING = 0.1  # EMA weight of the newest step's loss (spikes and curves)
SPIKE_RATIO = 1.05  # a spike step: smoothed loss > ratio x its running minimum
SEED_FIELD = "seed"

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


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------ per-run numbers

def ema(values, alpha: float = SMOOTHING) -> list[float]:
  """Exponential moving average; non-finite values are skipped (the average holds)."""
  out, avg = [], None
  for v in values:
    if _finite(v):
      avg = v if avg is None else (1 - alpha) * avg + alpha * v
    out.append(avg if avg is not None else math.nan)
  return out


def loss_rises(losses, ratio: float = SPIKE_RATIO) -> tuple[int, float]:
  """(steps whose smoothed loss exceeds ``ratio`` x the minimum smoothed loss before
  them, the largest smoothed loss / that minimum): Li et al.'s loss ratio on an EMA.
  Smoothed because one hard batch of a heterogeneous corpus moves a step's loss by
  10-20% in every arm alike, while a training instability lasts several steps.
  Non-finite losses count as spikes."""
  count, worst, running_min = 0, 1.0, math.inf
  for raw, loss in zip(losses, ema(losses)):
    if not _finite(raw):
      count += 1
    elif loss > ratio * running_min:
      count += 1
    if _finite(loss) and running_min < math.inf:
      worst = max(worst, loss / running_min)
    if _finite(loss):
      running_min = min(running_min, loss)
  return count, worst


def read_rows(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict], dict | None]:
  """(train rows, periodic eval rows, final row). A resumed run re-logs the steps after
  its last checkpoint: each step's last row counts."""
  train = {r["step"]: r for r in rows if "loss" in r}
  evals = {r["step"]: r for r in rows if "eval_loss" in r and not r.get("final")}
  finals = [r for r in rows if r.get("final")]
  return ([train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)],
          finals[-1] if finals else None)


def _num(v) -> float:
  return float(v) if isinstance(v, (int, float)) else math.nan  # "nan"/"inf" strings


def run_summary(run_dir: str) -> dict:
  """One arm's numbers (math.nan where it has none)."""
  train, evals, final = split_rows(read_rows(run_dir))
  losses = [_num(r["loss"]) for r in train]
  grads = [_num(r.get("grad_norm")) for r in train]
  grads = [g for g in grads if math.isfinite(g)]
  tps = [r["tokens_per_sec"] for r in train if _finite(r.get("tokens_per_sec"))]
  # Step 0 (train.eval_at_start) is the starting model, not a result of training.
  scored = [r for r in evals if r["step"] > 0] + ([final] if final else [])
  eval_losses = [_num(r["eval_loss"]) for r in scored]
  eval_losses = [v for v in eval_losses if math.isfinite(v)]
  last = final or (train[-1] if train else {})
  spikes, max_ratio = loss_rises(losses)
  status_record = _status_record(run_dir)
  return {
      "status": status_record.get("state") or ("done" if final else "pending"),
      "eval_loss": _num(final["eval_loss"]) if final else math.nan,
      # A DPO run's evaluation has no bits per byte (phijax.train.objectives).
      "eval_bpb": _num(final.get("eval_bpb")) if final else math.nan,
      "best_eval_loss": min(eval_losses) if eval_losses else math.nan,
      "tokens": last.get("tokens", 0), "steps": last.get("step", 0),
      "wall_s": status_record.get("wall_s", math.nan),
      "tokens_per_sec": statistics.median(tps) if tps else math.nan,
      "skipped": train[-1].get("skipped_steps", 0) if train else 0,
      "spikes": spikes, "max_loss_ratio": max_ratio if train else math.nan,
      "max_grad_norm": max(grads) if grads else math.nan,
      "gzip_bpb": _num(final.get("gzip_bpb")) if final else math.nan,
      "error": status_record.get("error") or "",
      # Token-selection (Rho-1) arms' ``loss`` covers the tokens they train on; their
      # ``lm_loss`` covers every token, as a plain arm's ``loss`` does: the curves
      # compare like with like.
      "curve": ([r["tokens"] for r in train],
                [_num(r["lm_loss"]) if "lm_loss" in r else v for r, v in zip(train, losses)]),
      "eval_curve": ([r["tokens"] for r in evals], [_num(r["eval_loss"]) for r in evals]),
  }


def _status_record(run_dir: str) -> dict:
  from phijax.sweeps import runner as sweep
  state, record = sweep.arm_state(run_dir)
  return dict(record, state=state) if record else {}


# ---------------------------------------------------------------------- the table

def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
  """(mean, sample standard deviation (ddof 1; 0 for one value), n) of the finite values."""
  vals = [float(v) for v in values if _finite(v)]
  if not vals:
    return math.nan, math.nan, 0
  return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


class Table:
  """One row per arm: ``arm``, the swept fields (by short name), the metrics. What an
  experiment's ``summarize(table)`` receives."""

  def __init__(self, rows: list[dict], fields: list[str]):
    self.rows, self.fields = rows, fields

  def values(self, field: str) -> list:
    return sorted({r[field] for r in self.rows if field in r}, key=_sort_key)

  def where(self, **equal) -> list[dict]:
    return [r for r in self.rows if all(r.get(k) == v for k, v in equal.items())]

  def mean(self, column: str, **equal) -> float:
    return mean_std(r.get(column) for r in self.where(**equal))[0]

  def groups(self) -> list[tuple[dict, list[dict]]]:
    """Arms that differ only in the seed: ({field: value} without the seed, rows)."""
    keys = [f for f in self.fields if f != SEED_FIELD]
    out = {}
    for r in self.rows:
      out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return [(dict(zip(keys, k)), rows) for k, rows in out.items()]


def _sort_key(v):
  return (0, v, "") if _finite(v) else (1, 0, str(v))


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
  from phijax.sweeps import runner as sweep
  meta_path = os.path.join(sweep_dir, sweep.SWEEP_FILE)
  meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
  if meta:
    arms = [(a["name"], a["overrides"]) for a in meta["arms"]]
    names = meta.get("aliases") or sweep.aliases([k for _, o in arms for k in o])
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
    names = sweep.aliases(swept)
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
  if not _finite(v):
    return "-"
  if spec.endswith("d"):
    return format(int(round(v)), spec)
  return format(v, spec)


def _value(v) -> str:
  from phijax.sweeps.runner import format_value
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
    shown = dict(r, **{f: _value(r.get(f)) for f in table.fields})
    if r["status"] != "done":  # the state (and error) where the loss would be
      shown["eval_loss"] = r["status"] + (f": {r['error']}" if r.get("error") else "")
      shown["eval_loss"] = shown["eval_loss"].replace("|", "/")
    rows.append(shown)
  columns = [("arm", "arm", "s")] + [(f, f, "s") for f in table.fields] + METRICS
  return markdown(rows, columns)


def grouped_table(table: Table) -> str | None:
  """Arms that differ only in the seed: mean ± std (n)."""
  if SEED_FIELD not in table.fields:
    return None
  rows = []
  for key, members in table.groups():
    row = {f: _value(v) for f, v in key.items()}
    members = [r for r in members if r["status"] == "done"]
    for col, _, spec in METRICS:
      m, s, n = mean_std(r.get(col) for r in members)
      spec = ".1f" if spec.endswith("d") and spec != ",d" else spec
      row[col] = f"{_fmt(m, spec)} ± {_fmt(s, spec)}" if n > 1 else _fmt(m, spec)
    row["n"] = len(members)
    rows.append(row)
  keys = [f for f in table.fields if f != SEED_FIELD]
  columns = [(f, f, "s") for f in keys] + [("n", "n (done)", "d")] + [
      (c, h, "s") for c, h, _ in METRICS]
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


# ---------------------------------------------------------------------- the plots

def _colors(n: int) -> list:
  from matplotlib import colormaps
  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def _group_label(key: dict) -> str:
  return ", ".join(f"{k}={_value(v)}" for k, v in key.items() if v is not None) or "all arms"


def _mean_curve(curves: list[tuple[list, list]]) -> tuple[Any, Any]:
  """The seeds' mean on the first seed's token grid, over the tokens all of them reach."""
  import numpy as np
  curves = [(np.asarray(t, float), np.asarray(v, float)) for t, v in curves if len(t)]
  if not curves:
    return [], []
  end = min(t[-1] for t, _ in curves)
  grid = curves[0][0][curves[0][0] <= end]
  return grid, np.mean([np.interp(grid, t, v) for t, v in curves], axis=0)


def plot_curves(table: Table, path: str) -> None:
  from matplotlib.figure import Figure
  from matplotlib.ticker import EngFormatter

  groups = [(k, m) for k, m in table.groups() if any(len(r["curve"][0]) for r in m)]
  colors = _colors(len(groups))
  fig = Figure(figsize=(12, 5.2), layout="constrained")
  ax_train, ax_eval = fig.subplots(1, 2, sharex=True)
  tail = []
  for (key, members), color in zip(groups, colors):
    thin = dict(color=color, alpha=0.35, linewidth=0.8)
    train = [(r["curve"][0], ema(r["curve"][1])) for r in members]
    evals = [r["eval_curve"] for r in members if r["eval_curve"][0]]
    for t, v in train:
      if len(members) > 1:
        ax_train.plot(t, v, **thin)
      tail += [x for x in v[len(v) // 10:] if math.isfinite(x)]
    for t, v in evals:
      if len(members) > 1:
        ax_eval.plot(t, v, **thin)
    n = len(members)
    label = _group_label(key) + (f" (mean of {n} seeds)" if n > 1 else "")
    ax_train.plot(*_mean_curve(train), color=color, linewidth=2, label=label)
    if evals:
      ax_eval.plot(*_mean_curve(evals), "o-", color=color, linewidth=2, markersize=4)
    finals = [(r["tokens"], r["eval_loss"]) for r in members if _finite(r["eval_loss"])]
    if finals:
      end = (statistics.fmean(t for t, _ in finals), statistics.fmean(v for _, v in finals))
      if evals:  # dotted from the last periodic eval to the final one (more rows)
        t, v = _mean_curve(evals)
        if len(t):
          ax_eval.plot([t[-1], end[0]], [v[-1], end[1]], ":", color=color)
      ax_eval.plot([end[0]], [end[1]], "*", color=color, markersize=13,
                   markeredgecolor="black", markeredgewidth=0.5)
  ax_train.set(title=f"training loss (EMA {SMOOTHING:g})", xlabel="tokens",
               ylabel="loss (nats / token)")
  ax_eval.set(title="held-out loss (star: final evaluation)", xlabel="tokens",
              ylabel="loss (nats / token)")
  if tail:  # the part after the first fast drop, where arms differ
    lo, hi = min(tail), max(tail)
    if lo > 0 and hi / lo > 3:  # a diverging arm: log scale keeps the others readable
      ax_train.set_yscale("log")
      ax_eval.set_yscale("log")
    else:
      ax_train.set_ylim(lo - 0.1 * (hi - lo) - 0.05, hi + 0.1 * (hi - lo) + 0.05)
  for ax in (ax_train, ax_eval):
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
  handles, labels = ax_train.get_legend_handles_labels()
  if handles:  # below both panels: covers no data however many arms there are
    fig.legend(handles, labels, loc="outside lower center",
               ncol=max(1, min(len(labels), 150 // (max(map(len, labels)) + 6))),
               fontsize="small")
  fig.savefig(path, dpi=100)


def _numeric_fields(table: Table) -> list[str]:
  """Swept fields with numbers for values (arms that do not set one are left out)."""
  out = []
  for f in table.fields:
    values = [r[f] for r in table.rows if r.get(f) is not None]
    if f != SEED_FIELD and all(_finite(v) for v in values) and len(set(values)) > 1:
      out.append(f)
  return out


def plot_final(table: Table, path: str, metric: str = "eval_loss") -> None:
  from matplotlib.figure import Figure

  label = dict((c, h) for c, h, _ in METRICS)[metric]
  numeric = _numeric_fields(table)
  height = 4.8 if numeric else max(3.0, 1.5 + 0.35 * len(table.groups()))
  fig = Figure(figsize=(6.5 * max(1, len(numeric)), height), layout="constrained")
  axes = fig.subplots(1, max(1, len(numeric)), squeeze=False)[0]
  if not numeric:  # nothing numeric swept: one bar per arm group
    ax = axes[0]
    groups = table.groups()
    stats = [mean_std(r[metric] for r in m) for _, m in groups]
    for y, (s, color) in enumerate(zip(stats, _colors(len(groups)))):
      ax.errorbar([s[0]], [y], xerr=[s[1]], fmt="o", color=color, markersize=8, capsize=4)
    for y, (_, members) in enumerate(groups):
      ax.plot([r[metric] for r in members], [y] * len(members), ".", color="gray")
    ax.set_yticks(range(len(groups)), [_group_label(k) for k, _ in groups], fontsize="small")
    ax.set_ylim(-0.5, len(groups) - 0.5)
    seeds = SEED_FIELD in table.fields
    ax.set(xlabel=f"final {label}", title=f"final {label}" +  # two lines: never clipped
           ("\n(seed mean ± std; gray: seeds)" if seeds else ""))
    ax.grid(alpha=0.3, axis="x")
    ax.margins(x=0.1)
  for ax, field in zip(axes, numeric):
    others = [f for f in table.fields if f not in (field, SEED_FIELD)]
    lines = {}
    for r in table.rows:
      if _finite(r.get(field)):
        lines.setdefault(tuple(r.get(f) for f in others), []).append(r)
    for (key, rows), color in zip(lines.items(), _colors(len(lines))):
      xs = sorted({r[field] for r in rows})
      means = [mean_std(r[metric] for r in rows if r[field] == x)[0] for x in xs]
      name = _group_label(dict(zip(others, key))) if others else None
      ax.plot(xs, means, "o-", color=color, linewidth=2, label=name)
      ax.plot([r[field] for r in rows], [r[metric] for r in rows], ".", color=color,
              alpha=0.5)
    values = [r[field] for r in table.rows if _finite(r.get(field))]
    # Learning rates (and any field spanning decades) on a log axis; never a field
    # with 0 among its values (lr_warmup=0 would vanish from a log axis).
    is_lr = field.split(".")[-1].lower() in ("lr", "learning_rate")
    if min(values) > 0 and (is_lr or max(values) / min(values) >= 20):
      ax.set_xscale("log")
    ax.set(xlabel=field, ylabel=f"final {label}",
           title=f"final {label} vs {field}" + (" (line: seed mean; dots: seeds)"
                                                  if SEED_FIELD in table.fields else ""))
    ax.grid(alpha=0.3)
    if others:
      ax.legend(fontsize="small", loc="best")
  fig.savefig(path, dpi=100)


def write_hparams(table: Table, sweep_dir: str) -> None:
  """TensorBoard HParams: one run per arm under ``tb_hparams/`` (small sweeps only)."""
  import shutil
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return
  root = os.path.join(sweep_dir, "tb_hparams")
  shutil.rmtree(root, ignore_errors=True)  # a rerun replaces, never duplicates
  if len(table.rows) > 200:
    return
  for r in table.rows:
    hp = {f: (r[f] if isinstance(r.get(f), (int, float, str, bool)) else str(r.get(f)))
          for f in table.fields}
    metrics = {f"hparam/{m}": float(r[m]) for m in ("eval_loss", "eval_bpb", "spikes")
               if _finite(r.get(m))}
    if metrics:
      with SummaryWriter(os.path.join(root, r["arm"])) as w:
        w.add_hparams(hp, metrics, name=".")


# ------------------------------------------------------------------------- writing

def write_results(sweep_dir: str) -> list[str]:
  """Writes results.csv, results.md, curves.png, final.png (and tb_hparams/); returns
  the paths of the files."""
  table, meta = collect(sweep_dir)
  csv_path = os.path.join(sweep_dir, "results.csv")
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arm", *table.fields, *CSV_METRICS])
    for r in table.rows:
      w.writerow([r["arm"], *(r.get(x) for x in table.fields),
                  *(r.get(m) for m in CSV_METRICS)])
  title = (os.path.basename(meta["experiment"].split(":")[0])[:-3] if meta
           else os.path.basename(os.path.abspath(sweep_dir)))
  parts = [f"# Sweep: {title}"]
  if meta:
    where = os.path.join(sweep_dir, meta["experiment"].split(":")[0])
    shown = os.path.relpath(where)
    shown = os.path.abspath(where) if shown.startswith("..") else shown
    command = f"python -m phijax.sweep {shown}"
    parts.append(f"Experiment: `{command}` " + (
        f"with `{' '.join(meta['common_overrides'])}`" if meta["common_overrides"] else ""))
  done = [r for r in table.rows if _finite(r["gzip_bpb"])]
  parts.append(
      "Held-out loss and bits/byte: the final evaluation (nats/token at full length"
      + (f"; gzip -9 on the held-out text: {done[0]['gzip_bpb']:.3f} bits/byte" if done
         else "") + f"). Spike steps: steps whose training loss (EMA {SMOOTHING:g}) is "
      f"above {SPIKE_RATIO:g} x its running minimum; max loss ratio: the largest smoothed "
      "loss / running minimum (1 = never rose); skipped: non-finite steps; tokens/s: "
      "median of the logged steps; wall: the runner's time for the arm.")
  parts.append(arm_table(table))
  grouped = grouped_table(table)
  if grouped:
    parts += ["Seeds collapsed (mean ± sample std over finished seeds):", grouped]
  summarize = _experiment_fn(meta, sweep_dir, "summarize")
  if summarize is not None:
    # summarize(table), or summarize(table, sweep_dir) for rows read from the arms'
    # directories (an evaluation of each arm's final model, say).
    takes_dir = len(inspect.signature(summarize).parameters) > 1
    extra = summarize(table, sweep_dir) if takes_dir else summarize(table)
    if extra:
      parts.append(extra if isinstance(extra, str) else summary_table(list(extra)))
  parts.append("Plots: `curves.png` (loss against tokens), `final.png` (final held-out "
               "loss against the swept fields).")
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path, "w") as f:
    f.write("\n\n".join(parts) + "\n")
  curves, final = os.path.join(sweep_dir, "curves.png"), os.path.join(sweep_dir, "final.png")
  plot_curves(table, curves)
  plot_final(table, final)
  paths = [md_path, csv_path, curves, final]
  plot = _experiment_fn(meta, sweep_dir, "plot")
  if plot is not None:  # the experiment's own plots
    paths += list(plot(table, sweep_dir) or [])
  write_hparams(table, sweep_dir)
  return paths


def _experiment_fn(meta: dict, sweep_dir: str, name: str):
  """The experiment file's function ``name`` (summarize, plot), or None."""
  if not meta:
    return None
  from phijax import config_files
  where = os.path.join(sweep_dir, meta["experiment"].split(":")[0])
  if not os.path.exists(where):
    # sweep.json names the experiment relative to the sweep directory: a copied or
    # moved directory loses it, and with it the experiment's own rows and figures.
    print(f"phijax.results: the experiment file {os.path.normpath(where)} (sweep.json's "
          f"{meta['experiment']!r}, relative to {sweep_dir}) does not exist, so its "
          f"{name}() is skipped; run this on the sweep directory where the runner wrote "
          "it, or restore the file there", file=sys.stderr)
    return None
  module = config_files._load_module(where)  # pylint: disable=protected-access
  return getattr(module, name, None)


def run(argv=None):
  from phijax import cli
  parser = cli.ArgumentParser(prog=cli.prog("phijax.results", "phijax-results"),
                              description=__doc__)
  parser.add_argument("dir", type=cli.existing_dir, metavar="DIR",
                      help="a sweep directory (one run directory per arm)")

  def main(args):
    for path in write_results(args.dir):
      print(path)

  cli.main(parser, main, argv)


if __name__ == "__main__":
  run()
