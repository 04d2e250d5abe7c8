"""Tables and plots from a sweep directory (or any directory of run directories).

    python -m phijax.results runs/seq_warmup

Reads every arm's ``config.json`` and ``metrics.jsonl`` (``DIR/*/``) and writes:

- ``results.csv``: one row per arm, full precision: the swept fields, then
  ``status, eval_loss, eval_bpb`` (final, held-out), ``best_eval_loss``, ``tokens``,
  ``steps``, ``wall_s``, ``tokens_per_sec`` (median of the logged rows), ``skipped``
  (non-finite steps), ``spikes`` and ``max_loss_ratio`` (see ``loss_rises``),
  ``max_grad_norm``, ``gzip_bpb``;
- ``results.md``: the same table, then arms that differ only in their seeds
  (``train.seed``, ``train.data_seed``) collapsed to mean ± std (sample std, ddof 1)
  with n, then the experiment's ``COMPARISONS`` with their paired differences,
  intervals and verdicts (``phijax.sweeps.stats``; figure ``paired.png``), then its
  ``summarize(table)`` (or ``summarize(table, sweep_dir)``) rows, if it has one, then
  the provenance block (commit, corpus, tokenizer, versions, device, command, total
  wall time: ``phijax.sweeps.provenance``; arms that differ are named, on stderr too);
- ``curves.png``: training loss over all tokens (EMA; a token-selection arm's
  ``lm_loss``) and held-out loss against tokens, one colour per arm group, seeds as
  thin lines around their mean;
- ``final.png``: final held-out loss against each swept numeric field (log x for
  learning rates and fields spanning decades); an experiment's ``PLOTS`` (a tuple of
  "curves", "final") picks which of these two it wants;
- ``tb_hparams/``: TensorBoard HParams, one run per arm (``tensorboard --logdir DIR``);
- whatever the experiment's optional ``plot(table, sweep_dir)`` writes (it returns the
  paths of its files), for plots only that experiment needs.

Swept fields come from the runner's ``sweep.json``; without one, from the fields whose
values differ between the arms' ``config.json``.
"""

from __future__ import annotations

import csv
import functools
import inspect
import os
import shutil
import sys

from phijax import cli, config_files
from phijax.sweeps import evals, provenance, stats
from phijax.sweeps.figures import plot_curves, plot_final
from phijax.sweeps.runs import SMOOTHING, SPIKE_RATIO, finite
from phijax.sweeps.tables import (CSV_METRICS, Table, arm_table, collect, grouped_table,
                                  summary_table)


def write_hparams(table: Table, sweep_dir: str) -> None:
  """TensorBoard HParams: one run per arm under ``tb_hparams/`` (small sweeps only)."""
  from phijax.train import metrics
  try:
    SummaryWriter = metrics.summary_writer_class()  # without torch: ~1-5 s saved
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
               if finite(r.get(m))}
    if metrics:
      with SummaryWriter(os.path.join(root, r["arm"])) as w:
        w.add_hparams(hp, metrics, name=".")


