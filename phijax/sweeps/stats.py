"""Comparisons an experiment declares, and the verdict its seeds give.

An experiment file lists what its paper claims, as comparisons of two groups of arms::

    COMPARISONS = [
        stats.Comparison("warmup lowers the final loss", metric="eval_loss",
                         claim="lower", arm={"seq_warmup": True},
                         control={"seq_warmup": False}),
    ]

``arm`` and ``control`` select rows of the results table by swept fields (short names,
as the table shows them); each arm row is paired with the control row of the same
seeds (``seed`` and ``data_seed``: the same initialisation and data order), and the
verdict comes from the paired differences ``arm - control``: their mean and a 95%
Student-t interval. ``claim="lower"``: "reproduced" when the whole interval is below
zero, "refuted" when it is above, "inconclusive" when it holds zero (an effect inside
the seed-to-seed noise) or fewer than 2 pairs finished. ``"higher"`` mirrors it. The
sign of two means never decides.

A claim about a quantity with a stated value (sharpness x lr / 2 against 1, accuracy
against chance) gives that number as ``control``: the differences are then each arm
row's ``metric - control``, and the same interval decides.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from phijax.sweeps.runs import finite
from phijax.sweeps.tables import SEED_FIELDS  # what pairs an arm's row with its control's
LEVEL = 0.95
CLAIMS = ("lower", "higher")
VERDICTS = ("reproduced", "refuted", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """``arm`` against ``control`` on ``metric``; the paper says the arm's is ``claim``
  (lower or higher) than the control's, or than ``control`` itself if it is a number."""
  name: str
  metric: str
  claim: str
  arm: dict
  control: dict | float

  def __post_init__(self):
    if self.claim not in CLAIMS:
      raise ValueError(f"comparison {self.name!r}: claim={self.claim!r}; choose one of "
                       f"{CLAIMS}")
    if not isinstance(self.control, dict) and not finite(self.control):
      raise ValueError(f"comparison {self.name!r}: control={self.control!r}; give the "
                       "control arms' fields (a dict) or a stated value (a number)")


@dataclasses.dataclass(frozen=True)
class Result:
  comparison: Comparison
  diffs: tuple  # ((seed key, arm - control), ...) per finished pair
  mean: float
  low: float  # the 95% interval of the mean difference
  high: float
  verdict: str
  note: str = ""  # why the verdict is inconclusive without an interval


def interval(diffs, level: float = LEVEL) -> tuple[float, float, float]:
  """``(mean, low, high)``: the mean of ``diffs`` and its two-sided Student-t interval
  (n - 1 degrees of freedom); NaN bounds for fewer than two values."""
  from scipy import stats as scipy_stats  # jax depends on scipy: always installed
  vals = [float(d) for d in diffs]
  if not vals:
    return math.nan, math.nan, math.nan
  mean = statistics.fmean(vals)
  if len(vals) < 2:
    return mean, math.nan, math.nan
  half = (scipy_stats.t.ppf(0.5 + level / 2, len(vals) - 1)
          * statistics.stdev(vals) / math.sqrt(len(vals)))
  return mean, mean - half, mean + half


def verdict(claim: str, low: float, high: float) -> str:
  """reproduced / refuted / inconclusive from the interval of ``arm - control``."""
  if not (finite(low) and finite(high)):
    return "inconclusive"
  below, above = high < 0, low > 0
  if claim == "higher":
    below, above = above, below
  return "reproduced" if below else "refuted" if above else "inconclusive"


def _matches(row: dict, want: dict) -> bool:
  return all(row.get(k) == v for k, v in want.items())


def _seed_key(row: dict) -> tuple:
  return tuple(row.get(f) for f in SEED_FIELDS)


def _select(rows: list[dict], want: dict, c: Comparison, side: str,
            fields=()) -> dict:
  """``{seed key: row}`` of the finished rows ``want`` selects; an unknown field or two
  rows with the same seeds (the selector misses a field that tells them apart) is an
  error naming them."""
  known = {k for r in rows for k in r} | set(fields)
  # ``field: None`` selects the arms that do not set the field: every row, in a table
  # where no arm sets it (a smoke run of some of the arms).
  unknown = sorted(k for k in set(want) - known if want[k] is not None)
  if unknown:
    raise ValueError(f"comparison {c.name!r}: {side} names {unknown}, not fields of the "
                     f"table ({', '.join(sorted(known - {'arm'}))})")
  out = {}
  for r in rows:
    if _matches(r, want) and r.get("status") == "done":
      key = _seed_key(r)
      if key in out:
        raise ValueError(f"comparison {c.name!r}: {side} {want} selects arms "
                         f"{out[key]['arm']!r} and {r['arm']!r} with the same seeds; add "
                         "the field that tells them apart")
      out[key] = r
  return out


