"""Multi-process runs for real: 2 local processes x 2 CPU devices joined by
jax.distributed (gloo collectives) train exactly as 1 process with 4 devices does
(each reading half of every batch),
checkpoints move between the layouts, a dead process stops the other within the
heartbeat bound, SIGTERM to one process checkpoints both at the same step, the
launcher forwards Ctrl-C to every process, and bad input is one line before
training. Each run starts in ~10 s; the file takes ~2 min on 2 cores."""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [sys.executable, os.path.join(ROOT, "launch", "local.py")]
ARGS = ["--config=configs/tiny.py:runlocal", "--config.train.steps=12",
        "--config.train.log_every=1", "--config.train.eval_every=4",
        "--config.train.eval_batches=1", "--config.train.save_every=2",
        "--config.train.keep_last=10", "--config.train.samples=0",
        "--config.train.final_eval_batches=2", "--config.train.progress=false"]
# The runs fixture's runs and their resumes in the other layout read one checkpoint, step
# 8's: saving every 4 steps rather than ARGS's 2 (the dead-process test's, killed at step
# ~3) spares each run 3 saves, each of which slows the next step. Later overrides win.
FIXTURE_ARGS = ARGS + ["--config.train.save_every=4"]
HEARTBEAT_S = 6
# The survivor of a SIGKILLed peer must be gone within this long (measured 4-7 s with a
# 6 s timeout: JAX's coordinator declares a task dead after the heartbeat timeout).
FAILURE_BOUND_S = 2 * HEARTBEAT_S + 15


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                              "SLURM_"))}
  env.update(JAX_PLATFORMS="cpu", **extra)
  return env


def _train_cmd(workdir, args=ARGS, *extra):
  return [sys.executable, "-m", "phijax.train", f"--workdir={workdir}", *args, *extra]


def _launch(workdir, args=ARGS, *extra, processes=2):
  return [*LAUNCH, f"--processes={processes}", "--devices_per_process=2", "--",
          *_train_cmd(workdir, args, *extra)]


def _run(cmd, env=None, timeout=300):
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                        env=env or _env(), timeout=timeout)
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
  return proc


