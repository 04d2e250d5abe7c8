"""The docs that users copy from stay true: CI runs the README's test line verbatim,
and nothing in the repository names a path outside it."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quickstart_lines():
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  block = re.search(r"## Quickstart\s+```bash\n(.*?)```", readme, re.S)
  assert block, "README has no Quickstart bash block"
  return [l for l in block.group(1).splitlines() if l.strip()]


def test_quickstart_is_two_one_line_commands():
  lines = quickstart_lines()
  assert len(lines) == 2, lines
  assert "phijax.train --config=configs/tiny.py" in lines[0]
  assert "pytest tests" in lines[1]


def test_ci_runs_the_readme_test_line():
  script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
  assert quickstart_lines()[1] in script, "edit .ci/run and the README's Quickstart together"


def test_cpu_torch_first():
  """The test line installs a CPU-only torch before the hf extra can pull a CUDA one."""
  line = quickstart_lines()[1]
  assert line.index("download.pytorch.org/whl/cpu") < line.index(".[test,hf]")


def test_no_machine_paths_in_tracked_files():
  files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
  if files.returncode != 0:
    return  # not a git checkout (an sdist): nothing to scan
  # Paths of the machine the repository sits on: the checkout itself, the folder beside
  # it that the developers' notes live in, the home directory; and the relative way to
  # that folder. Derived here, not spelled out, so this file names no machine's path.
  parent = os.path.dirname(ROOT)
  machine_paths = {ROOT + os.sep, os.path.join(parent, "shared"), os.path.join("..", "shared"),
                   os.path.expanduser("~") + os.sep}
  bad = []
  for name in files.stdout.splitlines():
    if name.endswith((".png", ".ipynb")):
      continue
    try:
      text = open(os.path.join(ROOT, name), encoding="utf-8").read()
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
      continue
    for pattern in machine_paths:
      if pattern in text:
        bad.append(f"{name}: {pattern}")
  assert not bad, bad
