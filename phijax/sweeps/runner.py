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
arm names. At the end the runner writes ``DIR/results.md``, ``results.csv``,
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

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Iterable, Sequence

STATUS_FILE = "sweep_status.json"  # per arm directory
SWEEP_FILE = "sweep.json"  # in the sweep directory: the experiment and its arms
LAUNCHERS = ("local", "slurm", "tpu")
ARMS_FILE = "launch_arms.json"  # in the sweep directory: the arms handed to a launcher
LAUNCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "launch")
SEED_KEY = "train.seed"
CONFIG_KEY = "config"  # an arm's argument to the experiment's get_config(arg)
ARM_REF = re.compile(r"\{arm:([^{}]*)\}")  # another arm's run directory


# --------------------------------------------------------------------- arms and names

class Helpers:
  """What ``get_sweep(h)`` builds arms with; an arm is a dict ``{"optim.lr": 3e-2}``."""

  @staticmethod
  def sweep(key: str, values: Iterable[Any]) -> list[dict]:
    """One arm per value of ``key``."""
    return [{key: v} for v in values]

  @staticmethod
  def seeds(n_or_seeds: int | Iterable[int]) -> list[dict]:
    """``train.seed`` 0..n-1 (or the given seeds)."""
    seeds = range(n_or_seeds) if isinstance(n_or_seeds, int) else n_or_seeds
    return Helpers.sweep(SEED_KEY, seeds)

  @staticmethod
  def product(*groups: Sequence[dict]) -> list[dict]:
    """Every combination: ``product(sweep(a, [1, 2]), sweep(b, [x, y]))`` is 4 arms."""
    return [_merge(combo) for combo in itertools.product(*groups)]

  @staticmethod
  def zip(*groups: Sequence[dict]) -> list[dict]:
    """Arms side by side: the i-th arm of each group merged (equal lengths)."""
    lengths = {len(g) for g in groups}
    if len(lengths) > 1:
      raise ValueError(f"h.zip needs groups of equal length, got {sorted(lengths)}")
    return [_merge(combo) for combo in zip(*groups)]


def _merge(dicts: Iterable[dict]) -> dict:
  out = {}
  for d in dicts:
    for k, v in d.items():
      if k in out and out[k] != v:
        raise ValueError(f"two groups set {k} ({out[k]!r} and {v!r}) in one arm")
      out[k] = v
  return out


def aliases(keys: Iterable[str], given: dict | None = None) -> dict[str, str]:
  """Short names for swept keys: ``optim.lr`` -> ``lr``, ``curriculum.seq_warmup.enabled``
  -> ``seq_warmup``; the full key where two would collide."""
  keys = list(dict.fromkeys(keys))
  given = dict(given or {})
  def short(k):
    parts = k.split(".")
    return parts[-2] if parts[-1] == "enabled" and len(parts) > 1 else parts[-1]
  names = {k: given.get(k, short(k)) for k in keys}
  counts = {}
  for n in names.values():
    counts[n] = counts.get(n, 0) + 1
  return {k: (n if counts[n] == 1 or k in given else k) for k, n in names.items()}


def format_value(v: Any) -> str:
  """A value as an arm name shows it: ``on``/``off``, ``0.03``, ``adamw``."""
  if isinstance(v, bool):
    return "on" if v else "off"
  if isinstance(v, float):
    return f"{v:g}"
  return str(v)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def arm_name(overrides: dict, names: dict[str, str]) -> str:
  """``lr=0.03,seq_warmup=on,seed=1``: readable, stable, filesystem-safe."""
  name = ",".join(f"{names[k]}={format_value(v)}" for k, v in overrides.items())
  name = _UNSAFE.sub("_", name) or "base"
  return "_" + name if name.startswith(".") else name


def override_flag(key: str, value: Any) -> str:
  """``--config.KEY=VALUE`` in the syntax ml-collections parses for the field."""
  if isinstance(value, bool):
    value = "true" if value else "false"
  elif isinstance(value, float):
    value = repr(value)
  return f"--config.{key}={value}"


class Arm:
  def __init__(self, name: str, overrides: dict, flags: list[str], workdir: str,
               spec: str | None = None, needs: Sequence[str] = ()):
    self.name, self.overrides, self.flags, self.workdir = name, overrides, flags, workdir
    self.spec = spec  # the experiment with the arm's own config argument, if it has one
    self.needs = list(needs)  # names of the arms it references ({arm:NAME})


