"""``provenance.json``: what produced a run, so a result can be traced and two results
compared only when they came from the same code, corpus and tokenizer.

One record per start of the run (a resume adds one): the phijax commit and whether
the checkout had uncommitted changes, the command line, the corpus (each data
source's fingerprint: its files' paths and sizes, as the tokenizer cache keys it),
the tokenizer (a hash of its model file), the versions of Python, jax, flax, optax,
orbax, grain and numpy, the devices, and when it started and ended. Written by
process 0. ``phijax.sweeps.provenance`` reads them for results.md.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys

import jax

FILE = "provenance.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy")


class Provenance:
  """Appends this start's record at ``on_start`` and its end at ``after_end``."""

  def on_start(self, run) -> None:
    if jax.process_index() != 0:
      return
    self.path = os.path.join(run.workdir, FILE)
    self.record = describe(run.config, run.tok)
    self.record["resumed_from_step"] = run.restored_step if run.restored_step >= 0 else None
    self._write(append=True)

  def after_end(self, run) -> None:
    if getattr(self, "record", None) is None:
      return
    self.record.update(ended=_now(), outcome=run.outcome, steps=run.step)
    self._write(append=False)

  def _write(self, append: bool) -> None:
    records = read(os.path.dirname(self.path))
    if append or not records:
      records.append(self.record)
    else:
      records[-1] = self.record
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      json.dump(records, f, indent=1)
    os.replace(tmp, self.path)


def read(workdir: str) -> list[dict]:
  """A run's records, oldest first ([] for a run without one, or an unreadable one)."""
  try:
    with open(os.path.join(workdir, FILE)) as f:
      records = json.load(f)
    return records if isinstance(records, list) else []
  except (OSError, ValueError):
    return []


def describe(config, tok) -> dict:
  """This process's record for a run of ``config`` with tokenizer ``tok``."""
  from importlib import metadata

  versions = {"python": sys.version.split()[0]}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  devices = jax.devices()
  commit, dirty, changed = git_state(paths=True)
  return {
      "started": _now(),
      "commit": commit,
      "dirty": dirty,
      "changed": changed,  # which files were uncommitted: "dirty" alone cannot be judged
      "command": command_line(),
      "corpus": corpus_fingerprints(config.data),
      "tokenizer": hashlib.sha256(tok.model_proto).hexdigest()[:16],
      "versions": versions,
      "device": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform}), "
                f"{jax.process_count()} process(es)",
  }


def corpus_fingerprints(cfg_data) -> dict:
  """``{source: fingerprint}`` of every source with weight > 0 or evaluated: a hash of
  what identifies its documents (``data.fingerprint.corpus_key``: the files' paths and
  sizes, or a generator's settings)."""
  from phijax.data import fingerprint, pipeline
  names = dict.fromkeys([*pipeline.source_weights(cfg_data),
                         *pipeline.eval_source_names(cfg_data)])
  out = {}
  for name in names:
    scfg = cfg_data.sources[name]
    try:
      _, key = fingerprint.corpus_key(cfg_data, [name])
    except Exception:  # a generated source: its settings are the corpus
      key = scfg.to_dict()
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    out[name] = f"{scfg.kind}:{hashlib.sha256(blob).hexdigest()[:16]}"
  return out


def git_state(paths: bool = False):
  """(commit, dirty) of the checkout phijax runs from; with ``paths``, also the paths
  with uncommitted changes (the first MAX_CHANGED). (None, None[, []]) when it is not a
  git checkout (an installed wheel) or git is missing."""
  import phijax
  root = os.path.dirname(os.path.dirname(os.path.abspath(phijax.__file__)))
  none = (None, None, []) if paths else (None, None)
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10)
    if commit.returncode:
      return none
    status = subprocess.run(["git", "-C", root, "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True,
                            timeout=10)
  except (OSError, subprocess.SubprocessError):
    return none
  # Committed experiment results are outputs, not inputs: a sweep writing its own
  # sweep.json into experiments/results/ does not make the code its arms run dirty.
  changed = [line[3:] for line in status.stdout.splitlines()
             if line.strip() and not line[3:].startswith(OUTPUTS)]
  if paths:
    return commit.stdout.strip(), bool(changed), changed[:MAX_CHANGED]
  return commit.stdout.strip(), bool(changed)


MAX_CHANGED = 40
OUTPUTS = "experiments/results/"


def command_line() -> str:
  """The command as typed: ``python -m phijax.train ...`` (or the console script); a
  run started from Python (``phijax.train.train``) records that process's argv."""
  import phijax
  argv = list(sys.argv) or [""]
  path = os.path.abspath(argv[0])
  package = os.path.dirname(os.path.abspath(phijax.__file__))
  if path.endswith(os.path.join("phijax", "train", "command.py")):
    argv[0] = "python -m phijax.train"
  elif path.startswith(package + os.sep) and path.endswith(".py"):
    # python -m phijax.X (a sweep's step arm, say): the module it ran
    module = os.path.relpath(path[:-3], os.path.dirname(package)).replace(os.sep, ".")
    argv[0] = f"python -m {module.removesuffix('.__main__')}"
  elif os.path.basename(argv[0]) != "phijax-train":
    argv[0] = f"python {shlex.quote(argv[0])}"
    return " ".join(argv[:1] + [shlex.quote(a) for a in argv[1:]]) + " (train() called in it)"
  return " ".join(argv[:1] + [shlex.quote(a) for a in argv[1:]])


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
