"""Runs a sweep's arms, each an ordinary, resumable ``python -m phijax.train``
process: locally, ``parallel`` at a time with the CPU cores split between them, or
handed to a launcher (``launch/slurm.py``, ``launch/tpu.py``) that runs one job per
arm. Arms that reference other arms start once those have finished. Each arm's state
goes to its ``sweep_status.json`` (``phijax.sweeps.status``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

from phijax import cli
from phijax.sweeps.arms import Arm
from phijax.sweeps.status import (arm_state, error_line, has_final_row, read_status,
                                  write_status)

LAUNCHERS = ("local", "slurm", "tpu")
ARMS_FILE = "launch_arms.json"  # in the sweep directory: the arms handed to a launcher
# launch/ beside phijax/ in a checkout (an installed package has none).
LAUNCH_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "launch")


def default_parallel() -> int:
  """Arms at once: one per CPU core on a CPU machine, one where there is an accelerator
  (the arm takes it all)."""
  if shutil.which("nvidia-smi") or os.path.exists("/dev/accel0"):
    return 1
  return max(1, _cpus())


def _cpus() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def core_slices(parallel: int) -> list[list[int] | None]:
  """Slot i's CPU cores: the machine's cores split evenly between ``parallel`` arms."""
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:
    return [None] * parallel
  per = max(1, len(cores) // parallel)
  return [[cores[(i * per + j) % len(cores)] for j in range(per)] for i in range(parallel)]


def arm_env(cores: list[int] | None) -> dict:
  """The arm's environment: thread pools sized to its share of the cores."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if cores is not None:
    n = str(len(cores))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
      env[var] = n
    if len(cores) == 1:  # XLA's CPU thread pools otherwise size to the machine
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                          " intra_op_parallelism_threads=1").strip()
  return env


def arm_command(spec: str, arm: Arm) -> list[str]:
  return [sys.executable, "-m", arm.program, f"--config={arm.spec or spec}",
          f"--workdir={arm.workdir}", *arm.flags]


def stamp() -> str:
  """The time of day that starts each progress line."""
  return time.strftime("%H:%M:%S")


def run_arms(spec: str, arms: list[Arm], parallel: int) -> dict[str, str]:
  """Runs the arms that are not finished, ``parallel`` at a time; returns each arm's
  final state."""
  from phijax.train.metrics import format_duration  # local: it loads jax

  states, todo = {}, []
  for i, arm in enumerate(arms):
    state, record = arm_state(arm.workdir)
    if state == "done":
      print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: already finished, skipped",
            flush=True)
      states[arm.name] = "done"
    elif state == "running":
      print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: running in another process "
            f"(pid {record.get('pid')}), skipped", flush=True)
      states[arm.name] = "running"
    else:
      if state == "interrupted" and record.get("started"):  # a killed runner's time
        try:
          last = os.path.getmtime(os.path.join(arm.workdir, "log.txt"))
          record["wall_s"] = record.get("wall_s", 0.0) + max(0.0, last - record["started"])
        except OSError:
          pass
      todo.append((i, arm, record))
  slots = core_slices(parallel)
  free = list(range(parallel))
  running = {}  # slot -> (index, arm, record, process, start)

  def next_ready():
    """The first waiting arm whose dependencies have finished; arms whose dependency
    did not finish are marked failed on the way (they never start)."""
    for n, (i, arm, record) in enumerate(todo):
      blocked = [d for d in arm.needs if states.get(d, "pending") != "done"
                 and (d in states or not any(a.name == d for _, a, _ in todo)
                      and not any(a.name == d for _, a, *_ in running.values()))]
      if blocked:
        d = blocked[0]
        why = states.get(d, "not part of this run")
        record.update(state="failed", error=f"needs arm {d}, which did not finish ({why})",
                      pid=None)
        os.makedirs(arm.workdir, exist_ok=True)
        write_status(arm.workdir, record)
        states[arm.name] = "failed"
        print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: not started: "
              f"{record['error']}", flush=True)
        del todo[n]
        return next_ready()
      if all(states.get(d) == "done" for d in arm.needs):
        return todo.pop(n)
    return None

  try:
    while todo or running:
      while todo and free:
        ready = next_ready()
        if ready is None:
          break
        i, arm, record = ready
        slot = free.pop(0)
        os.makedirs(arm.workdir, exist_ok=True)
        cmd = arm_command(spec, arm)
        cores = slots[slot]
        with open(os.path.join(arm.workdir, "log.txt"), "a") as log:
          log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep runner: "
                    f"{' '.join(cmd)}\n")
          log.flush()
          preexec = (lambda c=cores: os.sched_setaffinity(0, c)) if cores else None
          proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env=arm_env(cores), preexec_fn=preexec)
        verb = "resuming" if record.get("state") else "starting"
        record = {"state": "running", "pid": proc.pid, "command": cmd,
                  "overrides": arm.overrides, "started": time.time(),
                  "wall_s": record.get("wall_s", 0.0), "error": None}
        write_status(arm.workdir, record)
        print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: {verb}"
              f"{f' on cores {cores}' if cores else ''}", flush=True)
        running[slot] = (i, arm, record, proc, time.time())
      time.sleep(0.2)
      for slot, (i, arm, record, proc, start) in list(running.items()):
        rc = proc.poll()
        if rc is None:
          continue
        del running[slot]
        free.append(slot)
        elapsed = time.time() - start
        record["wall_s"] += elapsed
        log_path = os.path.join(arm.workdir, "log.txt")
        if rc == 0 and has_final_row(arm.workdir):
          record.update(state="done")
          line = f"done in {format_duration(elapsed)}"
        elif rc == 0:  # stopped by a signal, checkpoint written
          record.update(state="interrupted", error=error_line(log_path))
          line = f"interrupted: {record['error']}"
        else:
          record.update(state="failed", error=error_line(log_path), exit_code=rc)
          line = f"FAILED (exit {rc}): {record['error']} (log: {log_path})"
        write_status(arm.workdir, record)
        states[arm.name] = record["state"]
        print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: {line}", flush=True)
  except KeyboardInterrupt:
    # The arms got the same SIGINT (one process group): they checkpoint and stop.
    for i, arm, record, proc, start in running.values():
      proc.wait()
      record.update(state="interrupted", wall_s=record["wall_s"] + time.time() - start)
      write_status(arm.workdir, record)
    raise
  return states