def compare(rows: list[dict], comparison: Comparison, fields=()) -> Result:
  """Pairs the finished ``arm`` rows with the ``control`` rows of the same seeds.
  ``fields``: the sweep's field names, which no started arm may set yet (an --only
  run): a selector naming one then finds no rows rather than being an error."""
  c = comparison
  metrics = {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
  if rows and c.metric not in metrics:  # a typo would otherwise read as "0 pairs"
    raise ValueError(f"comparison {c.name!r}: metric {c.metric!r} is not a column of the "
                     f"table; its numeric columns: {', '.join(sorted(metrics))}")
  arm = _select(rows, c.arm, c, "arm", fields)
  if isinstance(c.control, dict):
    control = _select(rows, c.control, c, "control", fields)
  else:  # a stated value: every arm row's seeds have it
    control = {k: {c.metric: c.control} for k in arm}
  diffs = tuple((k, float(arm[k][c.metric]) - float(control[k][c.metric]))
                for k in sorted(set(arm) & set(control), key=str)
                if finite(arm[k].get(c.metric)) and finite(control[k].get(c.metric)))
  mean, low, high = interval(d for _, d in diffs)
  note = "" if len(diffs) >= 2 else f"{len(diffs)} finished pair(s): no interval"
  return Result(c, diffs, mean, low, high, verdict(c.claim, low, high), note)


def markdown(results: list[Result]) -> str:
  """The comparisons table of results.md."""
  lines = ["| comparison | metric | paper's claim | pairs | mean diff (arm - control) | "
           f"{LEVEL:.0%} interval | per seed | verdict |", "|" + "---|" * 8]
  for r in results:
    c = r.comparison
    per_seed = ", ".join(f"{d:+.4f}" for _, d in r.diffs) or "-"
    ci = f"[{r.low:+.4f}, {r.high:+.4f}]" if finite(r.low) else r.note or "-"
    mean = f"{r.mean:+.4f}" if finite(r.mean) else "-"
    claim = f"arm {c.claim}" + ("" if isinstance(c.control, dict) else f" than {c.control:g}")
    lines.append(f"| {c.name} | {c.metric} | {claim} | {len(r.diffs)} | {mean} | "
                 f"{ci} | {per_seed} | **{r.verdict}** |")
  return "\n".join(lines)


def plot(results: list[Result], path: str) -> None:
  """``paired.png``: each comparison's per-seed differences (dots), their mean and
  interval (bar, green: reproduced, red: refuted, gray: inconclusive) and zero: what
  the verdict reads. One panel per metric, each on its own scale."""
  # No pyplot: choosing its backend here would stop a notebook that called
  # write_results from showing its own figures.
  from matplotlib.figure import Figure
  metrics = list(dict.fromkeys(r.comparison.metric for r in results))
  counts = [sum(r.comparison.metric == m for r in results) for m in metrics]
  fig = Figure(figsize=(9, 1.2 + 0.5 * len(results) + 0.6 * len(metrics)),
               layout="constrained")
  axes = fig.subplots(len(metrics), 1, gridspec_kw={"height_ratios": counts},
                      squeeze=False)
  for ax, metric in zip(axes[:, 0], metrics):
    mine = [r for r in results if r.comparison.metric == metric]
    for y, r in enumerate(mine):
      ds = [d for _, d in r.diffs]
      ax.scatter(ds, [y] * len(ds), s=18, color="0.3", zorder=3)
      if finite(r.low):
        color = {"reproduced": "tab:green", "refuted": "tab:red"}.get(r.verdict, "tab:gray")
        ax.plot([r.low, r.high], [y, y], color=color, lw=4, alpha=0.5)
        ax.plot([r.mean], [y], "|", color=color, ms=14, mew=2)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(mine)))
    ax.set_yticklabels([f"{r.comparison.name}: {r.verdict}" for r in mine], fontsize=8)
    ax.set_ylim(len(mine) - 0.5, -0.5)
    stated = all(not isinstance(r.comparison.control, dict) for r in mine)
    ax.set_xlabel(f"{metric}: arm - {'stated value' if stated else 'control'} (dots: seeds; "
                  f"bar: mean and {LEVEL:.0%} interval)", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
  fig.savefig(path, dpi=120)
