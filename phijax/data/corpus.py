"""The built-in corpus: the running interpreter's standard library source.

Tests and site-packages are left out; documents are split into train and held-out
by a stable hash of their relative path, so the split is the same on every machine
and every Python process (``hash()`` is salted per process, sha256 is not).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sysconfig

# Directory names never read as stdlib source: the test suites (the test package,
# idlelib/idle_test, lib2to3/tests, ...), third-party installs and caches.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages",
                           "dist-packages", "__pycache__"})


def stdlib_root() -> pathlib.Path:
  return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: pathlib.Path | None = None) -> list[pathlib.Path]:
  """Relative paths of the stdlib's ``.py`` files, sorted, tests excluded."""
  root = stdlib_root() if root is None else pathlib.Path(root)
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    # Pruned in place: os.walk never descends into site-packages (large) or tests.
    dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]
    rel_dir = pathlib.Path(dirpath).relative_to(root)
    files.extend(rel_dir / name for name in filenames
                 if name.endswith(".py") and os.path.isfile(os.path.join(dirpath, name)))
  return sorted(files)


def heldout_score(key: str) -> float:
  """A stable number in [0, 1) for a document key (its relative path)."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(key: str, fraction: float) -> bool:
  return heldout_score(key) < fraction
