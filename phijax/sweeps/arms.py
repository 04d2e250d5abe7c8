"""An experiment file and its arms: what a sweep runs, named and checked before
anything runs, and ``sweep.json``, the record of them that the results read.

An experiment file has ``get_config(arg=None)`` and ``get_sweep(h)``, which returns
the arms: override dicts built with ``Helpers`` (``h.sweep``, ``h.product``,
``h.zip``, ``h.seeds``); see ``phijax.sweeps.command`` for the rest of the format.
An arm's name shows its overrides by short field names (``aliases``):
``lr=0.03,seq_warmup=on,seed=1``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any, Iterable, Sequence

from phijax import cli, config_files
from phijax.train import wandb_log

SWEEP_FILE = "sweep.json"  # in the sweep directory: the experiment and its arms
SEED_KEY = "train.seed"
DATA_SEED_KEY = "train.data_seed"
CONFIG_KEY = "config"  # an arm's argument to the experiment's get_config(arg)
# The module an arm runs (python -m PROGRAM --config=... --workdir=ARM --config.k=v):
# phijax.train, or another program that keeps the run-directory contract (metrics.jsonl
# with a final row when done, exit 0), such as phijax.curate.score_run, a step other
# arms read through {arm:NAME}.
PROGRAM_KEY, DEFAULT_PROGRAM = "program", "phijax.train"
ARM_REF = re.compile(r"\{arm:([^{}]*)\}")  # another arm's run directory


# --------------------------------------------------------------------- arms and names

class Helpers:
  """What ``get_sweep(h)`` builds arms with; an arm is a dict ``{"optim.lr": 3e-2}``."""

  @staticmethod
  def sweep(key: str, values: Iterable[Any]) -> list[dict]:
    """One arm per value of ``key``."""
    return [{key: v} for v in values]

  @staticmethod
  def seeds(n_or_seeds: int | Iterable[int], vary: str = "both") -> list[dict]:
    """Seeds 0..n-1 (or the given ones) of what ``vary`` says: ``"both"``
    (``train.seed``, which the data order follows), ``"init"`` (``train.seed``, the
    data order fixed by ``train.data_seed=0``) or ``"data"`` (``train.data_seed``
    only, the initialisation fixed)."""
    seeds = range(n_or_seeds) if isinstance(n_or_seeds, int) else n_or_seeds
    if vary == "both":
      return Helpers.sweep(SEED_KEY, seeds)
    if vary == "init":
      return [{SEED_KEY: s, DATA_SEED_KEY: 0} for s in seeds]
    if vary == "data":
      return Helpers.sweep(DATA_SEED_KEY, seeds)
    raise ValueError(f"h.seeds(vary={vary!r}): choose 'both', 'init' or 'data'")

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
               spec: str | None = None, needs: Sequence[str] = (),
               program: str = DEFAULT_PROGRAM):
    self.name, self.overrides, self.flags, self.workdir = name, overrides, flags, workdir
    self.program = program
    self.spec = spec  # the experiment with the arm's own config argument, if it has one
    self.needs = list(needs)  # names of the arms it references ({arm:NAME})


def references(value: Any) -> list[str]:
  """The arm names a value references (``"{arm:NAME}/tokenizer.model"`` -> [NAME])."""
  return ARM_REF.findall(value) if isinstance(value, str) else []


def _shown(overrides: dict) -> dict:
  """What names an arm and makes its table columns: overrides without references (nor
  the program: a program's arm is told apart by its config argument)."""
  return {k: v for k, v in overrides.items() if not references(v) and k != PROGRAM_KEY}


def _check_cycles(arms: list["Arm"], where: str) -> None:
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


# ---------------------------------------------------------------------- the experiment

def load_experiment(spec: str):
  """The experiment module; one-line errors for what it lacks."""
  where, _ = config_files.split_spec(spec)
  try:
    module = config_files._load_module(where)  # pylint: disable=protected-access
  except config_files.ConfigError as e:
    raise cli.UsageError(str(e)) from None
  for fn, sig in (("get_config", "get_config(arg=None)"), ("get_sweep", "get_sweep(h)")):
    if not callable(getattr(module, fn, None)):
      raise cli.UsageError(f"experiment {where} has no {sig} function (an experiment "
                           "file defines get_config and get_sweep; see python -m "
                           "phijax.sweep --help)")
  return module


def _program(name: str, program) -> str:
  import importlib.util
  try:
    found = isinstance(program, str) and importlib.util.find_spec(program) is not None
  except (ImportError, ValueError):
    found = False
  if not found:
    raise cli.UsageError(f"arm {name}: {PROGRAM_KEY}={program!r} is no module this Python "
                         f"can run (python -m MODULE); the default is {DEFAULT_PROGRAM}")
  return program


def make_arms(spec: str, module, workdir: str, common: Sequence[str] = ()) -> list[Arm]:
  """The experiment's arms, every one's config loaded and checked (unknown keys, types,
  duplicate names) before anything runs."""
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
    program = _program(name, overrides.get(PROGRAM_KEY, DEFAULT_PROGRAM))
    flags = list(common) + [override_flag(k, resolve(v)) for k, v in overrides.items()
                            if k not in (CONFIG_KEY, PROGRAM_KEY)]
    try:
      config = config_files.apply_overrides(module.get_config(arm_arg), flags)
      wandb_log.check(config.train.wandb)
    except config_files.ConfigError as e:
      raise cli.UsageError(f"arm {name}: {e}") from None
    flags += wandb_flags(config, wandb_group(where, workdir), name)
    arm_spec = f"{where}:{arm_arg}" if CONFIG_KEY in overrides else None
    arms.append(Arm(name, _shown(overrides), flags, os.path.join(workdir, name),
                    spec=arm_spec, needs=needs, program=program))
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


# -------------------------------------------------------------------------- sweep.json

def write_sweep_file(workdir: str, spec: str, arms: list[Arm], common: Sequence[str],
                     names: dict[str, str]) -> None:
  """What the results read: the experiment, the overrides common to every arm, the
  short field names and each arm's name and overrides."""
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


def read_sweep_file(sweep_dir: str) -> dict:
  """The sweep directory's ``sweep.json``, or {} when it has none."""
  path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
