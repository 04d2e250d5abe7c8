"""What the kernel adds to the code sandbox (``execute.py``), where it allows it: Linux
namespaces, set up without privileges (no setuid helper, no root needed).

- network: the supervisor enters a new user and network namespace before it forks the
  program. The new namespace has only a loopback device, and it is down: connecting
  anywhere, 127.0.0.1 included, fails with "Network is unreachable".
- processes: a new PID namespace too; the program's first process is its init (pid 1)
  in a private mount namespace with a /proc of its own, so ``/proc`` lists the
  sandbox's processes only: the evaluator's and the supervisor's environment and
  memory are not there to read. The init forks the program (pid 2, so signals and
  limits behave as usual), reaps what it leaves and exits with its status; the kernel
  then kills whatever else is left in the namespace.
- the supervisor is not dumpable (``PR_SET_DUMPABLE`` 0): its ``/proc/<pid>/environ``
  and ``mem`` are unreadable to the program even where the PID namespace is missing
  (for a root evaluator only inside the user namespace, which holds no capability over
  the supervisor).

Where the kernel refuses (unprivileged user namespaces disabled, as on Ubuntu 24.04 by
AppArmor or on kernels with ``user.max_user_namespaces=0``; /proc mounts refused inside
some containers; not Linux), the sandbox runs without that part and says which in its
report: ``execute.run_program`` logs it once. Loaded by path in the supervisor (which
does not import phijax): keep this module free of phijax imports.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x4000, 0x40000, 0x2, 0x4, 0x8
PR_SET_DUMPABLE = 4


def _libc():
  return ctypes.CDLL(None, use_errno=True)


def _call(fn, *args) -> str:
  """"" on success, else the error (``EPERM: Operation not permitted``)."""
  if fn(*args) == 0:
    return ""
  err = ctypes.get_errno()
  return f"{os.strerror(err)} ({err})"


def enter() -> dict:
  """In the supervisor, single-threaded, before it forks the program: new user,
  network and PID namespaces (a root supervisor without user namespaces takes the
  network and PID ones alone); then the supervisor stops being dumpable. Returns
  ``{"network", "pid", "ids", "dumpable"}``: "" for each that holds, else why not."""
  if not sys.platform.startswith("linux"):
    why = f"not Linux ({sys.platform})"
    return {"network": why, "pid": why, "dumpable": why}
  libc = _libc()
  uid, gid = os.geteuid(), os.getegid()
  state = {"network": "", "pid": "", "ids": ""}
  why = _call(libc.unshare, CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)
  if not why:
    try:  # the same ids inside: files in the sandbox directory stay writable
      _write("/proc/self/setgroups", "deny")
      _write("/proc/self/uid_map", f"{uid} {uid} 1")
      _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as e:  # in the namespaces all the same, as nobody: writes fail
      state["ids"] = f"ids not mapped into the user namespace ({e.strerror})"
  elif uid == 0 and not _call(libc.unshare, CLONE_NEWNET | CLONE_NEWPID):
    pass  # root without user namespaces: the network and PID ones alone
  else:
    why = f"no user namespace: unshare failed with {why}"
    state.update(network=why, pid=why)
  # Last: a process that is not dumpable cannot write its own uid_map either.
  state["dumpable"] = _call(libc.prctl, PR_SET_DUMPABLE, 0, 0, 0, 0)
  return state


def own_proc() -> str:
  """In the program's init (pid 1 of the new PID namespace): a private mount namespace
  whose /proc lists this namespace's processes only. Where a proc mount is refused
  (containers that mask parts of /proc), an empty tmpfs hides it instead. Returns
  "" for a /proc of its own, else what /proc shows."""
  libc = _libc()
  why = _call(libc.unshare, CLONE_NEWNS)
  if why:
    return f"the evaluator's /proc (no mount namespace: {why})"
  why = _call(libc.mount, None, b"/", None, MS_REC | MS_PRIVATE, None)
  if why:
    return f"the evaluator's /proc (mounts not private: {why})"
  flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
  why = _call(libc.mount, b"proc", b"/proc", b"proc", flags, None)
  if not why:
    return ""
  hidden = _call(libc.mount, b"tmpfs", b"/proc", b"tmpfs", flags, b"size=4k")
  if not hidden:
    return f"an empty /proc (a new proc mount was refused: {why})"
  return f"the evaluator's /proc (proc and tmpfs mounts refused: {why}, {hidden})"


def run_as_init(program, report_fd: int) -> int:
  """pid 1 of the sandbox's PID namespace: forks ``program()`` (its return value is
  the exit code), waits for it while reaping orphans, writes ``{"exit", "proc"}`` to
  ``report_fd`` and returns the exit code. Exiting ends the namespace: the kernel
  kills every process still in it."""
  proc = own_proc()
  pid = os.fork()
  if pid == 0:
    exit_now, code = os._exit, 70  # the guard replaces os._exit; keep the real one
    try:
      os.close(report_fd)
      code = program()
    except BaseException as e:  # the sandbox's own setup failed: say so
      print(f"sandbox setup failed: {e!r}", file=sys.stderr, flush=True)
    finally:
      exit_now(code)
  while True:  # an orphan of the program is ours to reap too
    try:
      done, status = os.wait()
    except ChildProcessError:
      status = None
      break
    if done == pid:
      break
  code = os.waitstatus_to_exitcode(status) if status is not None else 70
  os.write(report_fd, json.dumps({"exit": code, "proc": proc}).encode())
  return code


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)