def _rows(workdir):
  """step -> loss, and step -> eval_loss (a rerun's rows replace earlier ones)."""
  loss, ev = {}, {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    row = json.loads(line)
    if "loss" in row:
      loss[row["step"]] = row["loss"]
    if "eval_loss" in row:
      ev[(row["step"], bool(row.get("final")))] = row["eval_loss"]
  return loss, ev


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same 12 steps as 2 processes x 2 devices and as 1 process x 4 devices, side by
  side: the 2 processes wait in their collectives (~1.2 cores of 2 busy), and the pair
  took 23 s instead of 27-30 s one after the other."""
  base = tmp_path_factory.mktemp("mh")
  two, one = base / "two", base / "one"
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = [pool.submit(_run, _launch(two, FIXTURE_ARGS)),
            pool.submit(_run, _train_cmd(one, FIXTURE_ARGS), _env(XLA_FLAGS=xla_flags(4)))]
    for future in done:
      future.result()  # _run's failed assertion, if any, with the run's output
  return two, one


def test_two_processes_train_like_one(runs):
  two, one = runs
  loss2, ev2 = _rows(two)
  loss1, ev1 = _rows(one)
  assert sorted(loss2) == list(range(1, 13))
  np.testing.assert_allclose([loss2[s] for s in sorted(loss1)],
                             [loss1[s] for s in sorted(loss1)], rtol=0, atol=1e-5)
  assert ev2.keys() == ev1.keys() == {(4, False), (8, False), (12, True)}
  np.testing.assert_allclose([ev2[k] for k in sorted(ev1)], [ev1[k] for k in sorted(ev1)],
                             atol=1e-5)
  # Metrics, plots and config written once (process 0); per-process logs by the launcher.
  assert len(open(two / "metrics.jsonl").read().splitlines()) == len(
      open(one / "metrics.jsonl").read().splitlines())
  assert (two / "loss.png").exists() and (two / "tokenizer.model").exists()
  assert (two / "logs" / "process_0.log").exists() and (two / "logs" / "process_1.log").exists()
  assert "done: step 12" in (two / "logs" / "process_1.log").read_text()
  # Each process read only its half of every 8-row batch (phijax.data.hosts).
  for i in range(2):
    assert (f"data: process {i} of 2 read 48 training rows, 4 of every 8-row global batch"
            in (two / "logs" / f"process_{i}.log").read_text())


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_checkpoint_restores_in_the_other_layout(runs, tmp_path, direction):
  """One layout's step-8 checkpoint, resumed in the other (1 process x 4 devices or
  2 processes x 2 devices), gives that run's steps 9-12 and final evaluation (data
  iterator included)."""
  two, one = runs
  source = two if direction == "2->1" else one
  work = tmp_path / "resume"
  shutil.copytree(source, work)
  for d in os.listdir(work / "checkpoints"):
    if d.isdigit() and int(d) > 8:
      shutil.rmtree(work / "checkpoints" / d)
  if direction == "2->1":
    proc = _run(_train_cmd(work, FIXTURE_ARGS),
                env=_env(XLA_FLAGS=xla_flags(4)))
    said = proc.stderr + proc.stdout
  else:
    _run(_launch(work, FIXTURE_ARGS))
    said = (work / "logs" / "process_0.log").read_text()
    assert "resumed from step 8" in (work / "logs" / "process_1.log").read_text()
  assert "resumed from step 8" in said
  loss_s, ev_s = _rows(source)
  loss_r, ev_r = _rows(work)
  np.testing.assert_allclose([loss_r[s] for s in range(9, 13)],
                             [loss_s[s] for s in range(9, 13)], atol=1e-5)
  np.testing.assert_allclose(ev_r[(12, True)], ev_s[(12, True)], atol=1e-5)


def _start(cmd, log_path):
  log = open(log_path, "w+")
  proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                          env=_env())
  proc.log_path = log_path
  return proc


def _wait_for(proc, pattern, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    text = open(proc.log_path).read()
    m = re.search(pattern, text)
    if m:
      return m, text
    assert proc.poll() is None, text[-3000:]
    time.sleep(0.1)
  raise AssertionError(f"no {pattern!r} in time: {open(proc.log_path).read()[-3000:]}")


def _pids(proc):
  m, _ = _wait_for(proc, r"launch: pids \[(\d+), (\d+)\]")
  return int(m.group(1)), int(m.group(2))


def test_dead_process_stops_the_other_and_the_rerun_resumes(runs, tmp_path):
  """The 12-step run of the `runs` fixture, saving every 2 steps (ARGS), process 1
  SIGKILLed at step ~4; the same launch rerun (stopped once on the way by a SIGTERM to
  process 1 alone, a preemption notice, which checkpoints both processes at one step)
  then run to the end gives the uninterrupted run's losses after the resume point and
  its final evaluation."""
  two, _ = runs
  work = tmp_path / "kill"
  hb = f"--config.mesh.heartbeat_timeout_s={HEARTBEAT_S}"
  proc = _start(_launch(work, ARGS, hb), tmp_path / "kill.log")
  _, p1 = _pids(proc)
  _wait_for(proc, r"step +3/")
  os.kill(p1, signal.SIGKILL)
  t0 = time.time()
  rc = proc.wait(timeout=FAILURE_BOUND_S + 30)
  took = time.time() - t0
  out = open(proc.log_path).read()
  assert rc != 0
  assert took < FAILURE_BOUND_S, f"survivor took {took:.0f}s to stop"
  assert "process 1 killed by SIGKILL" in out
  # The survivor goes either way, depending on where it was when the peer died: JAX's
  # coordination service aborts it (heartbeat), or a collective fails first and it
  # exits with an error. Both are a bounded, named stop.
  assert re.search(r"process 0 (killed by SIGABRT by JAX's distributed service: another "
                   r"process died|exit code [1-9]\d*)", out), out[-3000:]
  assert "done: step 12" not in out, "the kill landed after the run had finished"
  steps = sorted(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
  assert steps and steps[-1] >= 2
  # Rerunning the same launch resumes from the newest complete checkpoint. A SIGTERM to
  # process 1 only: both processes agree on a step, checkpoint there and exit 0.
  proc = _start(_launch(work, ARGS, hb), tmp_path / "rerun.log")
  _, p1 = _pids(proc)
  m, _ = _wait_for(proc, r"resumed from step (\d+)")
  resumed = int(m.group(1))
  assert resumed in steps
  _wait_for(proc, rf"step +{resumed + 2}/")
  os.kill(p1, signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, open(proc.log_path).read()[-3000:]
  said = [re.findall(r"checkpoint written at step (\d+)",
                     (work / "logs" / f"process_{i}.log").read_text()) for i in (0, 1)]
  assert len(said[0]) == len(said[1]) == 1 and said[0] == said[1], said
  stopped = int(said[0][0])
  assert stopped < 12 and stopped == max(
      int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
  # And once more to the end: the losses after the first resume point and the final
  # evaluation are the uninterrupted 2-process run's.
  proc = _start(_launch(work, ARGS, hb), tmp_path / "final.log")
  _wait_for(proc, rf"resumed from step {stopped}")
  assert proc.wait(timeout=300) == 0, open(proc.log_path).read()[-3000:]
  loss_k, ev_k = _rows(work)
  loss_u, ev_u = _rows(two)
  after = range(resumed + 1, 13)
  np.testing.assert_allclose([loss_k[s] for s in after], [loss_u[s] for s in after],
                             rtol=0, atol=1e-5)
  np.testing.assert_allclose(ev_k[(12, True)], ev_u[(12, True)], atol=1e-5)


# Stands for a training process: says when it is up, and exits 0 on SIGINT.
CTRL_C_CHILD = """
import os, signal, sys, time
def stop(signum, frame):
  print(f"process {os.environ['JAX_PROCESS_ID']} got SIGINT", flush=True)
  sys.exit(0)
