"""The SLURM and TPU launchers' dry-runs (what they would submit / run) and their
bad-input lines. launch/local.py runs for real in test_multihost.py."""

import json
import os
import shlex
import subprocess
import sys
import tempfile

import pytest

from tests.devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["python", "-m", "phijax.train", "--config=configs/tiny.py", "--workdir=/shared/run"]


def _launch(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_tpu_dry_run_prints_every_gcloud_command():
  proc = _launch("tpu.py", "--name=pod", "--zone=us-central2-b", "--project=p",
                 "--accelerator_type=v4-32", "--dry-run", "--", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  lines = [shlex.split(x) for x in proc.stdout.strip().splitlines()]
  vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  flags = ["--zone=us-central2-b", "--project=p"]
  assert lines[0] == [*vm, "create", "pod", *flags, "--accelerator-type=v4-32",
                      "--version=tpu-ubuntu2204-base"]
  assert lines[1][:2] == ["tar", "czf"] and lines[1][-3:] == ["-C", ROOT, "."]
  assert lines[2] == [*vm, "scp", os.path.join(tempfile.gettempdir(), "phijax-launch.tgz"), "pod:phijax-launch.tgz", *flags,
                      "--worker=all"]
  assert lines[3] == [*vm, "ssh", "pod", *flags, "--worker=all",
                      "--command=mkdir -p phijax && tar xzf phijax-launch.tgz -C phijax"]
  assert lines[4] == [*vm, "ssh", "pod", *flags, "--worker=all",
                      "--command=cd phijax && pip install -q -e '.[tpu]'"]
  assert lines[5] == [*vm, "ssh", "pod", *flags, "--worker=all",
                      "--command=cd phijax && " + shlex.join(TRAIN)]
  assert lines[6] == [*vm, "delete", "pod", *flags, "--quiet"]
  assert len(lines) == 7


def test_tpu_queued_resources_dry_run():
  proc = _launch("tpu.py", "--name=q", "--zone=z", "--queued", "--spot",
                 "--steps=create,run,delete", "--dry-run", "--", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  lines = [shlex.split(x) for x in proc.stdout.strip().splitlines()]
  qr = ["gcloud", "compute", "tpus", "queued-resources"]
  assert lines[0] == [*qr, "create", "q", "--node-id=q", "--zone=z", "--accelerator-type=v4-8",
                      "--runtime-version=tpu-ubuntu2204-base", "--spot"]
  assert lines[1][:2] == ["bash", "-c"] and "ACTIVE" in lines[1][2]
  assert lines[2][4:6] == ["ssh", "q"] and "--worker=all" in lines[2]
  assert lines[3] == [*qr, "delete", "q", "--zone=z", "--force", "--quiet"]


def test_slurm_dry_run_prints_the_sbatch_script():
  pytest.importorskip("submitit")
  proc = _launch("slurm.py", "--nodes=2", "--gpus_per_node=8", "--partition=gpu",
                 "--account=acct", "--time=120", "--dry-run", "--", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
               "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
               "#SBATCH --account=acct", "#SBATCH --time=120", "#SBATCH --signal=USR2@120",
               "#SBATCH --output=/shared/run/slurm/%j_0_log.out"):
    assert line in out.splitlines(), out
  assert "srun" in out and "submitit.core._submit /shared/run/slurm" in out
  assert f"# each of the 16 tasks runs: {shlex.join(TRAIN)}" in out


def test_slurm_dry_run_of_a_sweeps_job_array(tmp_path):
  """--commands=FILE (what phijax.sweep --launcher=slurm writes): one job array, one
  array task per command."""
  pytest.importorskip("submitit")
  commands = [[*TRAIN[:-1], f"--workdir=/shared/sw/{arm}"] for arm in ("a", "b", "c")]
  path = tmp_path / "launch_arms.json"
  path.write_text(json.dumps([{"command": c, "log": None} for c in commands]))
  proc = _launch("slurm.py", f"--commands={path}", "--gpus_per_node=1",
                 "--array_parallelism=2", "--dry-run")
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout.splitlines()
  assert "#SBATCH --array=0-2%2" in out and "#SBATCH --ntasks-per-node=1" in out, out
  assert f"#SBATCH --output={tmp_path}/slurm/%A_%a_0_log.out" in out
  assert [l for l in out if l.startswith("# array task")] == [
      f"# array task {i} runs: {shlex.join(c)}" for i, c in enumerate(commands)]
  path.write_text(json.dumps([{"command": ["python", "-m", "phijax.train"]}]))
  proc = _launch("slurm.py", f"--commands={path}", "--dry-run")
  assert proc.returncode == 2 and "--workdir" in proc.stderr, proc.stderr


@pytest.mark.parametrize("script,args,words", [
    ("local.py", ["--processes=2", "--", "python", "-m", "phijax.train"], "--workdir"),
    ("slurm.py", ["--dry-run", "--", "python", "-m", "phijax.train"], "--workdir"),
    ("tpu.py", ["--name=x", "--zone=z", "--dry-run", "--", "python"], "--workdir"),
    ("tpu.py", ["--name=x", "--zone=z", "--steps=make", "--dry-run"], "unknown step"),
    ("local.py", ["--processes=0", "--", *TRAIN], "--processes"),
    ("slurm.py", ["--dry-run"], "no command to run"),
])
def test_bad_input_is_one_line(script, args, words):
  proc = _launch(script, *args)
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"python launch/{script}: error:")
  assert words in lines[0]


def test_slurm_launcher_runs_two_tasks_with_submitit_local_executor(tmp_path):
  """submitit's LocalExecutor, 2 tasks x 2 CPU devices: one 4-device run, as on SLURM."""
  pytest.importorskip("submitit")
  work = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(2))
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "slurm.py"), "--cluster=local",
       "--tasks_per_node=2", "--time=5", "--", sys.executable, "-m", "phijax.train",
       "--config=configs/tiny.py:runlocal", f"--workdir={work}", "--config.train.steps=2",
       "--config.curriculum.lr.warmup_steps=1",
       "--config.train.samples=0", "--config.train.final_eval_batches=1",
       "--config.train.progress=false"],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
  logs = "".join(p.read_text() for p in (work / "slurm").glob("*_log.*"))
  assert logs.count("done: step 2") == 2 and "4 global devices" in logs


