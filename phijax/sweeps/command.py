"""Run every arm of an experiment file, each an ordinary, resumable training run.

    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/seq_warmup
    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/sw --dry-run
    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/sw --status
    python -m phijax.sweep experiments/seq_warmup.py --workdir=runs/sw --wandb-project=P
    python -m phijax.sweep experiments/seq_warmup.py --workdir=/shared/sw --launcher=slurm \
        -- --partition=gpu --gpus_per_node=1 --time=120    # options of launch/slurm.py

An experiment file has ``get_config(arg=None)`` (the base config, as any config file)
and ``get_sweep(h)``, which returns the arms: a list of override dicts built with the
helpers of ``Helpers`` (``h.sweep``, ``h.product``, ``h.zip``, ``h.seeds``). Optional:
``summarize(table)`` or ``summarize(table, sweep_dir)`` (extra rows for results.md,
see ``phijax.results``),
``plot(table, sweep_dir)`` (the experiment's own figures; returns their paths) and
``ALIASES`` (``{"curriculum.seq_warmup.enabled": "seq_warmup"}``: short names for
arm names and table columns).

Arms that build on other arms (fine-tune a pretrained arm, say):

- ``{"config": "sft"}``: the arm's config is the experiment's ``get_config("sft")``
  (its command says ``--config=EXPERIMENT.py:sft``; it replaces a ``:ARG`` given to
  the sweep), so one experiment file can hold several recipes;
- a string value may name another arm's run directory as ``{arm:NAME}``
  (``{"config": "sft", "train.init_from": "{arm:config=pretrain,seed=0}"}``). The
  runner runs NAME first (``--only`` adds the arms the selected ones need), starts
  the arm once NAME has finished, and marks it failed without running it when NAME
  failed. A reference to no arm, or a cycle, is an error before anything runs.
  Overrides that hold a reference are left out of the arm's name and of the table's
  columns (the referenced arm's own fields describe it). ``--launcher=slurm|tpu``
  does not order arms yet and refuses experiments with references.

Each arm runs as ``python -m phijax.train --config=EXPERIMENT --workdir=DIR/ARM
--config.a.b=v ...`` (the command is in ``DIR/ARM/sweep_status.json`` and at the top
of ``DIR/ARM/log.txt``), so rerunning the sweep skips finished arms, resumes
interrupted ones from their last checkpoint and retries failed ones. ``--config.a.b=v``
given to the sweep applies to every arm (a smaller budget, say) and is not part of the
arm names. An arm with ``"program": "MODULE"`` runs ``python -m MODULE`` instead, with
the same flags: a step that keeps the run-directory contract (``metrics.jsonl`` with a
final row when done), such as ``phijax.curate.score_run``, whose output other arms read
through ``{arm:NAME}``. At the end the runner writes ``DIR/results.md``, ``results.csv``,
``curves.png`` and ``final.png`` (``python -m phijax.results DIR`` redoes them).
Exit code 0 when every arm has finished, 1 otherwise.

``--wandb-project=P`` (or ``--config.train.wandb.project=P``) logs every arm to that
Weights & Biases project, grouped by sweep (``wandb_group``) and named by arm.

``--launcher=slurm`` hands the unfinished arms to ``launch/slurm.py`` (a phijax
checkout's launch/, options after ``--``): one job per arm as one SLURM job array
(``-- --cluster=local``: submitit's local executor), waited for; the arm directories,
statuses and results are the same as a local sweep's. ``--launcher=tpu`` hands them to
``launch/tpu.py`` (``-- --name=NAME --zone=ZONE ...``): one Cloud TPU slice, created,
copied to and installed once, runs the arms one after another and is deleted; the
sweep directory must be storage this machine and the TPU hosts both mount.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Sequence

from phijax import cli
from phijax.sweeps import results
from phijax.sweeps.arms import (SWEEP_FILE, Arm, aliases, load_experiment, make_arms,
                                read_sweep_file, with_dependencies, write_sweep_file)
from phijax.sweeps.runner import (LAUNCHERS, arm_command, default_parallel, launch_arms,
                                  run_arms, stamp)
from phijax.sweeps.status import status_table


def _warn_stale_sweep_file(workdir: str, arms: list[Arm]) -> None:
  """Says which of ``arms`` the existing sweep.json does not list: the results table
  reads its arms from there, so theirs would be missing from it."""
  try:
    listed = {a["name"] for a in read_sweep_file(workdir).get("arms", [])}
  except (OSError, ValueError):
    return
  new = [a.name for a in arms if a.name not in listed]
  if new:
    print(f"warning: {os.path.join(workdir, SWEEP_FILE)} (kept under --only) does not list "
          f"{len(new)} arm(s) of the experiment as it is now: {', '.join(new)}; the "
          "results table leaves them out until a run without --only rewrites it",
          file=sys.stderr, flush=True)


def _parser():
  parser = cli.ArgumentParser(prog=cli.prog("phijax.sweep", "phijax-sweep"),
                              description=__doc__)
  parser.add_argument("experiment", metavar="EXPERIMENT.py[:ARG]",
                      help="an experiment file with get_config() and get_sweep(h)")
  parser.add_argument("--workdir", required=True, type=cli.new_dir,
                      help="sweep directory: one run directory per arm, results at the top")
  parser.add_argument("--parallel", type=cli.positive_int, default=None,
                      help="arms at once, the CPU cores split between them (default: "
                           "one per core on CPU, 1 with an accelerator)")
  parser.add_argument("--only", default=None, metavar="REGEX",
                      help="run only the arms whose name matches (re.search)")
  parser.add_argument("--dry-run", action="store_true",
                      help="print each arm's name and training command; run nothing")
  parser.add_argument("--status", action="store_true",
                      help="print done / running / failed / interrupted / pending per arm")
  parser.add_argument("--launcher", default="local", choices=LAUNCHERS,
                      help="where arms run: local processes; slurm: one job per arm "
                           "through launch/slurm.py; tpu: one after another on one Cloud "
                           "TPU slice through launch/tpu.py (their options after --)")
  parser.add_argument("--no-results", action="store_true",
                      help="skip writing results.md / .csv and plots at the end")
  parser.add_argument("--wandb-project", "--wandb_project", default=None, metavar="PROJECT",
                      help="log every arm to this Weights & Biases project (pip install "
                           "'phijax[wandb]'): group = the sweep, name = the arm; the same "
                           "as --config.train.wandb.project=PROJECT")
  return parser


def main(args, overrides: Sequence[str], launcher_args: Sequence[str] = ()) -> int:
  if launcher_args and args.launcher == "local":
    raise cli.UsageError(f"options after -- ({' '.join(launcher_args)}) are for "
                         "--launcher=slurm or tpu; a local sweep takes none")
  spec = args.experiment
  where, arg = spec.partition(":")[0], spec.partition(":")[2]
  if not os.path.isfile(where):
    raise cli.UsageError(f"experiment file {where!r} does not exist")
  spec = os.path.abspath(where) + (f":{arg}" if arg else "")
  workdir = os.path.abspath(args.workdir)
  if args.wandb_project:  # an override like any other: recorded in sweep.json
    overrides = [*overrides, f"--config.train.wandb.project={args.wandb_project}"]
  module = load_experiment(spec)
  arms = all_arms = make_arms(spec, module, workdir, overrides)
  if args.only:
    try:
      pattern = re.compile(args.only)
    except re.error as e:
      raise cli.UsageError(f"--only={args.only!r} is not a regular expression: {e}") from None
    selected = [a for a in arms if pattern.search(a.name)]
    if not selected:
      raise cli.UsageError(f"--only={args.only!r} matches no arm")
    arms, added = with_dependencies(selected, arms), len(selected)
    if len(arms) > added:
      print(f"--only: {added} arm(s) match, plus {len(arms) - added} they need: "
            f"{', '.join(a.name for a in arms if a not in selected)}", flush=True)
  if args.launcher != "local" and any(a.needs for a in arms):
    raise cli.UsageError(f"--launcher={args.launcher} does not order arms by their "
                         "{arm:NAME} references yet; run this experiment with "
                         "--launcher=local")
  if args.dry_run:
    for arm in arms:
      print(f"{arm.name}\n  {' '.join(arm_command(spec, arm))}")
    print(f"{len(arms)} arm(s) in {workdir}")
    return 0
  if args.status:
    print(status_table(arms))
    return 0
  parallel = min(args.parallel or default_parallel(), len(arms))
  # The short names of every arm's fields, as the arm names have them (an --only run's
  # record lists all arms: a later run, a comparison, may name the others' fields).
  names = aliases([k for a in all_arms for k in a.overrides],
                  getattr(module, "ALIASES", None))
  if not args.only or not os.path.exists(os.path.join(workdir, SWEEP_FILE)):
    write_sweep_file(workdir, spec, all_arms, overrides, names)
  else:  # kept (a smoke --only run must not rewrite a full sweep's record), but said
    _warn_stale_sweep_file(workdir, arms)
  how = (f"{parallel} at a time" if args.launcher == "local" else
         f"one {args.launcher} job each")
  print(f"{stamp()} sweep {os.path.basename(where)}: {len(arms)} arm(s), {how}, in "
        f"{workdir}", flush=True)
  start = time.time()
  if args.launcher == "local":
    states = run_arms(spec, arms, parallel)
  else:
    states = launch_arms(args.launcher, spec, arms, launcher_args)
  bad = {n: s for n, s in states.items() if s != "done"}
  from phijax.train.metrics import format_duration  # local: it loads jax
  print(f"{stamp()} sweep: {len(states) - len(bad)}/{len(states)} arm(s) finished in "
        f"{format_duration(time.time() - start)}"
        + (f"; not finished: {', '.join(f'{n} ({s})' for n, s in bad.items())}" if bad
           else ""), flush=True)
  if not args.no_results:
    paths = results.write_results(workdir)
    print(f"results: {', '.join(paths)}", flush=True)
  return 1 if bad else 0


def run(argv=None):
  """Console entry point (``phijax-sweep``)."""
  parser = _parser()
  argv = list(sys.argv[1:] if argv is None else argv)
  launcher_args = []
  if "--" in argv:
    argv, launcher_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  overrides = [a for a in argv if a.startswith("--config.")]
  for a in overrides:
    if "=" not in a:
      parser.error(f"{a} needs a value: write {a}=VALUE")
  rest = [a for a in argv if not a.startswith("--config.")]
  cli.main(parser, lambda args: main(args, overrides, launcher_args), rest)


if __name__ == "__main__":
  run()
