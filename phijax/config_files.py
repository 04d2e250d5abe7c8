"""Finding a config by name or path, checking its ``:arg``, applying overrides.

``--config`` accepts:

- a packaged name: ``tiny``, ``tiny:runlocal``, ``phi2`` (the files in the repository's
  ``configs/``, installed as the package ``phijax.configs``, so they resolve from any
  directory once phijax is installed);
- a path to a ``.py`` file with ``get_config(arg=None)``: ``configs/tiny.py:runlocal``,
  ``my_configs/run7.py``. ``configs/NAME.py`` names the packaged file when no such file
  exists relative to the current directory, so commands copied from the README work
  from outside a checkout.

Overrides are ml-collections' ``--config.a.b=value`` syntax, type-checked against the
field they replace; an unknown key is an error.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import os
import sys
from typing import Sequence

from ml_collections import ConfigDict

PACKAGE = "phijax.configs"


class ConfigError(ValueError):
  """A config that cannot be found or cannot run; the message names the field or file."""


def packaged_names() -> list[str]:
  """The configs shipped with phijax (``configs/*.py`` of the repository)."""
  try:
    files = importlib.resources.files(PACKAGE).iterdir()
  except ModuleNotFoundError:  # a checkout that was never installed
    return []
  return sorted(f.name[:-3] for f in files
                if f.name.endswith(".py") and not f.name.startswith("_"))


def split_spec(spec: str) -> tuple[str, str | None]:
  """``"configs/tiny.py:runlocal"`` -> ``("configs/tiny.py", "runlocal")``."""
  where, sep, arg = spec.partition(":")
  return where, (arg if sep else None)


def _load_module(where: str):
  """The config module ``where`` names (a packaged name or a .py path)."""
  names = packaged_names()
  is_path = where.endswith(".py") or os.sep in where or "/" in where
  if not is_path:
    if where in names:
      return importlib.import_module(f"{PACKAGE}.{where}")
    raise ConfigError(f"no config named {where!r}; packaged configs: {', '.join(names)} "
                      "(or give a path to a .py file with get_config())")
  path = os.path.expanduser(where)
  if not os.path.exists(path):
    stem = os.path.basename(path)[:-3] if path.endswith(".py") else ""
    # README commands say configs/tiny.py; outside a checkout that is the packaged file.
    if os.path.basename(os.path.dirname(os.path.normpath(path))) == "configs" and stem in names:
      return importlib.import_module(f"{PACKAGE}.{stem}")
    raise ConfigError(f"config file {where!r} does not exist; give a path to a .py file "
                      f"with get_config(), or a packaged name ({', '.join(names)})")
  if os.path.isdir(path):
    raise ConfigError(f"config {where!r} is a directory; give a .py file with get_config()")
  if not path.endswith(".py"):
    raise ConfigError(f"config {where!r} is not a .py file; a config is a Python file "
                      "with get_config(arg=None)")
  name = "phijax_config_" + os.path.basename(path)[:-3].replace("-", "_")
  spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses and pickling look modules up by name
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:  # also null bytes, a truncated file
    at = f" (line {e.lineno})" if e.lineno and "line" not in e.msg else ""
    raise ConfigError(f"config file {where!r} is not valid Python: {e.msg}{at}") from e
  except Exception as e:
    raise ConfigError(f"config file {where!r} failed while importing: "
                      f"{_raised_at(e, path)}") from e
  return module


def _raised_at(e: BaseException, path: str) -> str:
  """``Type: message (line N)``: the error and the last line of ``path`` it passed
  through (the config's own line; --verbose shows the whole traceback)."""
  import traceback
  lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
           if os.path.abspath(f.filename) == os.path.abspath(path)]
  at = f" (line {lines[-1]})" if lines else ""
  return f"{type(e).__name__}: {' '.join(str(e).split())}{at}"


def load(spec: str, overrides: Sequence[str] = ()) -> ConfigDict:
  """The locked config ``spec`` (``NAME[:ARG]`` or ``PATH.py[:ARG]``) with
  ``--config.a.b=value`` overrides applied."""
  where, arg = split_spec(spec)
  module = _load_module(where)
  get_config = getattr(module, "get_config", None)
  if get_config is None:
    raise ConfigError(f"config {where!r} has no get_config(arg=None) function")
  try:
    config = get_config(arg)
  except (ConfigError, KeyboardInterrupt):
    raise
  except Exception as e:  # the config's own code failed: name the file and the line
    raise ConfigError(f"config {where!r}: get_config({arg!r}) raised "
                      f"{_raised_at(e, getattr(module, '__file__', '') or '')}") from e
  if not isinstance(config, ConfigDict):
    raise ConfigError(f"{where}: get_config() returned {type(config).__name__}, "
                      "not an ml_collections ConfigDict")
  return apply_overrides(config, overrides)


def apply_overrides(config: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
  """Applies ``--config.a.b=value`` strings with ml-collections' parser (each value
  is parsed as the type of the field it replaces); returns the locked config."""
  for o in overrides:
    if not o.startswith("--config.") or "=" not in o:
      raise ConfigError(f"bad config override {o!r}: write --config.FIELD.PATH=VALUE")
    _check_key(config, o[len("--config."):].split("=", 1)[0])
  for o in overrides:  # one at a time, so an error names its override
    config = _apply_one(config, o)
  config.lock()
  return config


def _apply_one(config: ConfigDict, override: str) -> ConfigDict:
  from absl import flags
  from ml_collections import config_flags

  argv = ["phijax", override]
  fv = flags.FlagValues()  # private: nothing leaks into absl's global FLAGS
  try:
    config_flags.DEFINE_config_dict("config", config, flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    dotted, value = override[len("--config."):].split("=", 1)
    parent, _, leaf = dotted.rpartition(".")
    try:
      kind = (config[parent] if parent else config).get_type(leaf).__name__
    except Exception:  # pylint: disable=broad-except
      kind = "?"
    reason = " ".join(str(e).split())
    if "not supported for overriding" in reason:
      reason = f"a {kind} field cannot be set from the command line; set it in a config file"
    else:
      article = "an" if kind[:1] in "aeiou" else "a"
      reason = f"config.{dotted} takes {article} {kind}, not {value!r}"
    raise ConfigError(f"bad config override {override}: {reason}") from None
  return fv.config


def _check_key(config: ConfigDict, dotted: str) -> None:
  """An override's field must exist: name the first unknown part and the nearest keys."""
  import difflib

  node, path = config, []
  for part in dotted.split("."):
    if not isinstance(node, ConfigDict) or part not in node:
      keys = sorted(node.keys()) if isinstance(node, ConfigDict) else []
      close = difflib.get_close_matches(part, keys, n=3)
      hint = (f"did you mean {', '.join('.'.join(path + [c]) for c in close)}?" if close
              else f"{'.'.join(path) or 'config'} has: {', '.join(keys)}" if keys
              else f"{'.'.join(path)} is a {type(node).__name__}, not a group")
      raise ConfigError(f"unknown config key config.{dotted}: no field "
                        f"{'.'.join(path + [part])!r}; {hint}")
    node = node[part]
    path.append(part)


def check_arg(arg: str | None, accepted: Sequence[str]) -> set[str]:
  """The comma-separated words of a config's ``:arg``; an unknown one is an error
  that lists the accepted ones."""
  words = {w for w in (arg or "").split(",") if w}
  unknown = sorted(words - set(accepted))
  if unknown:
    known = ", ".join(repr(a) for a in accepted) if accepted else "no argument"
    raise ConfigError(f"unknown config argument {','.join(unknown)!r}; this config "
                      f"accepts {known} (as in --config=NAME:ARG)")
  return words


# --- describing a config: its tree with values, defaults and meanings (--help) --------

def describe(config: ConfigDict, spec: str = "", defaults: ConfigDict | None = None,
             meanings: dict | None = None) -> str:
  """The config tree, one field a line: value, the default where it differs
  (``defaults``), and the field's meaning (``meanings``: ``{dotted field: text}``;
  ``phijax.config.describe`` passes the ones read from the code's comments)."""
  meanings = meanings or {}
  lines = [f"config {spec}: every field, as --config.FIELD=VALUE sets it "
           "(value, [default when it differs], meaning)" if spec else ""]
  rows = []

  def walk(node, default, path):
    for key in sorted(node.keys()):
      where = f"{path}.{key}" if path else key
      value = node[key]
      has_default = isinstance(default, ConfigDict) and key in default
      if isinstance(value, ConfigDict):
        rows.append((where, None, None, meanings.get(where, "")))
        walk(value, default[key] if has_default else None, where)
        continue
      shown = repr(value)
      other = ""
      if has_default and default[key] != value:
        other = f"[default {default[key]!r}]"
      rows.append((where, shown, other, meanings.get(where) or meanings.get(
          _source_field(where), "")))

  walk(config, defaults, "")
  width = max(len(r[0]) for r in rows if r[1] is not None) + 2
  for where, shown, other, meaning in rows:
    if shown is None:
      lines.append(f"{where}:" + (f"  {meaning}" if meaning else ""))
      continue
    text = f"  {where:<{width}}{shown}" + (f"  {other}" if other else "")
    lines.append(text + (f"  # {meaning}" if meaning else ""))
  return "\n".join(line for line in lines if line is not None)


def _source_field(where: str) -> str:
  """``data.sources.mine.path`` -> ``data.sources.*.path`` (documented once)."""
  parts = where.split(".")
  if parts[:2] == ["data", "sources"] and len(parts) == 4:
    return f"data.sources.*.{parts[3]}"
  return where
