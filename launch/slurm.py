"""One run on a SLURM cluster through submitit: one task per GPU, all joined by
jax.distributed.

    python launch/slurm.py --nodes=2 --gpus_per_node=8 --partition=gpu --time=240 -- \\
        python -m phijax.train --config=configs/phi2.py --workdir=/shared/runs/phi2

    python launch/slurm.py --nodes=1 --gpus_per_node=2 --dry-run -- python -m ...  # the sbatch script
    python launch/slurm.py --cluster=local --tasks_per_node=2 -- python -m ...     # submitit's local executor

Each task starts the command with ``JAX_COORDINATOR_ADDRESS`` (the job's first node),
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (its global rank) and, on GPUs,
``JAX_LOCAL_DEVICE_IDS`` (its local rank): the training joins them and knows nothing
else about SLURM. ``--workdir`` must be on a file system every node shares.

Preemption and time limits: submitit asks SLURM for USR2 before the limit and then
calls ``checkpoint()`` on rank 0 only, which cannot drive a collective save; it just
resubmits the same command. The tasks get SIGTERM from SLURM, JAX's preemption
notifier makes every process checkpoint at the same step, and the requeued job
resumes from it.

TODO: sweeps as job arrays (``executor.map_array`` over the arms of an experiment
file) belong with ``phijax.sweep --launcher=slurm``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cli  # noqa: E402

PROG = "python launch/slurm.py"


def parser():
  p = cli.ArgumentParser(prog=PROG, description=__doc__,
                         usage=f"{PROG} [options] -- COMMAND...")
  p.add_argument("--nodes", type=cli.positive_int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=8,
                 help="GPUs per node; one task (process) per GPU (0: CPU nodes)")
  p.add_argument("--tasks_per_node", type=cli.positive_int, default=None,
                 help="default: gpus_per_node (or 1 without GPUs)")
  p.add_argument("--cpus_per_task", type=cli.positive_int, default=8)
  p.add_argument("--partition", default="")
  p.add_argument("--account", default="")
  p.add_argument("--qos", default="")
  p.add_argument("--time", type=cli.positive_int, default=60, help="minutes")
  p.add_argument("--job_name", default="phijax")
  p.add_argument("--folder", default="",
                 help="submitit's logs and pickles (default WORKDIR/slurm)")
  p.add_argument("--max_requeues", type=int, default=10,
                 help="resubmissions after preemption or the time limit")
  p.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                 help="local: submitit's LocalExecutor on this machine (testing)")
  p.add_argument("--dry-run", dest="dry_run", action="store_true",
                 help="print the sbatch script and submit nothing")
  return p


def coordinator_port(job_id: str) -> int:
  """The port JAX's own SLURM detection uses for this job (61440 + job id % 4096)."""
  digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
  return 61440 + int(digits) % 4096


class Task:
  """What every SLURM task runs: the command, with its rank in the environment.

  Pickled by value (this file runs as __main__): it may use only the standard
  library and submitit, not launch/_common (not importable on the nodes)."""

  def __init__(self, command, gpus: bool):
    self.command = list(command)
    self.gpus = gpus

  def environment(self, env, base=None) -> dict:
    out = dict(os.environ if base is None else base)
    out.update({"JAX_COORDINATOR_ADDRESS":
                    f"{env.hostnames[0]}:{coordinator_port(env.job_id)}",
                "JAX_NUM_PROCESSES": str(env.num_tasks),
                "JAX_PROCESS_ID": str(env.global_rank), "PYTHONUNBUFFERED": "1"})
    if self.gpus:
      out["JAX_LOCAL_DEVICE_IDS"] = str(env.local_rank)
    return out

  def __call__(self):
    import submitit
    env = submitit.JobEnvironment()
    proc = subprocess.run(self.command, env=self.environment(env))
    if proc.returncode:
      raise RuntimeError(f"task {env.global_rank}: {shlex.join(self.command)} exited "
                         f"with {proc.returncode}")
    return proc.returncode

  def checkpoint(self, *args, **kwargs):
    # Rank 0 only, from a signal handler: resubmit; the processes checkpoint
    # themselves at JAX's preemption sync point when SLURM sends SIGTERM.
    import submitit
    return submitit.helpers.DelayedSubmission(Task(self.command, self.gpus))


def slurm_parameters(args) -> dict:
  tasks = args.tasks_per_node or max(args.gpus_per_node, 1)
  params = dict(job_name=args.job_name, nodes=args.nodes, ntasks_per_node=tasks,
                cpus_per_task=args.cpus_per_task, time=args.time,
                signal_delay_s=120)
  if args.gpus_per_node:
    params["gpus_per_node"] = args.gpus_per_node
  for key in ("partition", "account", "qos"):
    if getattr(args, key):
      params[key] = getattr(args, key)
  return params


def _submitit():
  try:
    import submitit
  except ImportError:
    raise cli.UsageError("launch/slurm.py needs submitit: pip install submitit") from None
  return submitit


def sbatch_script(args, folder: str) -> str:
  """The sbatch script submitit would submit (its own template, not a copy)."""
  _submitit()
  from submitit.slurm import slurm
  return slurm._make_sbatch_string(  # private, but the exact text submitit submits
      command=f"{sys.executable} -u -m submitit.core._submit {folder}", folder=folder,
      **slurm_parameters(args))


def launch(args, command) -> int:
  workdir = _common.check_command(command, PROG)
  if args.gpus_per_node < 0:
    raise cli.UsageError(f"--gpus_per_node must be >= 0, got {args.gpus_per_node}")
  folder = args.folder or os.path.join(workdir, "slurm")
  if args.dry_run:
    print(sbatch_script(args, os.path.abspath(folder)))
    print(f"# each of the {args.nodes * (args.tasks_per_node or max(args.gpus_per_node, 1))}"
          f" tasks runs: {_common.quote(command)}")
    return 0
  submitit = _submitit()
  task = Task(command, gpus=args.gpus_per_node > 0 and args.cluster == "slurm")
  if args.cluster == "local":
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=args.max_requeues)
    executor.update_parameters(timeout_min=args.time, nodes=1,
                               tasks_per_node=args.tasks_per_node or 1)
  else:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                     slurm_max_num_timeout=args.max_requeues)
    p = slurm_parameters(args)
    executor.update_parameters(
        name=p["job_name"], nodes=p["nodes"], tasks_per_node=p["ntasks_per_node"],
        cpus_per_task=p["cpus_per_task"], timeout_min=p["time"],
        slurm_signal_delay_s=p["signal_delay_s"],
        **({"gpus_per_node": p["gpus_per_node"]} if "gpus_per_node" in p else {}),
        **{f"slurm_{k}": p[k] for k in ("partition", "account", "qos") if k in p})
  job = executor.submit(task)
  print(f"submitted job {job.job_id}; logs in {folder}", flush=True)
  if args.cluster == "local":
    job.results()  # one per task; raises (exit 1) if a task failed
    print("done", flush=True)
  return 0


def main(argv=None):
  head, command = _common.split_argv(argv)
  cli.main(parser(), lambda args: launch(args, command), head)


if __name__ == "__main__":
  main()
