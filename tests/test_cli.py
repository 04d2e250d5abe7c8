"""Every command's --help lists its flags, and bad input is one line naming it, exit 2.

Commands run from a temporary directory (not the checkout), the way an installed
user runs them; configs resolve from the installed package.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from phijax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (command, flags its --help must list)
COMMANDS = {
    "train": (["-m", "phijax.train"], ["--config", "--workdir", "--verbose"]),
    "convert": (["-m", "phijax.convert"], ["--run", "--hf_dir", "--out", "--to_hf"]),
    "curriculum_plot": (["-m", "phijax.curriculum_plot"], ["--config", "--out"]),
    "tokenizer": (["-m", "phijax.data.tokenizer"], ["--input", "--vocab_size", "--out"]),
    "sweep": (["-m", "phijax.sweep"], ["--workdir", "--parallel", "--dry-run", "--status",
                                        "--only", "--launcher"]),
    "results": (["-m", "phijax.results"], ["DIR"]),
}
CONSOLE_SCRIPTS = {"phijax-train": "--workdir", "phijax-convert": "--to_hf",
                   "phijax-plot-curriculum": "--out", "phijax-sweep": "--dry-run",
                   "phijax-results": "DIR"}


def run(args, cwd, exe=(sys.executable,)):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, env=env,
                        timeout=300)


def assert_one_line_error(proc, *expected):
  assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert "error:" in lines[0]
  for e in expected:
    assert e in lines[0], lines[0]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_flags(name, tmp_path):
  args, flags = COMMANDS[name]
  proc = run([*args, "--help"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for flag in flags:
    assert flag in proc.stdout, (flag, proc.stdout)


def test_help_with_a_config_lists_its_tree(tmp_path):
  """--help with --config: every field with its value (overrides applied), phijax's
  default where it differs, and its meaning from the comment beside it in the code."""
  proc = run(["-m", "phijax.train", "--config=tiny:runlocal", "--config.optim.lr=0.5",
              "--help"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert "--workdir" in out and "config tiny:runlocal: every field" in out
  lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
  assert "0.5  [default 0.001]  # peak learning rate" in lines["optim.lr"]
  assert "20  [default 1000]  # optimizer steps" in lines["train.steps"]  # runlocal
  assert "# \"phi\": phi-1/1.5/2 (parallel block); \"phi3\": phi-3/phi-4" in lines["model.arch"]
  assert "[default" not in lines["train.seed"] and "# initialisation" in lines["train.seed"]
  assert "# share of training *tokens*" in lines["data.sources.stdlib.weight"]
  assert "# sequence-length warmup" in lines["curriculum.seq_warmup.enabled"]
  bad = run(["-m", "phijax.train", "--config=tiny", "--config.train.stepz=1", "--help"],
            tmp_path)
  assert_one_line_error(bad, "train.stepz")


def test_every_default_field_has_a_meaning():
  """A field added to phijax/config.py (or ModelConfig, data or curriculum defaults)
  without a comment saying what it does fails here: --help would show it bare."""
  from phijax import config
  meanings = config.field_meanings()
  bare = []

  def walk(node, path):
    for key in node.keys():
      where = f"{path}.{key}" if path else key
      if isinstance(node[key], type(node)):
        walk(node[key], where)
      elif where not in meanings and config_files._source_field(where) not in meanings:
        bare.append(where)

  walk(config.default(), "")
  assert bare == []
  assert config._one_line("A first. Then more.") == "A first."
  assert config._one_line("Hu et al. 2024 say so. More.") == "Hu et al. 2024 say so."


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_console_script_help_lists_flags(script, tmp_path):
  exe = shutil.which(script)
  if exe is None:
    pytest.skip(f"{script} not on PATH (the package is not pip-installed)")
  proc = run(["--help"], tmp_path, exe=(exe,))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert CONSOLE_SCRIPTS[script] in proc.stdout, proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/tiny.py:bogusarg"], ["'bogusarg'", "'runlocal'"]),
    (["--config=tiny:bogusarg"], ["'bogusarg'"]),
    (["--config=no/such/config.py"], ["no/such/config.py", "does not exist"]),
    (["--config=nosuchname"], ["nosuchname", "tiny"]),
    (["--config=tiny", "--config.train.stepz=3"], ["train.stepz", "train.steps"]),
    (["--config=tiny", "--config.optim.lr=fast"], ["config.optim.lr", "float", "'fast'"]),
    (["--config=tiny", "--config.train.steps"], ["--config.train.steps", "=VALUE"]),
    (["--config=tiny", "--bogus-flag"], ["--bogus-flag"]),
])
def test_train_bad_config_input(tmp_path, args, expected):
  proc = run(["-m", "phijax.train", f"--workdir={tmp_path / 'run'}", *args], tmp_path)
  assert_one_line_error(proc, *expected)


def test_train_workdir_that_is_a_file(tmp_path):
  f = tmp_path / "afile"
  f.write_text("x")
  proc = run(["-m", "phijax.train", "--config=tiny:runlocal", f"--workdir={f}"], tmp_path)
  assert_one_line_error(proc, "afile", "not a directory")


def test_train_missing_required_flag(tmp_path):
  assert_one_line_error(run(["-m", "phijax.train", "--config=tiny"], tmp_path), "--workdir")


def test_curriculum_plot_bad_value(tmp_path):
  proc = run(["-m", "phijax.curriculum_plot", "--config=configs/tiny.py", "--out=plan.png",
              "--config.curriculum.seq_warmup.enabled=true",
              "--config.curriculum.seq_warmup.start=100000"], tmp_path)
  assert_one_line_error(proc, "seq_warmup.start")


def test_user_config_builds_on_a_packaged_one(tmp_path):
  """A config of one's own, outside the checkout, importing a packaged config; it
  plots from the temp directory (no checkout on the path)."""
  (tmp_path / "mine.py").write_text(textwrap.dedent('''
      """My run: tiny with a longer context."""
      from phijax import config as base
      from phijax.configs import tiny

      def get_config(arg=None):
        c = tiny.get_config()
        c.data.seq_len = 512
        c.train.steps = 123
        return base.finish(c, arg)
      '''))
  proc = run(["-m", "phijax.curriculum_plot", "--config=mine.py:runlocal",
              "--out=plan.png"], tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (tmp_path / "plan.png").exists()
  config = config_files.load(str(tmp_path / "mine.py"), ["--config.train.steps=7"])
  assert config.data.seq_len == 512 and config.train.steps == 7
  with pytest.raises(config_files.ConfigError, match="'runlocal'"):
    config_files.load(str(tmp_path / "mine.py") + ":fast")


def test_a_misspelt_field_in_a_config_file_is_an_error(tmp_path):
  (tmp_path / "typo.py").write_text(textwrap.dedent('''
      from phijax import config as base
      from phijax.configs import tiny

      def get_config(arg=None):
        c = tiny.get_config()
        c.train.stepz = 800
        return base.finish(c, arg)
      '''))
  with pytest.raises(config_files.ConfigError, match="'train.stepz'.*train.steps"):
    config_files.load(str(tmp_path / "typo.py"))


def test_library_errors_are_not_dressed_as_bad_input(tmp_path):
  """A ValueError from inside a library (not a phijax check) keeps its traceback and
  exits 1: it is a bug to report, not a usage error."""
  from phijax import cli

  def boom(args):
    import numpy as np
    np.reshape(np.zeros(3), (2, 2))  # numpy raises ValueError

  parser = cli.ArgumentParser(prog="t")
  with pytest.raises(SystemExit) as e:
    cli.main(parser, boom, [])
  assert e.value.code == 1

  def bad(args):
    raise cli.UsageError("--x is wrong")

  with pytest.raises(SystemExit) as e:
    cli.main(parser, bad, [])
  assert e.value.code == 2


def test_configs_resolve_by_name_and_path():
  by_name = config_files.load("tiny:runlocal")
  by_path = config_files.load(os.path.join(ROOT, "configs", "tiny.py:runlocal"))
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.train.steps == 20 and by_name.is_locked
  assert "tiny" in config_files.packaged_names()


def test_overrides_are_typed_and_checked():
  c = config_files.load("tiny", ["--config.train.steps=7", "--config.optim.lr=2e-3",
                                 "--config.model.sliding_window=16",
                                 "--config.train.progress=false"])
  assert (c.train.steps, c.optim.lr, c.model.sliding_window, c.train.progress) == (
      7, 2e-3, 16, False)
  with pytest.raises(config_files.ConfigError, match="did you mean train"):
    config_files.load("tiny", ["--config.trian.steps=3"])
  with pytest.raises(config_files.ConfigError, match="takes an int"):
    config_files.load("tiny", ["--config.train.steps=1.5x"])
  with pytest.raises(config_files.ConfigError, match="cannot be set from the command"):
    config_files.load("tiny", ["--config.model.rope_scaling={}"])
