"""Optional Weights & Biases logging: a sink ``metrics.Writer`` fans its rows out to.

Off unless ``train.wandb.project`` is set (TensorBoard and ``metrics.jsonl`` are always
written; nothing here needs an account). When on, process 0 opens one W&B run per run
directory with the resolved config (what ``config.json`` holds) and logs every row the
run writes to ``metrics.jsonl``, at the same step and under the same names. The W&B
run id is kept in ``WORKDIR/wandb_id``, so rerunning the command (a resume) continues
the same W&B run; W&B's own files go to ``WORKDIR/wandb/``.

``train.wandb.mode`` is W&B's: ``online``, ``offline`` (sync later with ``wandb sync``)
or ``disabled``; empty leaves it to W&B (the ``WANDB_MODE`` environment variable, else
online). The extra installs it: ``pip install 'phijax[wandb]'``.
"""

from __future__ import annotations

import json
import os
import secrets
import string

from phijax.config_files import ConfigError

ID_FILE = "wandb_id"
MODES = ("online", "offline", "disabled", "shared")


def enabled(wb) -> bool:
  """``wb`` is ``config.train.wandb``; an empty project means off."""
  return bool(wb.project)


def check(wb) -> None:
  """Fails at start-up (before anything is built) when W&B is asked for but cannot run."""
  if not enabled(wb):
    return
  if wb.mode and wb.mode not in MODES:
    raise ConfigError(f"train.wandb.mode={wb.mode!r} is not a W&B mode; use one of "
                      f"{', '.join(MODES)}, or leave it empty for W&B's default")
  _import_wandb()


def _import_wandb():
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError("train.wandb.project is set but wandb is not installed: "
                      "pip install 'phijax[wandb]'") from None
  return wandb


def sinks(config, workdir: str) -> list:
  """The sinks a run's ``metrics.Writer`` gets: a ``Sink`` on process 0 when
  ``train.wandb.project`` is set, else none (other processes log nothing)."""
  import jax  # pylint: disable=import-outside-toplevel
  if not enabled(config.train.wandb) or jax.process_index() != 0:
    return []
  return [Sink(config, workdir)]


def run_id(workdir: str) -> str:
  """This run directory's W&B run id: made once, then read back on every resume."""
  path = os.path.join(workdir, ID_FILE)
  try:
    with open(path) as f:
      existing = f.read().strip()
    if existing:
      return existing
  except FileNotFoundError:
    pass
  alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet and length
  new = "".join(secrets.choice(alphabet) for _ in range(8))
  with open(f"{path}.tmp", "w") as f:
    f.write(new + "\n")
  os.replace(f"{path}.tmp", path)
  return new


class Sink:
  """One W&B run for one run directory; ``write`` takes what ``metrics.Writer`` writes."""

  def __init__(self, config, workdir: str):
    wandb = _import_wandb()
    wb = config.train.wandb
    try:
      self.run = wandb.init(
          project=wb.project, entity=wb.entity or None, group=wb.group or None,
          name=wb.name or os.path.basename(os.path.abspath(workdir)),
          tags=[t.strip() for t in wb.tags.split(",") if t.strip()] or None,
          config=json.loads(config.to_json_best_effort()),  # as config.json has it
          dir=workdir, id=run_id(workdir), resume="allow", mode=wb.mode or None)
    except wandb.errors.Error as e:  # no login, no network, a bad entity: one line
      raise ConfigError(f"W&B could not start the run: {' '.join(str(e).split())} "
                        "Or log offline with --config.train.wandb.mode=offline and "
                        "upload later with `wandb sync`") from None

  def write(self, step: int, row: dict) -> None:
    # Rows of one step (training, then the eval at that step) merge into one W&B row.
    self.run.log(dict(row), step=int(step))

  def close(self) -> None:
    self.run.finish()

