"""Reading the files a user hands us (model and tokenizer directories, configs,
checkpoints): a corrupt or truncated file is one ``CorruptFile`` error naming the
file and what it should have been, and a readable one that phijax rejects a
``BadFile`` naming it too; every command prints either as one line and exit 2
(``phijax.cli``), never a library's traceback.

    with files.reading(path, "a safetensors weights file"):
      ... parse it with any library ...
    hf = files.read_json(path, "a Hugging Face model config")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

from phijax import cli


class BadFile(ValueError):
  """A file that exists but cannot be used: the message names it and says why."""


class CorruptFile(BadFile):
  """A file that exists but cannot be parsed as what it should be."""


@contextlib.contextmanager
def reading(path, what: str):
  """Turns any error a library raises while the block parses ``path`` into a
  ``CorruptFile`` naming ``path`` and ``what`` it should be. phijax's own bad-input
  errors pass through, prefixed with ``path`` when they do not name the file; the OS
  refusing (permissions, a directory) is a ``BadFile`` saying so; interrupts,
  ``MemoryError`` and ``ImportError`` pass through unchanged."""
  drop_late_callbacks()  # installed first: they can fire before the error reaches us
  try:
    yield
  except BadFile:
    raise
  except cli.BAD_INPUT as e:
    if cli.raised_by_phijax(e) and not isinstance(e, UnicodeDecodeError):
      if os.path.basename(os.fspath(path)) in str(e):
        raise  # ours, and it names the file
      raise BadFile(f"{os.fspath(path)}: {e}") from e
    if isinstance(e, OSError) and e.errno is not None:  # the OS refused, in a library
      raise BadFile(f"{os.fspath(path)}: {e.strerror or e}") from e
    raise corrupt(path, what, e) from e
  except (MemoryError, ImportError):
    raise  # not the file's fault
  except OSError as e:
    if e.errno is not None:  # the OS refused (permission, a directory, no space)
      raise BadFile(f"{os.fspath(path)}: {e.strerror or e}") from e
    raise corrupt(path, what, e) from e
  except Exception as e:  # a library's parse error: any type (RuntimeError, KeyError, ...)
    raise corrupt(path, what, e) from e


def corrupt(path, what: str, e: BaseException) -> CorruptFile:
  """The one-line error for ``path``, which is not ``what`` it should be because of
  ``e`` (its type and first line, shortened)."""
  detail = (str(e).strip().splitlines() or [""])[0]
  if len(detail) > 160:
    detail = detail[:157] + "..."
  why = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
  return CorruptFile(f"{os.fspath(path)} is corrupt or truncated: it is not {what} "
                     f"({why}); replace it with an intact copy")


def read_json(path, what: str):
  """The JSON value in ``path`` (UTF-8). A missing file is ``FileNotFoundError``; one
  that is not JSON is ``CorruptFile``."""
  with open(path, "rb") as f:
    raw = f.read()
  with reading(path, what):
    return json.loads(raw.decode("utf-8"))


def read_json_object(path, what: str) -> dict:
  """``read_json`` that must give a JSON object (a config file)."""
  value = read_json(path, what)
  if not isinstance(value, dict):
    raise CorruptFile(f"{os.fspath(path)} is not {what}: it holds a JSON "
                      f"{type(value).__name__}, not an object")
  return value



def drop_late_callbacks() -> None:
  """When a read fails, reads the library started alongside it may still finish and
  call back into its event loop, which is closed by then: a failed orbax restore
  leaves tensorstore printing an "Event loop is closed" traceback per abandoned array
  (``sys.unraisablehook``) and asyncio logging "exception was never retrieved" for
  the others when they are collected. Those, and only those, are dropped from now on;
  called before such a read (the callbacks can come before its error does)."""
  previous = sys.unraisablehook
  if getattr(previous, "_phijax_drops_closed_loop", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    previous(unraisable)

  hook._phijax_drops_closed_loop = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_not_an_abandoned_read)


# What tensorstore's errors say: an unretrieved one of these is an abandoned read.
_READ_ERRORS = ("OCDBT", "zarr", "tensorstore", "DATA_LOSS", "OUT_OF_RANGE",
                "FAILED_PRECONDITION")


def _not_an_abandoned_read(record) -> bool:
  """False (drop it) only for asyncio's "exception was never retrieved" about a
  tensorstore read error; every other asyncio record passes."""
  try:
    text = record.getMessage()
  except Exception:  # a record whose arguments do not format: keep it
    return True
  return not ("exception was never retrieved" in text
              and any(word in text for word in _READ_ERRORS))


def stamp(root, paths) -> str:
  """What identifies a set of files without reading them: sha256 over each file's path
  relative to ``root``, size and modification time (an edit that keeps a file's size
  still changes it). Corpus keys, quality-report caches and model stamps use it."""
  import hashlib
  import pathlib
  ids = []
  for f in paths:
    st = pathlib.Path(f).stat()
    ids.append(f"{pathlib.Path(f).relative_to(root).as_posix()}:{st.st_size}:"
               f"{st.st_mtime_ns}")
  return hashlib.sha256("\n".join(ids).encode()).hexdigest()
