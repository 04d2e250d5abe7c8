"""A sweep's figures: ``curves.png`` (training and held-out loss against tokens,
one colour per arm group, seeds as thin lines around their mean) and ``final.png``
(final held-out loss against each swept numeric field, or per arm group).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from phijax.sweeps.runs import SMOOTHING, ema, finite
from phijax.sweeps.tables import SEED_FIELDS, Table, format_field, mean_std


def _colors(n: int) -> list:
  from matplotlib import colormaps
  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def _group_label(key: dict) -> str:
  shown = [f"{k}={format_field(v)}" for k, v in key.items() if v is not None]
  return ", ".join(shown) or "all arms"


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
    finals = [(r["tokens"], r["eval_loss"]) for r in members if finite(r["eval_loss"])]
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
    if f not in SEED_FIELDS and all(finite(v) for v in values) and len(set(values)) > 1:
      out.append(f)
  return out


def plot_final(table: Table, path: str, metric: str = "eval_loss") -> None:
  from matplotlib.figure import Figure

  label = dict((c, h) for c, h, _ in table.metrics)[metric]
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
    seeds = bool(set(SEED_FIELDS) & set(table.fields))
    ax.set(xlabel=f"final {label}", title=f"final {label}" +  # two lines: never clipped
           ("\n(seed mean ± std; gray: seeds)" if seeds else ""))
    ax.grid(alpha=0.3, axis="x")
    ax.margins(x=0.1)
  for ax, field in zip(axes, numeric):
    others = [f for f in table.fields if f != field and f not in SEED_FIELDS]
    lines = {}
    for r in table.rows:
      if finite(r.get(field)):
        lines.setdefault(tuple(r.get(f) for f in others), []).append(r)
    for (key, rows), color in zip(lines.items(), _colors(len(lines))):
      xs = sorted({r[field] for r in rows})
      means = [mean_std(r[metric] for r in rows if r[field] == x)[0] for x in xs]
      name = _group_label(dict(zip(others, key))) if others else None
      ax.plot(xs, means, "o-", color=color, linewidth=2, label=name)
      ax.plot([r[field] for r in rows], [r[metric] for r in rows], ".", color=color,
              alpha=0.5)
    values = [r[field] for r in table.rows if finite(r.get(field))]
    # Learning rates (and any field spanning decades) on a log axis; never a field
    # with 0 among its values (lr_warmup=0 would vanish from a log axis).
    is_lr = field.split(".")[-1].lower() in ("lr", "learning_rate")
    if min(values) > 0 and (is_lr or max(values) / min(values) >= 20):
      ax.set_xscale("log")
    ax.set(xlabel=field, ylabel=f"final {label}",
           title=f"final {label} vs {field}" + (" (line: seed mean; dots: seeds)"
                                                  if set(SEED_FIELDS) & set(table.fields)
                                                  else ""))
    ax.grid(alpha=0.3)
    if others:
      ax.legend(fontsize="small", loc="best")
  fig.savefig(path, dpi=100)


def plot_columns(table: Table, path: str, columns: list[str], *, xlabel: str,
                 ylabel: str, title: str, xticks: list[str] | None = None) -> None:
  """One line per arm group across ``columns`` (seed means; dots: seeds): a metric
  measured at several places of one arm, e.g. held-out loss by position bucket
  (``loss_0_256``, ``loss_256_512``, ...)."""
  from matplotlib.figure import Figure

  groups = table.groups()
  fig = Figure(figsize=(8, 5), layout="constrained")
  ax = fig.subplots()
  xs = list(range(len(columns)))
  for (key, members), color in zip(groups, _colors(len(groups))):
    means = [mean_std(r.get(c) for r in members)[0] for c in columns]
    ax.plot(xs, means, "o-", color=color, linewidth=2, label=_group_label(key))
    for r in members:
      ax.plot(xs, [r.get(c, math.nan) for c in columns], ".", color=color, alpha=0.5)
  ax.set_xticks(xs, xticks or columns)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="best")
  fig.savefig(path, dpi=100)