def references(value: Any) -> list[str]:
  """The arm names a value references (``"{arm:NAME}/tokenizer.model"`` -> [NAME])."""
  return ARM_REF.findall(value) if isinstance(value, str) else []


def _shown(overrides: dict) -> dict:
  """What names an arm and makes its table columns: overrides without references."""
  return {k: v for k, v in overrides.items() if not references(v)}


def _check_cycles(arms: list["Arm"], where: str) -> None:
  from phijax import cli
  by_name = {a.name: a for a in arms}
  done, path = set(), []

  def visit(name):
    if name in done:
      return
    if name in path:
      cycle = path[path.index(name):] + [name]
      raise cli.UsageError(f"{where}: arms reference each other in a cycle: "
                           f"{' -> '.join(cycle)}")
    path.append(name)
    for dep in by_name[name].needs:
      visit(dep)
    path.pop()
    done.add(name)

  for a in arms:
    visit(a.name)


def with_dependencies(selected: list["Arm"], arms: list["Arm"]) -> list["Arm"]:
  """``selected`` plus every arm they need, directly or not, in the experiment's order."""
  by_name = {a.name: a for a in arms}
  keep, todo = set(), [a.name for a in selected]
  while todo:
    name = todo.pop()
    if name not in keep:
      keep.add(name)
      todo += by_name[name].needs
  return [a for a in arms if a.name in keep]


def load_experiment(spec: str):
  """The experiment module; one-line errors for what it lacks."""
  from phijax import cli, config_files

  where, _ = config_files.split_spec(spec)
  try:
    module = config_files._load_module(where)  # pylint: disable=protected-access
  except config_files.ConfigError as e:
    raise cli.UsageError(str(e)) from None
  for fn, sig in (("get_config", "get_config(arg=None)"), ("get_sweep", "get_sweep(h)")):
    if not callable(getattr(module, fn, None)):
      raise cli.UsageError(f"experiment {where} has no {sig} function (an experiment "
                           "file defines get_config and get_sweep; see phijax/sweep.py)")
  return module


def make_arms(spec: str, module, workdir: str, common: Sequence[str] = ()) -> list[Arm]:
  """The experiment's arms, every one's config loaded and checked (unknown keys, types,
  duplicate names) before anything runs."""
  from phijax import cli, config_files
  from phijax.train import wandb_log

  where, arg = config_files.split_spec(spec)
  try:
    sweep = module.get_sweep(Helpers())
  except (ValueError, TypeError) as e:
    raise cli.UsageError(f"{where}: get_sweep: {e}") from None
  if not isinstance(sweep, list) or not sweep or not all(isinstance(a, dict) for a in sweep):
    raise cli.UsageError(f"{where}: get_sweep(h) must return a non-empty list of "
                         "override dicts, e.g. h.sweep('optim.lr', [1e-3, 3e-3])")
  names = aliases([k for a in sweep for k in _shown(a)], getattr(module, "ALIASES", None))
  seen = {}
  for overrides in sweep:
    name = arm_name(_shown(overrides), names)
    if name in seen:
      raise cli.UsageError(f"{where}: two arms have the same name {name!r} "
                           f"({seen[name]} and {overrides}); make their overrides differ")
    seen[name] = overrides
  arms = []
  for name, overrides in seen.items():
    needs = list(dict.fromkeys(r for v in overrides.values() for r in references(v)))
    for ref in needs:
      if ref not in seen:
        raise cli.UsageError(f"arm {name}: {{arm:{ref}}} names no arm of {where} (its arms: "
                             f"{', '.join(list(seen)[:6])}{', ...' if len(seen) > 6 else ''})")
      if ref == name:
        raise cli.UsageError(f"arm {name}: references itself ({{arm:{ref}}})")
    resolve = lambda v: ARM_REF.sub(lambda m: os.path.join(workdir, m.group(1)), v) if (
        isinstance(v, str)) else v
    arm_arg = overrides.get(CONFIG_KEY, arg)
    if arm_arg is not None and not isinstance(arm_arg, str):
      raise cli.UsageError(f"arm {name}: {CONFIG_KEY!r} is get_config's argument, a "
                           f"string; got {arm_arg!r}")
    flags = list(common) + [override_flag(k, resolve(v)) for k, v in overrides.items()
                            if k != CONFIG_KEY]
    try:
      config = config_files.apply_overrides(module.get_config(arm_arg), flags)
      wandb_log.check(config.train.wandb)
    except config_files.ConfigError as e:
      raise cli.UsageError(f"arm {name}: {e}") from None
    flags += wandb_flags(config, wandb_group(where, workdir), name)
    arm_spec = f"{where}:{arm_arg}" if CONFIG_KEY in overrides else None
    arms.append(Arm(name, _shown(overrides), flags, os.path.join(workdir, name),
                    spec=arm_spec, needs=needs))
  _check_cycles(arms, where)
  return arms


