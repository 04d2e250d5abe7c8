"""Every named config loads (full and :runlocal), validates, and documents its command."""

import glob
import importlib.util
import os

import pytest

from phijax import curriculum
from phijax.model_config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _module(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


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