def launch_arms(launcher: str, spec: str, arms: list[Arm],
                launcher_args: Sequence[str]) -> dict[str, str]:
  """Hands the unfinished arms to ``launch/<launcher>.py --commands=FILE`` (one job per
  arm) and waits for it; returns each arm's final state, as ``run_arms`` does."""
  from phijax.train.metrics import format_duration  # local: it loads jax

  script = os.path.join(LAUNCH_DIR, f"{launcher}.py")
  if not os.path.isfile(script):
    raise cli.UsageError(f"--launcher={launcher} needs a phijax checkout: {script} is "
                         "not installed with the package")
  states, todo = {}, []
  for i, arm in enumerate(arms):
    state, record = arm_state(arm.workdir)
    if state in ("done", "running"):
      print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: "
            f"{'already finished' if state == 'done' else 'running elsewhere'}, skipped",
            flush=True)
      states[arm.name] = state
    else:
      todo.append((i, arm, record))
  if not todo:
    return states
  sweep_dir = os.path.dirname(todo[0][1].workdir)
  entries = []
  for _, arm, _ in todo:
    os.makedirs(arm.workdir, exist_ok=True)
    log_path = os.path.join(arm.workdir, "log.txt")
    with open(log_path, "a") as log:
      log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep runner "
                f"(--launcher={launcher}): {' '.join(arm_command(spec, arm))}\n")
    entries.append({"name": arm.name, "command": arm_command(spec, arm), "log": log_path})
  arms_file = os.path.join(sweep_dir, ARMS_FILE)
  with open(arms_file, "w") as f:
    json.dump(entries, f, indent=1)
  cmd = [sys.executable, script, *launcher_args, f"--commands={arms_file}"]
  print(f"{stamp()} sweep: {len(todo)} arm(s) to {' '.join(cmd)}", flush=True)
  start = time.time()
  proc = subprocess.Popen(cmd)
  for _, arm, record in todo:  # "running" while the launcher (this pid) waits on them
    write_status(arm.workdir, {"state": "running", "pid": proc.pid, "command": cmd,
                               "overrides": arm.overrides, "started": start,
                               "wall_s": record.get("wall_s", 0.0), "error": None,
                               "launcher": launcher})
  rc = proc.wait()
  elapsed = time.time() - start
  if rc == 2 and not any(has_final_row(arm.workdir) for _, arm, _ in todo):
    raise cli.UsageError(f"launch/{launcher}.py refused the arms (its error is above); "
                         "nothing was submitted")
  for i, arm, _ in todo:
    record = read_status(arm.workdir)
    record["wall_s"] += elapsed
    log_path = os.path.join(arm.workdir, "log.txt")
    if has_final_row(arm.workdir):
      record.update(state="done")
      line = f"done ({format_duration(elapsed)} for the launch)"
    else:
      record.update(state="failed", error=error_line(log_path), exit_code=rc)
      line = f"FAILED: {record['error']} (log: {log_path})"
    write_status(arm.workdir, record)
    states[arm.name] = record["state"]
    print(f"{stamp()} [{i + 1}/{len(arms)}] {arm.name}: {line}", flush=True)
  return states