def wandb_group(experiment: str, workdir: str) -> str:
  """The sweep's W&B group: the experiment's name, and the sweep directory's when it
  differs (``seq_warmup``, ``seq_warmup-sw_small``), so two sweeps of one experiment
  stay apart."""
  stem = os.path.splitext(os.path.basename(experiment))[0]
  base = os.path.basename(os.path.normpath(workdir))
  return stem if base == stem else f"{stem}-{base}"


def wandb_flags(config, group: str, name: str) -> list[str]:
  """With W&B on for the arm (``train.wandb.project``, from the experiment, a
  ``--config`` override or ``--wandb-project``): group = the sweep and name = the arm,
  unless the config sets them; with W&B off, nothing."""
  wb = config.train.wandb
  if not wb.project:
    return []
  return ([f"--config.train.wandb.group={group}"] if not wb.group else []) + (
      [f"--config.train.wandb.name={name}"] if not wb.name else [])


# ------------------------------------------------------------------------ arm status

def read_status(arm_dir: str) -> dict | None:
  try:
    with open(os.path.join(arm_dir, STATUS_FILE)) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):  # none yet, or not an arm directory
    return None


def write_status(arm_dir: str, record: dict) -> None:
  """Atomically (a killed runner leaves the old file or the new one, never half)."""
  path = os.path.join(arm_dir, STATUS_FILE)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a zombie child of a killed runner is not running
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return True


def arm_state(arm_dir: str) -> tuple[str, dict]:
  """(done | running | failed | interrupted | pending, the status record)."""
  record = read_status(arm_dir) or {}
  state = record.get("state", "pending")
  if state == "running" and not _alive(record.get("pid")):
    state = "interrupted"
  return state, record


def has_final_row(arm_dir: str) -> bool:
  try:
    with open(os.path.join(arm_dir, "metrics.jsonl")) as f:
      return any('"final": true' in line for line in f)
  except FileNotFoundError:
    return False


def error_line(log_path: str) -> str:
  """The arm's one-line error: the last ``error:`` line of its log, else its last line."""
  try:
    with open(log_path, errors="replace") as f:
      lines = [l.strip() for l in f.readlines()[-200:] if l.strip()]
  except FileNotFoundError:
    return "no log"
  for line in reversed(lines):
    if "error:" in line.lower() or line.startswith(("stopping:", "Error", "RuntimeError")):
      return line
  return lines[-1] if lines else "no output"


# ---------------------------------------------------------------------- the runner

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
  return [sys.executable, "-m", "phijax.train", f"--config={arm.spec or spec}",
          f"--workdir={arm.workdir}", *arm.flags]


def _stamp() -> str:
  return time.strftime("%H:%M:%S")


def run_arms(spec: str, arms: list[Arm], parallel: int) -> dict[str, str]:
  """Runs the arms that are not finished, ``parallel`` at a time; returns each arm's
  final state."""
  from phijax.train.metrics import format_duration

  states, todo = {}, []
  for i, arm in enumerate(arms):
    state, record = arm_state(arm.workdir)
    if state == "done":
      print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: already finished, skipped",
            flush=True)
      states[arm.name] = "done"
    elif state == "running":
      print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: running in another process "
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
        print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: not started: "
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
        print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: {verb}"
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
        print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: {line}", flush=True)
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
  from phijax import cli
  from phijax.train.metrics import format_duration

  script = os.path.join(LAUNCH_DIR, f"{launcher}.py")
  if not os.path.isfile(script):
    raise cli.UsageError(f"--launcher={launcher} needs a phijax checkout: {script} is "
                         "not installed with the package")
  states, todo = {}, []
  for i, arm in enumerate(arms):
    state, record = arm_state(arm.workdir)
    if state in ("done", "running"):
      print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: "
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
  print(f"{_stamp()} sweep: {len(todo)} arm(s) to {' '.join(cmd)}", flush=True)
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
    print(f"{_stamp()} [{i + 1}/{len(arms)}] {arm.name}: {line}", flush=True)
  return states


