"""Every named config loads (full and :runlocal), validates, and documents its command."""

import glob
import importlib
import os

import pytest

from phijax import config_files
from phijax.train import curriculum
from phijax.model.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


def _module(path):
  return importlib.import_module(f"phijax.configs.{os.path.basename(path)[:-3]}")


def test_every_config_file_is_packaged():
  assert config_files.packaged_names() == sorted(
      os.path.basename(p)[:-3] for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_unknown_config_argument_is_an_error(path):
  with pytest.raises(config_files.ConfigError, match="runlocal"):
    _module(path).get_config("bogusarg")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_loads_and_validates(path, arg):
  config = _module(path).get_config(arg)
  ModelConfig.from_dict(config.model)
  cur = curriculum.Curriculum(config)
  if arg == "runlocal":  # a CPU smoke run: small and short
    assert config.model.hidden_size <= 256 and cur.total_steps <= 1000


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_docstring_gives_the_command(path):
  doc = _module(path).__doc__
  name = os.path.basename(path)
  assert f"python -m phijax.train --config=configs/{name}" in doc


def test_tiny_is_the_speedruns_winner_on_the_small_phi():
  """configs/tiny.py's default run is experiments/cpu_speedrun.py's winning recipe (all
  but the length of training and its evaluations and checkpoints, which the speedrun's
  arms set from their time budget), and ``small_phi`` is the speedrun's ``old``."""
  speedrun = config_files._load_module(  # pylint: disable=protected-access
      os.path.join(ROOT, "experiments", "cpu_speedrun.py"))
  tiny = _module(os.path.join(ROOT, "configs", "tiny.py"))
  (winner,) = speedrun.FINALISTS

  def recipe(c):
    d = c.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in (
        "steps", "eval_every", "save_every", "save_every_minutes", "samples")}
    return d

  assert recipe(tiny.get_config()) == recipe(speedrun.get_config(winner))
  assert recipe(tiny.small_phi()) == recipe(speedrun.get_config("old"))
  assert recipe(tiny.get_config()) != recipe(tiny.small_phi())
