"""The conventions every phijax command follows.

- ``--help`` lists every flag (argparse), also for the console scripts.
- Bad input (a missing file, a wrong kind of path, a bad value, an unknown config key
  or ``:arg``) is one line on stderr, ``PROG: error: ...``, and exit code 2; never a
  traceback. ``--verbose`` adds the traceback and third-party logs.
- A run that fails for another reason (a non-finite loss, a crash) exits 1.
- Logs: phijax's own at INFO; absl, orbax, jax and XLA at WARNING unless ``--verbose``.

A command::

    parser = cli.ArgumentParser(prog="python -m phijax.thing", description=__doc__)
    parser.add_argument("--input", type=cli.existing_path, required=True)
    cli.add_config(parser)            # optional: --config=NAME[:ARG] plus --config.a.b=v

    def main(args): ...               # raise cli.UsageError("...") for bad input found later

    def run(): cli.main(parser, main)  # console script and __main__
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable, Sequence

from phijax.config_files import ConfigError


class UsageError(ValueError):
  """Bad input from the command line, found after parsing; printed as one line."""


# Errors that mean "the input is wrong": one line, exit 2, when phijax raised them
# (ConfigError, DataError, CurriculumError, ModelConfig's checks: messages that name
# the field or file). The same types raised inside jax, numpy or orbax are bugs or
# surprises: shown with their traceback, exit 1 (see raised_by_phijax).
BAD_INPUT = (UsageError, ValueError, FileNotFoundError, NotADirectoryError,
             IsADirectoryError, FileExistsError, PermissionError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

NOISY_LOGGERS = ("absl", "jax", "jax._src", "orbax", "orbax.checkpoint", "grain",
                 "tensorflow", "matplotlib", "urllib3", "filelock")


class ArgumentParser(argparse.ArgumentParser):
  """argparse with phijax's error convention: one line, exit 2."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    kwargs.setdefault("allow_abbrev", False)  # --conf must not silently mean --config
    super().__init__(*args, **kwargs)
    self.add_argument("--verbose", action="store_true",
                      help="tracebacks on errors and third-party INFO logs")
    self._takes_config = False

  def error(self, message):
    fail(self.prog, message)


def fail(prog: str, message: str, code: int = 2):
  """Prints ``PROG: error: MESSAGE`` as one line and exits with ``code``."""
  one_line = " ".join(str(message).split())
  print(f"{prog}: error: {one_line}", file=sys.stderr, flush=True)
  raise SystemExit(code)


# --- argument types: each checks one thing and names the path in its message ---

def existing_path(value: str) -> str:
  if not os.path.exists(os.path.expanduser(value)):
    raise argparse.ArgumentTypeError(f"{value!r} does not exist")
  return os.path.expanduser(value)


def existing_file(value: str) -> str:
  path = existing_path(value)
  if not os.path.isfile(path):
    raise argparse.ArgumentTypeError(f"{value!r} is not a file")
  return path


def existing_dir(value: str) -> str:
  path = existing_path(value)
  if not os.path.isdir(path):
    raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
  return path


def new_dir(value: str) -> str:
  """A directory to write into: may exist (as a directory) or not, never a file."""
  path = os.path.expanduser(value)
  if os.path.exists(path) and not os.path.isdir(path):
    raise argparse.ArgumentTypeError(f"{value!r} is a file, not a directory")
  return path


def positive_int(value: str) -> int:
  try:
    n = int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
  if n <= 0:
    raise argparse.ArgumentTypeError(f"{value!r} must be positive")
  return n


def add_config(parser: ArgumentParser, required: bool = True) -> None:
  """``--config=NAME[:ARG]`` and any number of ``--config.a.b=value`` overrides; after
  parsing, ``args.config`` is the loaded, overridden, locked ConfigDict."""
  from phijax import config_files
  names = ", ".join(config_files.packaged_names())
  parser.add_argument(
      "--config", required=required, metavar="NAME[:ARG]",
      help=f"a packaged config ({names}) or a .py file with get_config(); ':runlocal' "
           "shrinks it to a CPU smoke run. Override any field with --config.a.b=value; "
           "--help with --config=NAME lists every field, its default and meaning")
  parser._takes_config = True