def status_table(arms: list[Arm]) -> str:
  rows = []
  for arm in arms:
    state, record = arm_state(arm.workdir)
    rows.append((arm.name, state, f"{record.get('wall_s', 0):.0f}s" if record else "-",
                 record.get("error") or "" if state in ("failed", "interrupted") else ""))
  width = max(len(r[0]) for r in rows)
  lines = [f"{'arm':<{width}}  {'state':<11}  {'wall':>6}  error"]
  lines += [f"{n:<{width}}  {s:<11}  {w:>6}  {e}".rstrip() for n, s, w, e in rows]
  counts = {}
  for _, s, _, _ in rows:
    counts[s] = counts.get(s, 0) + 1
  lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  return "\n".join(lines)


def write_sweep_file(workdir: str, spec: str, arms: list[Arm], common: Sequence[str],
                     names: dict[str, str]) -> None:
  os.makedirs(workdir, exist_ok=True)
  # Paths relative to the sweep directory: a committed sweep.json names no machine.
  where, sep, arg = spec.partition(":")
  record = {"experiment": os.path.relpath(where, workdir) + sep + arg,
            "common_overrides": list(common), "aliases": names,
            "arms": [{"name": a.name, "overrides": a.overrides,
                      **({"needs": a.needs} if a.needs else {})} for a in arms]}
  tmp = os.path.join(workdir, SWEEP_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, os.path.join(workdir, SWEEP_FILE))


def _warn_stale_sweep_file(workdir: str, arms: list[Arm]) -> None:
  """Says which of ``arms`` the existing sweep.json does not list: the results table
  reads its arms from there, so theirs would be missing from it."""
  try:
    with open(os.path.join(workdir, SWEEP_FILE)) as f:
      listed = {a["name"] for a in json.load(f).get("arms", [])}
  except (OSError, ValueError):
    return
  new = [a.name for a in arms if a.name not in listed]
  if new:
    print(f"warning: {os.path.join(workdir, SWEEP_FILE)} (kept under --only) does not list "
          f"{len(new)} arm(s) of the experiment as it is now: {', '.join(new)}; the "
          "results table leaves them out until a run without --only rewrites it",
          file=sys.stderr, flush=True)


def _parser():
  from phijax import cli
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
  from phijax import cli

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
  arms = make_arms(spec, module, workdir, overrides)
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
  names = aliases([k for a in arms for k in a.overrides], getattr(module, "ALIASES", None))
  if not args.only:
    write_sweep_file(workdir, spec, arms, overrides, names)
  elif not os.path.exists(os.path.join(workdir, SWEEP_FILE)):
    all_arms = make_arms(spec, module, workdir, overrides)
    write_sweep_file(workdir, spec, all_arms, overrides, names)
  else:  # kept (a smoke --only run must not rewrite a full sweep's record), but said
    _warn_stale_sweep_file(workdir, arms)
  how = (f"{parallel} at a time" if args.launcher == "local" else
         f"one {args.launcher} job each")
  print(f"{_stamp()} sweep {os.path.basename(where)}: {len(arms)} arm(s), {how}, in "
        f"{workdir}", flush=True)
  start = time.time()
  if args.launcher == "local":
    states = run_arms(spec, arms, parallel)
  else:
    states = launch_arms(args.launcher, spec, arms, launcher_args)
  bad = {n: s for n, s in states.items() if s != "done"}
  from phijax.train.metrics import format_duration
  print(f"{_stamp()} sweep: {len(states) - len(bad)}/{len(states)} arm(s) finished in "
        f"{format_duration(time.time() - start)}"
        + (f"; not finished: {', '.join(f'{n} ({s})' for n, s in bad.items())}" if bad
           else ""), flush=True)
  if not args.no_results:
    from phijax.sweeps import results
    paths = results.write_results(workdir)
    print(f"results: {', '.join(paths)}", flush=True)
  return 1 if bad else 0


def run(argv=None):
  """Console entry point (``phijax-sweep``)."""
  from phijax import cli

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