signal.signal(signal.SIGINT, stop)
print("up", flush=True)
time.sleep(120)
sys.exit(3)
"""


def test_ctrl_c_to_the_launcher_reaches_every_process(tmp_path):
  """Ctrl-C (SIGINT) to the launcher is forwarded once to every process (they run in
  sessions of their own, so a terminal's Ctrl-C reaches only the launcher); it exits
  with the processes' exit code, 0."""
  work = tmp_path / "w"
  proc = _start([*LAUNCH, "--processes=2", "--", sys.executable, "-c", CTRL_C_CHILD,
                 f"--workdir={work}"], tmp_path / "launch.log")
  _pids(proc)
  logs = [work / "logs" / f"process_{i}.log" for i in (0, 1)]
  deadline = time.time() + 60
  while not all(p.exists() and "up" in p.read_text() for p in logs):
    assert time.time() < deadline and proc.poll() is None, open(proc.log_path).read()
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=30) == 0, open(proc.log_path).read()
  assert "launch: SIGINT: forwarding to all processes" in open(proc.log_path).read()
  for i, p in enumerate(logs):
    assert p.read_text().count(f"process {i} got SIGINT") == 1, p.read_text()


def test_simulated_slurm_job_matches(runs, tmp_path):
  """Two processes with the SLURM variables jax.distributed.initialize() reads (one
  node, 2 tasks) and mesh.distributed=true: the same losses as 1 process."""
  _, one = runs
  work = tmp_path / "slurm"
  port = _free_port()
  procs = []
  for rank in (0, 1):
    env = _env(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
               SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NODEID="0",
               JAX_COORDINATOR_PORT=str(port),
               XLA_FLAGS=xla_flags(2))
    # Only the training losses are compared: no saves but the last, no periodic evals, a
    # final eval of one batch (neither touches the data stream or the RNG).
    procs.append(subprocess.Popen(
        _train_cmd(work, ARGS, "--config.mesh.distributed=true", "--config.train.save_every=0",
                   "--config.train.eval_every=0", "--config.train.final_eval_batches=1"),
        cwd=ROOT, env=env,
        stdout=open(tmp_path / f"slurm_{rank}.log", "w"), stderr=subprocess.STDOUT))
  for rank, p in enumerate(procs):
    assert p.wait(timeout=300) == 0, (tmp_path / f"slurm_{rank}.log").read_text()[-3000:]
  loss_s, _ = _rows(work)
  loss1, _ = _rows(one)
  np.testing.assert_allclose([loss_s[s] for s in range(1, 13)],
                             [loss1[s] for s in range(1, 13)], atol=1e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _one_line_error(proc, *words):
  err = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
  assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
  assert err and all(w in err[-1] for w in words), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  return err[-1]


def test_launch_without_workdir_is_one_line(tmp_path):
  proc = subprocess.run([*LAUNCH, "--processes=2", "--", sys.executable, "-m",
                         "phijax.train", "--config=configs/tiny.py:runlocal"],
                        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
  _one_line_error(proc, "python launch/local.py: error:", "--workdir")
  proc = subprocess.run([*LAUNCH, "--processes=2"], capture_output=True, text=True,
                        cwd=ROOT, env=_env(), timeout=60)
  _one_line_error(proc, "no command to run")


def test_coordinator_port_in_use_is_one_line(tmp_path):
  with socket.socket() as s:
    s.bind(("", 0))
    s.listen()
    port = s.getsockname()[1]
    proc = subprocess.run([*LAUNCH, "--processes=2", f"--port={port}", "--",
                           *_train_cmd(tmp_path / "w")],
                          capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
  _one_line_error(proc, f"coordinator port {port}", "not free")
  assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize("extra,words", [
    # 3 processes cannot split a batch of 8 rows.
    (("--processes=3", "--devices_per_process=1"), ("batch_size=8", "3 processes")),
    # 2 x 2 = 4 global devices, but the mesh asks for 2.
    (("--processes=2", "--devices_per_process=2", "--config.mesh.data=2"),
     ("mesh", "4 devices")),
])
def test_bad_multihost_config_is_one_line_before_training(tmp_path, extra, words):
  launcher = [a for a in extra if not a.startswith("--config")]
  overrides = [a for a in extra if a.startswith("--config")]
  work = tmp_path / "w"
  proc = subprocess.run([*LAUNCH, *launcher, "--", *_train_cmd(work, ARGS, *overrides)],
                        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
  assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
  text = proc.stdout + proc.stderr
  assert "phijax.train: error:" in text and all(w in text for w in words), text[-2000:]
  assert "step 1/" not in text and not (work / "checkpoints").exists()
