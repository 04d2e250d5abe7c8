"""N processes of one run on this machine, joined by jax.distributed.

    python launch/local.py --processes=2 --devices_per_process=2 -- \\
        python -m phijax.train --config=configs/tiny.py:runlocal --workdir=runs/mh

For CPU testing (each process gets ``--devices_per_process`` simulated CPU devices)
and for one process per GPU on a multi-GPU box (``--platform=gpu``: process i sees
GPUs ``i*K .. i*K+K-1``). Each process gets ``JAX_COORDINATOR_ADDRESS`` (127.0.0.1
and a free port, or ``--port``), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; the
training joins them in ``phijax.train.distributed.maybe_initialize_distributed``.

Logs: ``WORKDIR/logs/process_<i>.log`` (``--logdir`` to change); process 0's output
is also shown here. Ctrl-C (or SIGTERM) is forwarded to every process: the run
checkpoints at an agreed step and exits. The exit code is the worst process's
(a process killed by signal S counts as 128+S). Rerunning the same command resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import cli  # noqa: E402

PROG = "python launch/local.py"


def parser():
  p = cli.ArgumentParser(prog=PROG, description=__doc__,
                         usage=f"{PROG} [options] -- COMMAND...")
  p.add_argument("--processes", type=cli.positive_int, default=2,
                 help="number of processes (default 2)")
  p.add_argument("--devices_per_process", type=cli.positive_int, default=1,
                 help="CPU: simulated devices per process; GPU: GPUs per process")
  p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                 help="cpu (default; sets JAX_PLATFORMS=cpu) or gpu")
  p.add_argument("--port", type=cli.positive_int, default=0,
                 help="coordinator port on 127.0.0.1 (default: a free one)")
  p.add_argument("--logdir", default="",
                 help="per-process logs (default WORKDIR/logs)")
  return p


def free_port() -> int:
  import socket
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(i: int, n: int, port: int, args, base=None) -> dict:
  """The environment of process ``i`` of ``n``."""
  env = dict(os.environ if base is None else base)
  env.update({"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
              "JAX_NUM_PROCESSES": str(n), "JAX_PROCESS_ID": str(i),
              "PYTHONUNBUFFERED": "1"})
  k = args.devices_per_process
  if args.platform == "cpu":
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={k}"])
  else:
    env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(d) for d in range(i * k, (i + 1) * k))
  return env


def _pump(pipe, log_file, echo):
  for line in iter(pipe.readline, ""):
    log_file.write(line)
    log_file.flush()
    if echo:
      sys.stdout.write(line)
      sys.stdout.flush()
  pipe.close()


def exit_code(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
  if returncode < 0:
    try:
      return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
      return f"killed by signal {-returncode}"
  return f"exit code {returncode}"


def _stopped_by_jax(path) -> bool:
  try:
    with open(path, errors="replace") as f:
      return "JAX distributed service detected fatal errors" in f.read()
  except OSError:
    return False


def _last_lines(path, n=3):
  try:
    with open(path, errors="replace") as f:
      lines = [ln.rstrip() for ln in f if ln.strip()]
  except OSError:
    return []
  return lines[-n:]


def launch(args, command) -> int:
  workdir = _common.check_command(command, PROG)
  if args.port:
    from phijax.train import distributed
    distributed.check_port_free(f"127.0.0.1:{args.port}")  # ValueError -> one line, exit 2
  port = args.port or free_port()
  logdir = args.logdir or os.path.join(workdir, "logs")
  os.makedirs(logdir, exist_ok=True)
  n = args.processes
  print(f"launch: {n} processes x {args.devices_per_process} {args.platform} device(s), "
        f"coordinator 127.0.0.1:{port}, logs in {logdir}/process_<i>.log", flush=True)
  procs, pumps, logs = [], [], []
  for i in range(n):
    log_path = os.path.join(logdir, f"process_{i}.log")
    log_file = open(log_path, "w")
    # A session of its own: a terminal's Ctrl-C reaches only this launcher, which
    # forwards it once to every process (not twice to each).
    proc = subprocess.Popen(command, env=process_env(i, n, port, args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    t = threading.Thread(target=_pump, args=(proc.stdout, log_file, i == 0), daemon=True)
    t.start()
    procs.append(proc)
    pumps.append(t)
    logs.append((log_path, log_file))

  print(f"launch: pids {[p.pid for p in procs]} (process 0, 1, ...)", flush=True)

  def forward(signum, frame):
    print(f"launch: {signal.Signals(signum).name}: forwarding to all processes",
          file=sys.stderr, flush=True)
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    pending = set(range(n))
    while pending:
      for i in sorted(pending):
        rc = procs[i].poll()
        if rc is None:
          continue
        pending.discard(i)
        if rc != 0:
          why = ""
          if _stopped_by_jax(logs[i][0]):
            why = (" by JAX's distributed service: another process died or stopped "
                   "sending heartbeats for mesh.heartbeat_timeout_s")
          print(f"launch: process {i} {describe(rc)}{why}; log {logs[i][0]}",
                file=sys.stderr, flush=True)
          if pending and rc < 0:
            print(f"launch: waiting for the other {len(pending)} (each aborts once it "
                  "misses the dead process's heartbeats: mesh.heartbeat_timeout_s)",
                  file=sys.stderr, flush=True)
      time.sleep(0.2)
  finally:
    for s, h in old.items():
      signal.signal(s, h)
  for t in pumps:
    t.join(timeout=5)
  for _, f in logs:
    f.close()
  codes = [p.returncode for p in procs]
  worst = max(exit_code(c) for c in codes)
  if worst:
    for i, c in enumerate(codes):
      if c and i != 0:  # process 0's output was shown already
        for line in _last_lines(logs[i][0]):
          print(f"[process {i}] {line}", file=sys.stderr)
    print(f"launch: exit codes {[exit_code(c) for c in codes]}; exiting with {worst}",
          file=sys.stderr, flush=True)
  return worst


def main(argv=None):
  head, command = _common.split_argv(argv)
  p = parser()
  cli.main(p, lambda args: launch(args, command), head)


if __name__ == "__main__":
  main()
