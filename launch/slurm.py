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

Sweeps: ``python -m phijax.sweep EXP --workdir=DIR --launcher=slurm -- [these options]``
writes each arm's command to ``DIR/launch_arms.json`` and runs this script with
``--commands=DIR/launch_arms.json``: one job per arm, submitted as one job array
(``executor.submit_array``), each job as many tasks as a single run would have; the
script waits for the array and exits 1 if any arm's job failed.
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
  p.add_argument("--commands", default="", metavar="FILE",
                 help="a JSON list of {\"command\": [...], \"log\": PATH}: one job per "
                      "entry as one job array, waited for (phijax.sweep writes it)")
  p.add_argument("--array_parallelism", type=cli.positive_int, default=256,
                 help="jobs of an array running at once")
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

  def __init__(self, command, gpus: bool, log: str | None = None):
    self.command = list(command)
    self.gpus = gpus
    self.log = log  # rank 0's output is appended here (a sweep arm's log.txt)

  def environment(self, env, base=None) -> dict:
    out = dict(os.environ if base is None else base)
    out["PYTHONUNBUFFERED"] = "1"
    if env.num_tasks == 1:  # a one-process run: no jax.distributed to join
      return out
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
    if self.log and env.global_rank == 0:
      with open(self.log, "a") as log:
        proc = subprocess.run(self.command, env=self.environment(env), stdout=log,
                              stderr=subprocess.STDOUT)
    else:
      proc = subprocess.run(self.command, env=self.environment(env))
    if proc.returncode:
      raise RuntimeError(f"task {env.global_rank}: {shlex.join(self.command)} exited "
                         f"with {proc.returncode}")
    return proc.returncode

  def checkpoint(self, *args, **kwargs):
    # Rank 0 only, from a signal handler: resubmit; the processes checkpoint
    # themselves at JAX's preemption sync point when SLURM sends SIGTERM.
    import submitit
    return submitit.helpers.DelayedSubmission(Task(self.command, self.gpus, self.log))


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


def sbatch_script(args, folder: str, array: int = 0) -> str:
  """The sbatch script submitit would submit (its own template, not a copy)."""
  _submitit()
  from submitit.slurm import slurm
  extra = dict(map_count=array, array_parallelism=args.array_parallelism) if array else {}
  return slurm._make_sbatch_string(  # private, but the exact text submitit submits
      command=f"{sys.executable} -u -m submitit.core._submit {folder}", folder=folder,
      **slurm_parameters(args), **extra)


def launch(args, command) -> int:
  if args.gpus_per_node < 0:
    raise cli.UsageError(f"--gpus_per_node must be >= 0, got {args.gpus_per_node}")
  if args.commands:
    if command:
      raise cli.UsageError("give --commands=FILE or -- COMMAND, not both")
    return launch_array(args, _common.read_commands(args.commands, PROG))
  workdir = _common.check_command(command, PROG)
  folder = args.folder or os.path.join(workdir, "slurm")
  if args.dry_run:
    print(sbatch_script(args, os.path.abspath(folder)))
    print(f"# each of the {args.nodes * (args.tasks_per_node or max(args.gpus_per_node, 1))}"
          f" tasks runs: {_common.quote(command)}")
    return 0
  task = Task(command, gpus=args.gpus_per_node > 0 and args.cluster == "slurm")
  executor = make_executor(args, folder)
  job = executor.submit(task)
  print(f"submitted job {job.job_id}; logs in {folder}", flush=True)
  if args.cluster == "local":
    job.results()  # one per task; raises (exit 1) if a task failed
    print("done", flush=True)
  return 0


def launch_array(args, entries) -> int:
  """One job per entry, as one job array; waits for all of them. Exit 1 if any failed."""
  folder = args.folder or os.path.join(os.path.dirname(os.path.abspath(args.commands)),
                                       "slurm")
  if args.dry_run:
    print(sbatch_script(args, os.path.abspath(folder), array=len(entries)))
    for i, e in enumerate(entries):
      print(f"# array task {i} runs: {_common.quote(e['command'])}")
    return 0
  gpus = args.gpus_per_node > 0 and args.cluster == "slurm"
  executor = make_executor(args, folder)
  tasks = [Task(e["command"], gpus, e.get("log")) for e in entries]
  jobs = executor.submit_array(tasks)
  print(f"submitted {len(jobs)} job(s) {', '.join(str(j.job_id) for j in jobs)}; logs in "
        f"{folder}", flush=True)
  failed = 0
  for e, job in zip(entries, jobs):
    try:
      job.results()
    except Exception as err:  # noqa: BLE001 -- a failed job: report it, wait for the rest
      failed += 1
      first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
      print(f"job {job.job_id} failed: {first} (command: {_common.quote(e['command'])})",
            flush=True)
  print(f"{len(jobs) - failed}/{len(jobs)} job(s) finished", flush=True)
  return 1 if failed else 0


def make_executor(args, folder: str):
  submitit = _submitit()
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
        slurm_array_parallelism=args.array_parallelism,
        **{f"slurm_{k}": p[k] for k in ("partition", "account", "qos") if k in p})
  return executor


def main(argv=None):
  head, command = _common.split_argv(argv)
  cli.main(parser(), lambda args: launch(args, command), head)


if __name__ == "__main__":
  main()