def parse(parser: ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses ``argv`` (default ``sys.argv[1:]``); loads ``--config`` if the parser
  takes one. Exits 2 with one line on bad input."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if parser._takes_config:
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    if "-h" in rest or "--help" in rest:
      _help_with_config(parser, rest, overrides)
    # "--config.a.b value" (two words) is not supported: say so rather than misparse.
    for a in overrides:
      if "=" not in a:
        parser.error(f"{a} needs a value: write {a}=VALUE")
    args = parser.parse_args(rest)
    if args.config is not None:
      try:
        args.config = _load_config(args.config, overrides)
      except ConfigError as e:
        parser.error(str(e))
    elif overrides:
      parser.error("--config.* overrides need --config=NAME")
    return args
  return parser.parse_args(argv)


def _help_with_config(parser: ArgumentParser, rest, overrides) -> None:
  """``--help``: the flags, then (with ``--config=NAME``) that config's whole tree with
  its values, defaults and meanings, overrides applied; exits 0."""
  spec = next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), None)
  if spec is None and "--config" in rest[:-1]:
    spec = rest[rest.index("--config") + 1]
  parser.print_help()
  if spec is None:
    print("\nWith --config=NAME, --help also lists that config's every field: its value, "
          "its default and what it means.")
    raise SystemExit(0)
  try:
    config = _load_config(spec, overrides)
  except ConfigError as e:
    parser.error(str(e))
  from phijax import config_files
  # Every packaged config starts from phijax.config (loaded with it by now), which
  # reads the fields' meanings from the code; a config built without it gets values.
  base = sys.modules.get("phijax.config")
  print()
  print(base.describe(config, spec) if base else config_files.describe(config, spec))
  raise SystemExit(0)


def _load_config(spec, overrides):
  from phijax import config_files
  return config_files.load(spec, overrides)


def setup_logging(verbose: bool = False) -> None:
  """phijax's logs at INFO as plain lines; third-party ones at WARNING unless verbose."""
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
  quiet = logging.INFO if verbose else logging.WARNING
  for name in NOISY_LOGGERS:
    # JAX takes the level its logger has when it is imported as its own logging level
    # and adds a handler of its own: every JAX line would show twice. A command that
    # imports JAX later calls this again then (phijax.train.command).
    if name.split(".")[0] != "jax" or "jax" in sys.modules:
      logging.getLogger(name).setLevel(quiet)
  try:  # absl's own handler (orbax logs through absl.logging)
    from absl import logging as absl_logging
    absl_logging.set_verbosity("info" if verbose else "warning")
  except ImportError:
    pass
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # XLA's C++ INFO lines


def main(parser: ArgumentParser, fn: Callable[[argparse.Namespace], object],
         argv: Sequence[str] | None = None) -> None:
  """Runs ``fn(args)`` under the conventions above; exits 0, 1 or 2."""
  args = parse(parser, argv)
  setup_logging(args.verbose)
  try:
    result = fn(args)
  except BAD_INPUT as e:
    if args.verbose or not raised_by_phijax(e):
      traceback.print_exc()
    if not raised_by_phijax(e):
      fail(parser.prog, f"internal error: {type(e).__name__} from a library (traceback "
           "above); please report it with the command line", code=1)
    fail(parser.prog, _message(e))
  except KeyboardInterrupt:
    fail(parser.prog, "interrupted", code=130)
  if isinstance(result, int) and result:
    raise SystemExit(result)


def raised_by_phijax(e: BaseException) -> bool:
  """Whether phijax's own code raised ``e`` (its innermost Python frame is ours)."""
  if isinstance(e, (UsageError, ConfigError)):
    return True
  frames = traceback.extract_tb(e.__traceback__)
  return not frames or os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR)


def prog(module: str, script: str) -> str:
  """The name a command was started by: its console script or ``python -m module``."""
  return script if os.path.basename(sys.argv[0]) == script else f"python -m {module}"


def _message(e: BaseException) -> str:
  if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                    FileExistsError, PermissionError)) and e.filename and e.strerror:
    return f"{e.strerror}: {e.filename}"
  return str(e) or type(e).__name__


class Progress:
  """``progress(done, total)`` for a long pass over documents: a line on stderr that
  updates in place on a terminal, else a line every ``every`` seconds, with the time
  since it was made."""

  def __init__(self, label: str, every: float = 5.0):
    import time
    self.time = time.monotonic
    self.label, self.every, self.start = label, every, self.time()
    self.last, self.tty = self.start, sys.stderr.isatty()

  def __call__(self, done: int, total: int) -> None:
    now = self.time()
    if done < total and now - self.last < (0.2 if self.tty else self.every):
      return
    self.last = now
    line = f"{self.label}: {done:,}/{total:,} documents, {now - self.start:.1f} s"
    end = "\n" if (done == total or not self.tty) else ""
    print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)