def write_results(sweep_dir: str) -> list[str]:
  """Writes results.csv, results.md, curves.png, final.png (and tb_hparams/); returns
  the paths of the files."""
  table, meta = collect(sweep_dir)
  arm_evals = _experiment_fn(meta, sweep_dir, "EVALS")
  if arm_evals:
    table.extra = evals.add_columns(table, sweep_dir, arm_evals,
                                    _experiment_path(meta, sweep_dir))
  csv_path = os.path.join(sweep_dir, "results.csv")
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    extra = [c for c, _, _ in table.extra]
    w.writerow(["arm", *table.fields, *CSV_METRICS, *extra])
    for r in table.rows:
      w.writerow([r["arm"], *(r.get(x) for x in table.fields),
                  *(r.get(m) for m in CSV_METRICS + extra)])
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
  done = [r for r in table.rows if finite(r["gzip_bpb"])]
  parts.append(
      "Held-out loss and bits/byte: the final evaluation (nats/token at full length"
      + (f"; gzip -9 on the bytes it scored: {done[0]['gzip_bpb']:.3f} bits/byte" if done
         else "") + f"). Spike steps: steps whose training loss (EMA {SMOOTHING:g}) is "
      f"above {SPIKE_RATIO:g} x its running minimum; max loss ratio: the largest smoothed "
      "loss / running minimum (1 = never rose); skipped: non-finite steps; tokens/s: "
      "median of the logged steps; wall: the runner's time for the arm.")
  parts.append(arm_table(table))
  grouped = grouped_table(table)
  if grouped:
    parts += ["Seeds collapsed (mean ± sample std over finished seeds):", grouped]
  comparisons = _experiment_fn(meta, sweep_dir, "COMPARISONS") or []
  declared = set((meta.get("aliases") or {}).values()) if meta else ()
  compared = [stats.compare(table.rows, c, declared) for c in comparisons]
  if compared:
    parts += [
        "## Comparisons\n\nWhat the paper claims, as the experiment declares it: each arm "
        "row paired with its control's row of the same seeds (initialisation and data "
        f"order); the verdict reads the {stats.LEVEL:.0%} Student-t interval of the mean "
        "paired difference: reproduced when it lies wholly on the claimed side of zero, "
        "refuted when wholly on the other, inconclusive when it holds zero "
        "(`phijax/sweeps/stats.py`). Figure: `paired.png`.",
        stats.markdown(compared)]
  summarize = _experiment_fn(meta, sweep_dir, "summarize")
  if summarize is not None:
    # summarize(table), or summarize(table, sweep_dir) for rows read from the arms'
    # directories (an evaluation of each arm's final model, say).
    takes_dir = len(inspect.signature(summarize).parameters) > 1
    extra = summarize(table, sweep_dir) if takes_dir else summarize(table)
    if extra:
      parts.append(extra if isinstance(extra, str) else summary_table(list(extra)))
  block, differences = provenance.section(table.rows, sweep_dir)
  parts.append(block)
  for line in differences:
    print(f"phijax.results: {sweep_dir}: {line}", file=sys.stderr)
  # The generic plots an experiment wants (PLOTS; default both): a figure that misleads
  # for its question (DPO loss beside LM loss, smoothing that hides an oscillation)
  # is left out rather than committed.
  wanted = _experiment_fn(meta, sweep_dir, "PLOTS")  # () wants none: not the default
  wanted = GENERIC_PLOTS if wanted is None else tuple(wanted)
  unknown = sorted(set(wanted) - set(GENERIC_PLOTS))
  if unknown:
    raise ValueError(f"the experiment's PLOTS names {unknown}; choose from {GENERIC_PLOTS}")
  shown = {"curves": "`curves.png` (loss against tokens)",
           "final": "`final.png` (final held-out loss against the swept fields)"}
  if wanted:
    parts.append("Plots: " + ", ".join(shown[p] for p in wanted) + ".")
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path, "w") as f:
    f.write("\n\n".join(parts) + "\n")
  paths = [md_path, csv_path]
  for name, draw in (("curves", plot_curves), ("final", plot_final)):
    path = os.path.join(sweep_dir, f"{name}.png")
    if name in wanted:
      draw(table, path)
      paths.append(path)
    elif os.path.exists(path):
      os.remove(path)  # a stale figure the experiment no longer wants
  if compared:
    stats.plot(compared, os.path.join(sweep_dir, "paired.png"))
    paths.append(os.path.join(sweep_dir, "paired.png"))
  plot = _experiment_fn(meta, sweep_dir, "plot")
  if plot is not None:  # the experiment's own plots
    paths += list(plot(table, sweep_dir) or [])
  write_hparams(table, sweep_dir)
  return paths


GENERIC_PLOTS = ("curves", "final")


def _experiment_path(meta: dict, sweep_dir: str) -> str:
  return os.path.abspath(os.path.join(sweep_dir, meta["experiment"].split(":")[0]))


def _experiment_fn(meta: dict, sweep_dir: str, name: str):
  """The experiment file's function or setting ``name`` (summarize, plot,
  COMPARISONS, PLOTS), or None."""
  if not meta:
    return None
  where = os.path.join(sweep_dir, meta["experiment"].split(":")[0])
  if not os.path.exists(where):
    # sweep.json names the experiment relative to the sweep directory: a copied or
    # moved directory loses it, and with it the experiment's own rows and figures.
    print(f"phijax.results: the experiment file {os.path.normpath(where)} (sweep.json's "
          f"{meta['experiment']!r}, relative to {sweep_dir}) does not exist, so its "
          f"{name}() is skipped; run this on the sweep directory where the runner wrote "
          "it, or restore the file there", file=sys.stderr)
    return None
  return getattr(_load_experiment(os.path.abspath(where), os.path.getmtime(where)), name,
                 None)


@functools.lru_cache(maxsize=8)
def _load_experiment(path: str, mtime: float):
  """The experiment module, imported once per version of the file (results asks it for
  COMPARISONS, PLOTS, summarize and plot)."""
  return config_files._load_module(path)  # pylint: disable=protected-access


def run(argv=None):
  """Console entry point (``phijax-results``)."""
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
