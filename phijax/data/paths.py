"""Which files a data source reads: the file its ``path`` names, the files of a
directory, or the files a glob (``src/**/*.py``) matches, less the ``exclude``
patterns. Paths that do not exist, empty directories and patterns that match nothing
are a ``DataError`` naming the config field to fix.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib

from phijax.data.errors import DataError


def split_glob(path: str) -> tuple[str, str]:
  """``(root, pattern)`` of a path that holds a glob: ``src/**/*.py`` -> ``("src",
  "**/*.py")``. A path without ``*``, ``?`` or ``[`` gives ``(path, "")``. Document
  keys (and so the held-out split) are relative to the root."""
  parts = pathlib.PurePath(os.path.expanduser(path)).parts
  for i, part in enumerate(parts):
    if any(c in part for c in "*?["):
      return str(pathlib.PurePath(*parts[:i])) if i else ".", "/".join(parts[i:])
  return path, ""


def _patterns(text: str) -> list[str]:
  return [t.strip() for t in str(text or "").split(",") if t.strip()]


def select_files(name: str, root, files, include: str = "", exclude: str = ""):
  """``files`` (under ``root``) whose root-relative POSIX paths match one of the
  comma-separated ``fnmatch`` patterns ``include`` ("" keeps all) and none of
  ``exclude`` (``*`` crosses ``/``: ``email/*`` is the whole ``email`` package). A
  pattern that matches no file is a ``DataError``: a misspelt package would otherwise
  change the corpus silently."""
  rel = [pathlib.Path(f).relative_to(root).as_posix() for f in files]
  keep_pats, drop_pats = _patterns(include), _patterns(exclude)
  for field, pats in (("glob", keep_pats), ("exclude", drop_pats)):
    for pat in pats:
      if not any(fnmatch.fnmatchcase(r, pat) for r in rel):
        raise DataError(f"data source {name!r}: config.data.sources.{name}.{field} "
                        f"pattern {pat!r} matches no file under {str(root)!r}; patterns "
                        "are fnmatch over paths relative to it, e.g. 'email/*'")
  hits = lambda r, pats: any(fnmatch.fnmatchcase(r, p) for p in pats)  # noqa: E731
  out = [f for f, r in zip(files, rel)
         if (not keep_pats or hits(r, keep_pats)) and not hits(r, drop_pats)]
  if not out:
    raise DataError(f"data source {name!r}: glob {include!r} and exclude {exclude!r} "
                    f"leave no file under {str(root)!r}")
  return out


def resolve_files(name: str, kind: str, path: str, glob: str, exclude: str = "", *,
                  default_glob: str):
  """``(root, files)``: the file ``path``, the files under directory ``path`` that
  ``glob`` (else ``default_glob``, the kind's) matches, or the files a glob ``path``
  matches."""
  field = f"config.data.sources.{name}.path"
  if not path:
    raise DataError(f"data source {name!r} ({kind}) has no path; set {field} to a "
                    "directory, a file or a glob such as 'src/**/*.py'")
  root, pattern = split_glob(path)
  if pattern:
    if glob:
      raise DataError(f"data source {name!r} ({kind}): path {path!r} is a glob and "
                      f"config.data.sources.{name}.glob is {glob!r} too; give the "
                      "pattern in one of them")
    glob = pattern
    p = pathlib.Path(root)
    if not p.is_dir():
      raise DataError(f"data source {name!r} ({kind}): {root!r}, the directory of the "
                      f"glob {path!r}, does not exist; set {field}")
  else:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
      raise DataError(f"data source {name!r} ({kind}): path {path!r} does not exist; "
                      f"set {field} to an existing file, directory or glob")
    if p.is_file():
      return p.parent, [p]
  glob = glob or default_glob
  files = sorted(f for f in p.glob(glob) if f.is_file() and not any(
      part.startswith(".") for part in f.relative_to(p).parts))
  if not files:
    raise DataError(f"data source {name!r} ({kind}): directory {str(p)!r} has no files "
                    f"matching {glob!r}; point {field} at a directory with data or "
                    "change the pattern")
  return p, select_files(name, p, files, exclude=exclude) if exclude else files


def detect_kind(files) -> str:
  """The kind an ``auto`` source reads its files as: ``jsonl`` if every file ends in
  ``.jsonl``, else ``text`` (one document per file)."""
  return "jsonl" if all(str(f).endswith(".jsonl") for f in files) else "text"
