"""What the launchers share: splitting ``LAUNCHER_ARGS -- COMMAND`` and checking the
command before anything starts. Launchers only start processes; the training reads
nothing from them beyond what ``jax.distributed.initialize()`` reads (and
``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` from launch/local.py, see phijax/train/distributed.py).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python launch/x.py` from a checkout that is not installed
  sys.path.insert(0, ROOT)

from phijax import cli  # noqa: E402


def split_argv(argv=None):
  """``[launcher args] -- command...`` -> (launcher args, command)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


def workdir_of(command) -> str | None:
  """The ``--workdir`` a phijax command was given (``--workdir=D`` or ``--workdir D``)."""
  for i, word in enumerate(command):
    if word.startswith("--workdir="):
      return word.split("=", 1)[1] or None
    if word == "--workdir" and i + 1 < len(command):
      return command[i + 1]
  return None


def check_command(command, prog_usage: str) -> str:
  """The command's workdir; a missing command or ``--workdir`` is a UsageError."""
  if not command:
    raise cli.UsageError(f"no command to run: write {prog_usage} -- python -m "
                         "phijax.train --config=... --workdir=DIR")
  workdir = workdir_of(command)
  if not workdir:
    raise cli.UsageError(f"the command has no --workdir=DIR ({shlex.join(command)}); "
                         "every process must write into one shared run directory")
  return workdir


def quote(command) -> str:
  return shlex.join(command)


def read_commands(path: str, prog_usage: str) -> list[dict]:
  """``--commands`` FILE (a sweep's ``launch_arms.json``): ``[{"name", "command": [...],
  "log": PATH or null}, ...]``, each command checked."""
  try:
    with open(path) as f:
      entries = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise cli.UsageError(f"--commands={path}: {e}") from None
  if not isinstance(entries, list) or not entries or not all(
      isinstance(e, dict) and isinstance(e.get("command"), list) for e in entries):
    raise cli.UsageError(f"--commands={path}: expected a non-empty JSON list of "
                         '{"command": [...], "log": PATH}')
  for e in entries:
    check_command(e["command"], prog_usage)
  return entries