FAKE_GCLOUD = r'''#!/usr/bin/env python3
"""gcloud for tests: a 'TPU slice' that is a directory of this machine."""
import os, shutil, subprocess, sys
home = os.environ["FAKE_TPU_HOME"]
args = sys.argv[1:]
with open(os.path.join(home, "gcloud.log"), "a") as f:
  f.write(" ".join(args[3:5]) + "\n")
verb = args[3]
if verb == "scp":
  src, dst = args[4], args[5].split(":", 1)[1]
  shutil.copy(src, os.path.join(home, dst))
elif verb == "ssh":
  command = next(a for a in args if a.startswith("--command="))[len("--command="):]
  sys.exit(subprocess.run(["bash", "-c", command], cwd=home).returncode)
'''

SWEEP_EXPERIMENT = '''
from phijax import config as base
from phijax.configs import tiny

def get_config(arg=None):
  c = tiny.get_config("runlocal")
  c.train.update(steps=3, batch_size=2, log_every=1, eval_every=0, final_eval_batches=1,
                 save_every=3, samples=0, progress=False)
  return base.finish(c, arg)

def get_sweep(h):
  return h.sweep("optim.lr", [1e-3, 2e-3])
'''


def test_tpu_commands_dry_run_sets_up_once_and_runs_each_arm(tmp_path):
  arms = [{"name": f"a{i}", "command": [*TRAIN[:-1], f"--workdir=/shared/a{i}"],
           "log": f"/shared/a{i}/log.txt"} for i in range(2)]
  (tmp_path / "arms.json").write_text(json.dumps(arms))
  proc = _launch("tpu.py", "--name=pod", "--zone=z", f"--commands={tmp_path}/arms.json",
                 "--dry-run")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  verbs = [shlex.split(l)[4] if l.startswith("gcloud") else shlex.split(l)[0] for l in lines]
  assert verbs == ["create", "tar", "scp", "ssh", "ssh", "ssh", "ssh", "delete"]
  assert "--workdir=/shared/a0" in lines[5] and "--workdir=/shared/a1" in lines[6]


def test_sweep_on_a_tpu_slice_through_launch_tpu(tmp_path):
  """The whole --launcher=tpu path against a fake gcloud whose slice is a directory:
  the checkout is copied there and each arm's training runs from that copy."""
  bin_dir, home = tmp_path / "bin", tmp_path / "tpu_home"
  bin_dir.mkdir()
  home.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  experiment = tmp_path / "exp.py"
  experiment.write_text(SWEEP_EXPERIMENT)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_TPU_HOME=str(home), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "phijax.sweep", str(experiment), f"--workdir={tmp_path}/sweep",
       "--launcher=tpu", "--", "--name=pod", "--zone=z", "--steps=create,copy,run,delete"],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  calls = (home / "gcloud.log").read_text().split()
  assert calls.count("create") == 1 and calls.count("delete") == 1
  assert (home / "phijax" / "phijax" / "train" / "loop.py").is_file()  # ran from the copy
  for arm in ("lr=0.001", "lr=0.002"):
    rows = [json.loads(l) for l in open(tmp_path / "sweep" / arm / "metrics.jsonl")]
    assert any(r.get("final") for r in rows) and max(r["step"] for r in rows) == 3
  assert (tmp_path / "sweep" / "results.md").is_file()
