"""Sweeps: experiment files, the runner (kill and resume, a failing arm), results.

The runs are configs/tiny.py:runlocal shrunk to 6 steps of 2 x 64 tokens; each arm is a
real `python -m phijax.train` process, as a user's would be.
"""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from phijax.sweeps import arms as sweep_arms, command as sweep_command, results, runner
from phijax.sweeps import runs, status as sweep_status, tables

EXPERIMENT = textwrap.dedent('''
    """A 2-arm x 2-seed test sweep of configs/tiny.py:runlocal (lr and optimizer
    side by side: every column of the results varies, in half the runs of a product)."""
    from phijax import config as base
    from phijax.configs import tiny

    def get_config(arg=None):
      c = tiny.get_config("runlocal")
      c.train.update(steps=6, batch_size=2, log_every=1, eval_every=3, eval_batches=1,
                     final_eval_batches=1, save_every=2, samples=0, progress=False)
      return base.finish(c, arg)

    def get_sweep(h):
      arms = h.product(h.zip(h.sweep("optim.lr", [1e-3, 1e-2]),
                             h.sweep("optim.name", ["adamw", "sgd"])), h.seeds(2))
      return arms + EXTRA

    EXTRA = []

    from phijax.sweeps import stats
    COMPARISONS = [stats.Comparison("adamw beats sgd", metric="eval_loss", claim="lower",
                                    arm={"name": "adamw"}, control={"name": "sgd"})]
    PLOTS = ("curves",)  # no final.png

    def summarize(table, sweep_dir):  # rows read from the arms' directories
      import os
      return [{"arm": r["arm"], "has log": "yes" if os.path.exists(os.path.join(
          sweep_dir, r["arm"], "log.txt")) else "no"} for r in table.rows]

    def plot(table, sweep_dir):  # an experiment's own figure: arms and final losses
      import os
      path = os.path.join(sweep_dir, "own.txt")
      with open(path, "w") as f:
        f.write("".join(f"{r['arm']} {r['eval_loss']}\\n" for r in table.rows))
      return [path]
''')
# Per-arm evaluations (the clean sweep only: the killed sweep need not pay for them).
WITH_EVALS = textwrap.dedent('''
    from phijax.sweeps import evals

    def _log_bytes(arm_dir):  # an in-process measurement; counts its calls
      import os
      with open(os.path.join(os.path.dirname(arm_dir), "fn_calls.txt"), "a") as f:
        f.write(os.path.basename(arm_dir) + "\\n")
      return {"log_bytes": os.path.getsize(os.path.join(arm_dir, "log.txt"))}

    EVALS = [  # one arm's model scored again by phijax.evaluate; every arm's log size
        evals.ArmEval("again", task="bpb", args=("--eval_batches=1",),
                      columns={"again_bpb": "eval_bpb"}, where={"name": "adamw", "seed": 0}),
        evals.ArmEval("logsize", fn=_log_bytes, fmt=",.0f"),
    ]
''')
# Passes the config checks, fails when the run starts (its warmup is longer than seq_len).
BAD_ARM = ('EXTRA = [{"curriculum.seq_warmup.enabled": True, '
           '"curriculum.seq_warmup.start": 100000}]\n')
N_ARMS = 4


def write(path, text):
  path.write_text(text)
  return str(path)


def sweep_cmd(experiment, workdir, *flags):
  return [sys.executable, "-m", "phijax.sweep", experiment, f"--workdir={workdir}",
          "--parallel=2", *flags]


def env():
  return dict(os.environ, JAX_PLATFORMS="cpu")


def run(cmd, timeout=400):
  return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)


def losses(arm_dir):
  """{step: training loss} (each step's last row: a resumed run re-logs some) and the
  final held-out loss, read straight from metrics.jsonl."""
  rows = [json.loads(l) for l in open(os.path.join(arm_dir, "metrics.jsonl"))]
  train = {r["step"]: r["loss"] for r in rows if "loss" in r}
  final = [r["eval_loss"] for r in rows if r.get("final")]
  return train, final[-1]


@pytest.fixture(scope="module")
def clean_sweep(tmp_path_factory):
  """An uninterrupted run of the 8-arm sweep."""
  root = tmp_path_factory.mktemp("clean")
  experiment = write(root / "exp.py", EXPERIMENT + WITH_EVALS)
  proc = run(sweep_cmd(experiment, root / "sweep"))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return root / "sweep", proc


def test_sweep_runs_every_arm(clean_sweep):
  workdir, proc = clean_sweep
  names = sorted(d.name for d in workdir.iterdir() if d.is_dir() and d.name != "tb_hparams")
  assert len(names) == N_ARMS
  assert "lr=0.001,name=adamw,seed=0" in names
  for name in names:
    assert (workdir / name / "log.txt").exists()
    assert sweep_status.read_status(str(workdir / name))["state"] == "done"
    assert len(losses(str(workdir / name))[0]) == 6
  for f in ("results.md", "results.csv", "curves.png", "paired.png"):  # PLOTS: no final
    assert (workdir / f).stat().st_size > 0, f
  # summarize(table, sweep_dir) got the sweep directory: every arm's log is there.
  md = (workdir / "results.md").read_text()
  assert md.count(" | yes |") == N_ARMS and "| has log |" in md
  assert proc.stdout.count(": done in ") == N_ARMS


def test_killed_sweep_resumes_to_the_same_losses_and_a_bad_arm_fails(clean_sweep, tmp_path):
  experiment = write(tmp_path / "exp.py", EXPERIMENT + BAD_ARM)
  workdir = tmp_path / "sweep"
  runner = subprocess.Popen(sweep_cmd(experiment, workdir, "--no-results"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env(), start_new_session=True)
  try:
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few arms are done, others mid-run
      done = [d for d in workdir.glob("*/") if (sweep_status.read_status(str(d)) or {}).get(
          "state") == "done"] if workdir.exists() else []
      if len(done) >= 3:
        break
      time.sleep(0.2)
  finally:
    os.killpg(runner.pid, signal.SIGKILL)  # the runner and every arm it started
    runner.wait()
  assert len(done) >= 3
  status = run(sweep_cmd(experiment, workdir, "--status"))
  assert status.returncode == 0
  assert "pending" in status.stdout or "interrupted" in status.stdout, status.stdout

  proc = run(sweep_cmd(experiment, workdir))
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.stdout.count("already finished, skipped") >= 3
  clean_dir = clean_sweep[0]
  for arm in sorted(os.listdir(clean_dir)):
    if (clean_dir / arm / "metrics.jsonl").exists():
      assert losses(str(workdir / arm)) == losses(str(clean_dir / arm)), arm

  status = run(sweep_cmd(experiment, workdir, "--status"))
  bad = [l for l in status.stdout.splitlines() if l.startswith("seq_warmup=on")]
  assert len(bad) == 1 and "failed" in bad[0] and "seq_warmup" in bad[0].split("failed")[1]
  assert f"{N_ARMS} done, 1 failed" in status.stdout
  table = (workdir / "results.md").read_text()
  assert "failed: " in table


def test_results_csv_matches_each_arms_metrics(clean_sweep):
  workdir, _ = clean_sweep
  with open(workdir / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == N_ARMS
  for row in rows:
    lines = [json.loads(l) for l in open(workdir / row["arm"] / "metrics.jsonl")]
    final = [r for r in lines if r.get("final")][-1]
    train = [r for r in lines if "loss" in r]
    config = json.load(open(workdir / row["arm"] / "config.json"))
    assert float(row["lr"]) == config["optim"]["lr"]
    assert row["name"] == config["optim"]["name"]
    assert int(row["seed"]) == config["train"]["seed"]
    assert float(row["eval_loss"]) == final["eval_loss"]
    assert float(row["eval_bpb"]) == final["eval_bpb"]
    assert float(row["gzip_bpb"]) == final["gzip_bpb"]
    assert float(row["best_eval_loss"]) == min(r["eval_loss"] for r in lines
                                               if "eval_loss" in r)
    assert int(row["steps"]) == final["step"] == 6
    assert int(row["tokens"]) == final["tokens"] == 6 * 2 * 64
    assert float(row["max_grad_norm"]) == max(r["grad_norm"] for r in train)
    assert int(row["skipped"]) == train[-1]["skipped_steps"]
    assert float(row["tokens_per_sec"]) == np.median([r["tokens_per_sec"] for r in train])
    assert row["status"] == "done"
  # The experiment's plot(table, dir) ran with the same table.
  own = dict(l.split() for l in open(workdir / "own.txt"))
  assert {r["arm"]: float(r["eval_loss"]) for r in rows} == {
      k: float(v) for k, v in own.items()}


def test_results_show_computed_verdicts_and_provenance(clean_sweep):
  """The declared comparison's paired differences and verdict are recomputed from the
  table; the provenance block names this checkout's commit and the corpus; PLOTS
  leaves final.png out."""
  from phijax.sweeps import stats
  from phijax.train.pieces import provenance
  workdir, _ = clean_sweep
  md = (workdir / "results.md").read_text()
  table, _ = tables.collect(str(workdir))
  exp = {}
  exec(compile(EXPERIMENT, "exp", "exec"), exp)  # noqa: S102 (the test's own text)
  result = stats.compare(table.rows, exp["COMPARISONS"][0])
  assert len(result.diffs) == 2  # seeds 0 and 1, each adamw row paired with sgd's
  for (seed, _), d in result.diffs:
    adamw, = table.where(name="adamw", seed=seed)
    sgd, = table.where(name="sgd", seed=seed)
    assert d == pytest.approx(adamw["eval_loss"] - sgd["eval_loss"])
  assert stats.markdown([result]).splitlines()[-1] in md
  assert f"**{result.verdict}**" in md and (workdir / "paired.png").exists()
  assert (workdir / "curves.png").exists() and not (workdir / "final.png").exists()
  assert "final.png" not in md
  commit, _ = provenance.git_state()
  assert "## Provenance" in md
  assert f"| commit | {commit[:12] if commit else 'not a git checkout'} |" in md
  assert "| corpus as this machine reads it now | the same |" in md
  record = provenance.read(str(workdir / table.rows[0]["arm"]))[0]
  assert record["command"].startswith("python -m phijax.train --config=")
  assert f"--workdir={workdir / table.rows[0]['arm']}" in record["command"]
  assert record["outcome"] == "finished" and record["steps"] == 6
  assert f"| tokenizer | {record['tokenizer']} |" in md


def test_arm_evals_are_columns_cached_and_rerun_when_the_arm_changes(clean_sweep):
  """EVALS: phijax.evaluate ran on the selected arms' final models (its held-out
  bits/byte equal the run's own final evaluation of the same rows), an in-process fn on
  every arm; the columns are in results.csv and results.md; a second results run
  evaluates nothing, a changed final step evaluates that arm again."""
  workdir, _ = clean_sweep
  with open(workdir / "results.csv") as f:
    rows = {r["arm"]: r for r in csv.DictReader(f)}
  for arm, row in rows.items():
    if "name=adamw,seed=0" in arm:
      assert float(row["again_bpb"]) == pytest.approx(float(row["eval_bpb"]), rel=1e-5)
      assert (workdir / arm / "evals-again.log").exists()
    else:
      assert row["again_bpb"] == "nan"
    assert int(row["log_bytes"]) == os.path.getsize(workdir / arm / "log.txt")
  md = (workdir / "results.md").read_text()
  assert "| again_bpb | log_bytes |" in md
  calls = (workdir / "fn_calls.txt").read_text().split()
  assert sorted(calls) == sorted(rows)
  one = next(a for a in rows if "name=adamw,seed=0" in a)
  logs = {one: (workdir / one / "evals-again.log").stat().st_mtime_ns}
  results.write_results(str(workdir))  # all cached
  assert (workdir / "fn_calls.txt").read_text().split() == calls
  assert logs == {a: (workdir / a / "evals-again.log").stat().st_mtime_ns for a in logs}
  # A newer final checkpoint (the arm was trained on): both evals run again for it.
  ckpt = workdir / one / "checkpoints"
  newest = max(int(d.name) for d in ckpt.iterdir() if d.name.isdigit())
  shutil.copytree(ckpt / str(newest), ckpt / str(newest + 1))
  try:
    results.write_results(str(workdir))
  finally:
    shutil.rmtree(ckpt / str(newest + 1))
  assert (workdir / "fn_calls.txt").read_text().split() == calls + [one]
  assert (workdir / one / "evals-again.log").stat().st_mtime_ns > logs[one]


def test_arm_eval_cache_does_not_depend_on_how_the_sweep_dir_is_spelled(tmp_path,
                                                                          monkeypatch):
  """The sweep runner writes results with an absolute directory, `python -m
  phijax.results runs/x` with the one typed: the same cached report serves both."""
  from phijax.sweeps import evals
  arm = tmp_path / "sweep" / "a"
  (arm / "checkpoints" / "6").mkdir(parents=True)
  ev = evals.ArmEval("again", task="bpb", columns={"bpb": "eval_bpb"})
  report = evals._report_path(ev, str(arm))  # pylint: disable=protected-access
  os.makedirs(os.path.dirname(report))
  with open(report, "w") as f:
    json.dump({"scores": {"eval_bpb": 1.25}}, f)
  evals._store(ev, str(arm), "exp.py", None)  # as the runner stamps it: absolute
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(evals, "_run_tasks", lambda *a: pytest.fail("evaluated again"))
  table = tables.Table([{"arm": "a", "status": "done"}], [])
  evals.add_columns(table, "sweep", [ev], "exp.py")
  assert table.rows[0]["bpb"] == 1.25


def test_results_of_a_moved_sweep_say_the_experiment_is_missing(clean_sweep, tmp_path,
                                                                 capsys):
  """sweep.json names the experiment relative to the sweep directory: a copy elsewhere
  still gets its tables, and says that the experiment's summarize/plot were skipped."""
  workdir, _ = clean_sweep
  moved = tmp_path / "deeper" / "copy"
  shutil.copytree(workdir, moved, ignore=shutil.ignore_patterns("own.txt"))
  results.write_results(str(moved))
  err = capsys.readouterr().err
  assert "does not exist, so its summarize() is skipped" in err
  assert "does not exist, so its plot() is skipped" in err
  assert (moved / "results.csv").exists() and not (moved / "own.txt").exists()


def test_mean_std_against_numpy():
  values = [4.51, 4.52, 4.60, 4.71]
  m, s, n = tables.mean_std(values + [math.nan])  # a missing arm does not count
  assert (n, m, s) == (4, pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)))
  assert tables.mean_std([2.0]) == (2.0, 0.0, 1)
  rows = [{"arm": f"a{i}", "lr": lr, "seed": i, "status": "done", "eval_loss": v}
          for i, (lr, v) in enumerate([(0.1, 4.0), (0.1, 5.0), (0.2, 3.0), (0.2, 3.5)])]
  text = tables.grouped_table(tables.Table(rows, ["lr", "seed"]))
  assert f"| 0.1 | 2 | 4.5000 ± {np.std([4.0, 5.0], ddof=1):.4f} |" in text
  assert f"| 0.2 | 2 | 3.2500 ± {np.std([3.0, 3.5], ddof=1):.4f} |" in text


def test_arm_names():
  h = sweep_arms.Helpers()
  arms = h.product(h.sweep("optim.lr", [3e-2]),
                   h.sweep("curriculum.seq_warmup.enabled", [True]), h.seeds(2))
  names = sweep_arms.aliases([k for a in arms for k in a])
  assert [sweep_arms.arm_name(a, names) for a in arms] == [
      "lr=0.03,seq_warmup=on,seed=0", "lr=0.03,seq_warmup=on,seed=1"]
  zipped = h.zip(h.sweep("optim.lr", [1e-3, 1e-2]), h.sweep("data.path", ["a/b", "c d"]))
  names = sweep_arms.aliases([k for a in zipped for k in a])
  assert [sweep_arms.arm_name(a, names) for a in zipped] == ["lr=0.001,path=a_b",
                                                              "lr=0.01,path=c_d"]


@pytest.mark.parametrize("case,expected", [
    ("no_get_sweep", "has no get_sweep(h) function"),
    ("no_get_config", "has no get_config(arg=None) function"),
    ("unknown_key", "unknown config key config.optim.lrr"),
    ("same_name", "two arms have the same name 'lr=0.001'"),
    ("parallel_0", "--parallel: '0' must be positive"),
    ("launcher_args", "options after -- (--cluster=local) are for --launcher=slurm"),
])
def test_bad_input_is_one_line(case, expected, tmp_path):
  head = "from phijax.configs import tiny\n"
  config = "def get_config(arg=None):\n  return tiny.get_config('runlocal')\n"
  texts = {
      "no_get_sweep": head + config,
      "no_get_config": "def get_sweep(h):\n  return h.sweep('optim.lr', [1e-3])\n",
      "unknown_key": head + config + "def get_sweep(h):\n  return h.sweep('optim.lrr', [1])\n",
      "same_name": head + config
                   + "def get_sweep(h):\n  return h.sweep('optim.lr', [1e-3, 0.001])\n",
  }
  experiment = write(tmp_path / "exp.py", texts.get(case, texts["same_name"]))
  flags = {"parallel_0": ["--parallel=0"],
           "launcher_args": ["--", "--cluster=local"]}.get(case, [])
  proc = run([sys.executable, "-m", "phijax.sweep", experiment,
              f"--workdir={tmp_path / 'w'}", *flags])
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "error:" in lines[0] and expected in lines[0], proc.stderr
  assert not (tmp_path / "w").exists()  # nothing ran, nothing written


def test_dry_run_lists_arms_and_overrides(tmp_path):
  experiment = write(tmp_path / "exp.py", EXPERIMENT)
  proc = run([sys.executable, "-m", "phijax.sweep", experiment, f"--workdir={tmp_path / 'w'}",
              "--dry-run", "--only=seed=1", "--config.train.steps=3"])
  assert proc.returncode == 0, proc.stderr
  assert "2 arm(s)" in proc.stdout
  assert ("--config.train.steps=3 --config.optim.lr=0.001 --config.optim.name=adamw "
          "--config.train.seed=1") in proc.stdout
  assert not (tmp_path / "w").exists()


TWO_ARMS = textwrap.dedent('''
    from phijax import config as base
    from phijax.configs import tiny

    def get_config(arg=None):
      c = tiny.get_config("runlocal")
      c.train.update(steps=4, batch_size=2, log_every=1, eval_every=4, eval_batches=1,
                     final_eval_batches=1, save_every=2, samples=0, progress=False)
      return base.finish(c, arg)

    def get_sweep(h):
      return h.sweep("optim.lr", [1e-3, 1e-2])
''')


def test_slurm_launcher_runs_the_arms_with_submitits_local_executor(tmp_path):
  """--launcher=slurm hands the arms to launch/slurm.py as one job array; with
  submitit's local executor each arm is a job on this machine, and the sweep records
  and summarizes them as a local sweep would."""
  pytest.importorskip("submitit")
  experiment = write(tmp_path / "exp.py", TWO_ARMS)
  workdir = tmp_path / "sweep"
  cmd = [sys.executable, "-m", "phijax.sweep", experiment, f"--workdir={workdir}",
         "--launcher=slurm"]
  launcher = ["--", "--cluster=local", "--time=10"]
  proc = run(cmd + launcher)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "2 arm(s), one slurm job each" in proc.stdout
  assert "submitted 2 job(s)" in proc.stdout
  arms = json.load(open(workdir / runner.ARMS_FILE))
  assert [a["name"] for a in arms] == ["lr=0.001", "lr=0.01"]
  for arm in arms:
    arm_dir = workdir / arm["name"]
    status = sweep_status.read_status(str(arm_dir))
    assert status["state"] == "done" and status["launcher"] == "slurm", status
    assert sorted(losses(str(arm_dir))[0]) == [1, 2, 3, 4]
    assert arm["command"][-1] == f"--config.optim.lr={arm['name'].split('=')[1]}"
    assert "done: step 4" in (arm_dir / "log.txt").read_text()  # rank 0's output
  assert len(list((workdir / "slurm").glob("*_result.pkl"))) == 2  # submitit's jobs
  assert (workdir / "results.md").stat().st_size > 0
  # A rerun submits nothing: both arms are finished. (--no-results: the tables were
  # checked above; writing them again costs ~5 s of imports and plots, checks nothing.)
  proc = run(cmd + ["--no-results"] + launcher)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.stdout.count("already finished, skipped") == 2
  assert "submitted" not in proc.stdout


# ------------------------------------------------------------ arms that need other arms

DEPENDENT = textwrap.dedent('''
    """Recipes by config argument, and arms that reference other arms' directories."""
    from phijax.configs import tiny

    def get_config(arg=None):
      c = tiny.get_config("runlocal")
      if arg == "tune":
        c.optim.lr = 1e-4
      return c

    def get_sweep(h):
      return ARMS

    ARMS = [
        {"config": "base", "train.seed": 0},
        {"config": "tune", "train.seed": 0,
         "train.init_from": "{arm:config=base,seed=0}"},
        {"config": "tune2", "train.seed": 0,
         "train.init_from": "{arm:config=tune,seed=0}/best"},
        {"config": "base", "train.seed": 1},
    ]
''')


def _fake_train(monkeypatch, fail=()):
  """Arms run a stub in place of phijax.train: it logs when it starts and ends (to
  see the order) and finishes with a final metrics row, or exits 1 for ``fail``."""
  stub = textwrap.dedent('''
      import json, os, sys, time
      workdir, log = sys.argv[1], sys.argv[2]
      with open(log, "a") as f:
        f.write(f"start {os.path.basename(workdir)}\\n")
      time.sleep(0.1)
      with open(log, "a") as f:
        f.write(f"end {os.path.basename(workdir)}\\n")
      if os.path.basename(workdir) in sys.argv[3:]:
        sys.exit(1)
      with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 1, "final": True, "eval_loss": 1.0}) + "\\n")
  ''')

  def command(spec, arm):
    return [sys.executable, "-S", "-c", stub, arm.workdir, _fake_train.log, *fail]  # -S: fast

  monkeypatch.setattr(runner, "arm_command", command)


def test_arm_references_resolve_order_and_fail_clearly(tmp_path, monkeypatch):
  module = type(sys)("dep_exp")
  exec(DEPENDENT, module.__dict__)
  spec = str(tmp_path / "exp.py")
  workdir = str(tmp_path / "sweep")
  arms = sweep_arms.make_arms(spec, module, workdir)
  names = [a.name for a in arms]
  # References are left out of names; the config argument is a field like any other.
  assert names == ["config=base,seed=0", "config=tune,seed=0", "config=tune2,seed=0",
                   "config=base,seed=1"]
  tune = arms[1]
  assert tune.needs == ["config=base,seed=0"]
  assert f"--config.train.init_from={workdir}/config=base,seed=0" in tune.flags
  assert f"--config.train.init_from={workdir}/config=tune,seed=0/best" in arms[2].flags
  assert tune.spec == f"{spec}:tune" and "init_from" not in json.dumps(tune.overrides)
  assert runner.arm_command(spec, tune)[3] == f"--config={spec}:tune"
  # --only adds what the selected arms need.
  assert [a.name for a in sweep_arms.with_dependencies([arms[2]], arms)] == names[:3]

  # Two arms at a time: the dependent ones still wait for what they reference.
  _fake_train.log = str(tmp_path / "order.txt")
  _fake_train(monkeypatch)
  states = runner.run_arms(spec, arms, parallel=2)
  assert set(states.values()) == {"done"}
  order = open(_fake_train.log).read().split("\n")
  for before, after in ((names[0], names[1]), (names[1], names[2])):
    assert order.index(f"end {before}") < order.index(f"start {after}"), order

  # A failed dependency: the arms that need it, directly or not, never start.
  workdir2 = str(tmp_path / "sweep2")
  for a in arms:  # the same arms in a fresh sweep directory (the stub reads no flags)
    a.workdir = os.path.join(workdir2, a.name)
  _fake_train.log = str(tmp_path / "order2.txt")
  _fake_train(monkeypatch, fail=[names[0]])
  states = runner.run_arms(spec, arms, parallel=2)
  assert states == {names[0]: "failed", names[1]: "failed", names[2]: "failed",
                    names[3]: "done"}
  started = [l for l in open(_fake_train.log).read().split("\n") if l.startswith("start")]
  assert sorted(started) == [f"start {names[0]}", f"start {names[3]}"]
  record = sweep_status.read_status(os.path.join(workdir2, names[1]))
  assert record["error"] == f"needs arm {names[0]}, which did not finish (failed)"
  assert "needs arm config=tune,seed=0" in sweep_status.read_status(
      os.path.join(workdir2, names[2]))["error"]


@pytest.mark.parametrize("arms,expected", [
    ([{"config": "a", "train.init_from": "{arm:config=b}"},
      {"config": "b", "train.init_from": "{arm:config=a}"}],
     "arms reference each other in a cycle: config=a -> config=b -> config=a"),
    ([{"config": "a", "train.init_from": "{arm:config=c}"}],
     "arm config=a: {arm:config=c} names no arm"),
])
def test_arm_reference_cycles_and_unknown_arms_are_errors(arms, expected, tmp_path):
  from phijax import cli
  module = type(sys)("dep_exp")
  exec(DEPENDENT, module.__dict__)
  module.ARMS = arms
  with pytest.raises(cli.UsageError, match=expected.replace("{", r"\{").replace(
      "}", r"\}")) as e:
    sweep_arms.make_arms(str(tmp_path / "exp.py"), module, str(tmp_path / "w"))
  assert "\n" not in str(e.value)


def test_a_program_arm_runs_its_module_with_the_same_flags(tmp_path):
  """``"program": MODULE`` runs ``python -m MODULE`` (a step such as
  phijax.curate.score_run) with the arm's flags; it is left out of the arm's name."""
  from phijax import cli
  module = type(sys)("dep_exp")
  exec(DEPENDENT, module.__dict__)
  module.ARMS = [{"config": "base", "train.seed": 0},
                 {"config": "tune", "program": "phijax.curate.score_run",
                  "train.init_from": "{arm:config=base,seed=0}"}]
  spec, workdir = str(tmp_path / "exp.py"), str(tmp_path / "w")
  base, step = sweep_arms.make_arms(spec, module, workdir)
  assert step.name == "config=tune" and step.needs == ["config=base,seed=0"]
  assert base.program == "phijax.train"
  assert runner.arm_command(spec, step)[1:5] == [
      "-m", "phijax.curate.score_run", f"--config={spec}:tune",
      f"--workdir={workdir}/config=tune"]
  assert f"--config.train.init_from={workdir}/config=base,seed=0" in step.flags
  module.ARMS[1]["program"] = "phijax.no_such_module"
  with pytest.raises(cli.UsageError, match="program='phijax.no_such_module' is no module"):
    sweep_arms.make_arms(spec, module, workdir)


def test_run_summary_of_a_dpo_run(tmp_path):
  """A DPO run's final row has a loss and reward numbers but no bits per byte."""
  rows = [{"step": 1, "tokens": 8, "loss": 0.69, "grad_norm": 1.0, "tokens_per_sec": 5.0,
           "reward_margin": 0.0, "reward_accuracy": 0.0},
          {"step": 1, "tokens": 8, "final": True, "eval_loss": 0.5,
           "eval_reward_accuracy": 0.75, "eval_reward_margin": 0.2, "eval_pairs": 4}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = runs.run_summary(str(tmp_path))
  assert summary["eval_loss"] == 0.5 and math.isnan(summary["eval_bpb"])
  assert summary["status"] == "done" and summary["steps"] == 1


def test_best_eval_loss_leaves_out_the_starting_model(tmp_path):
  """A warm start's step-0 evaluation (train.eval_at_start) starts the eval curve but
  is not a result of training: it is no candidate for the best eval loss."""
  rows = [{"step": 0, "tokens": 0, "eval_loss": 1.0},
          {"step": 2, "tokens": 16, "loss": 2.0, "grad_norm": 1.0, "tokens_per_sec": 5.0},
          {"step": 2, "tokens": 16, "eval_loss": 1.5},
          {"step": 4, "tokens": 32, "final": True, "eval_loss": 1.7}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = runs.run_summary(str(tmp_path))
  assert summary["best_eval_loss"] == 1.5 and summary["eval_loss"] == 1.7
  assert summary["eval_curve"] == ([0, 16], [1.0, 1.5])


def test_curves_of_a_token_selection_arm_are_over_all_tokens(tmp_path):
  """A Rho-1 arm's ``loss`` covers its selected tokens only; its curve is ``lm_loss``
  (every token), which is what a plain arm's ``loss`` is."""
  rows = [{"step": s, "tokens": 8 * s, "loss": 5.0 - s, "lm_loss": 6.0 - s,
           "grad_norm": 1.0, "tokens_per_sec": 5.0} for s in (1, 2)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = runs.run_summary(str(tmp_path))
  assert summary["curve"] == ([8, 16], [5.0, 4.0])


def test_a_kept_sweep_file_that_misses_arms_is_named(tmp_path, capsys):
  """--only keeps an existing sweep.json (a smoke run must not rewrite a full sweep's
  record) but says which arms it does not list: the results table would leave them out."""
  (tmp_path / sweep_arms.SWEEP_FILE).write_text(json.dumps({"arms": [{"name": "lr=0.1"}]}))
  arms = [sweep_arms.Arm(n, {}, [], str(tmp_path)) for n in ("lr=0.1", "lr=0.3")]
  sweep_command._warn_stale_sweep_file(str(tmp_path), arms)
  err = capsys.readouterr().err
  assert "does not list 1 arm(s)" in err and "lr=0.3" in err and "lr=0.1," not in err
  sweep_command._warn_stale_sweep_file(str(tmp_path), arms[:1])
  assert capsys.readouterr().err == ""


def test_provenance_block_names_differences_and_no_machine_paths(tmp_path, monkeypatch):
  """Arms that ran other commits are named; the command shows paths relative to where
  results are written (a committed results.md names no path of its machine)."""
  from phijax.sweeps import provenance as sweep_provenance
  monkeypatch.chdir(tmp_path)
  rows = []
  for arm, commit, dirty in (("a", "1" * 40, False), ("b", "2" * 40, True)):
    (tmp_path / "sweep" / arm).mkdir(parents=True)
    record = {"commit": commit, "dirty": dirty, "changed": ["experiments/x.py"] * dirty,
              "corpus": {"stdlib": "stdlib:x"},
              "tokenizer": "t", "command": f"python -m phijax.train --workdir={tmp_path}"
              f"/sweep/{arm} --config={tmp_path}/exp.py"}
    (tmp_path / "sweep" / arm / "provenance.json").write_text(json.dumps([record]))
    rows.append({"arm": arm, "wall_s": 60.0})
  block, warnings = sweep_provenance.section(rows, str(tmp_path / "sweep"))
  assert "| commit | **differs between arms**: 111111111111 (a); 222222222222 (b) |" in block
  assert warnings[0] == "arms differ in commit: 111111111111 (a); 222222222222 (b)"
  # which files were uncommitted, so a reader can judge whether they matter
  assert warnings[1] == ("arms differ in dirty: clean (a); uncommitted changes in "
                         "experiments/x.py (b)")
  assert "`python -m phijax.train --workdir=sweep/a --config=exp.py`" in block
  assert str(tmp_path) not in block and "over 2 arms) | 0.03 h (120 s)" in block


def test_empty_plots_draws_no_generic_figure(tmp_path):
  """PLOTS = () asks for neither generic figure (an empty tuple is not the default,
  both); a stale one from an earlier results run is removed."""
  write(tmp_path / "exp.py", "def get_config(arg=None):\n  pass\n\n\n"
        "def get_sweep(h):\n  pass\n\n\nPLOTS = ()\n")
  sweep = tmp_path / "sweep"
  names = ["lr=0.1", "lr=0.2"]
  for name in names:
    (sweep / name).mkdir(parents=True)
    (sweep / name / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "tokens": 8, "loss": 3.0}) + "\n"
        + json.dumps({"step": 1, "tokens": 8, "eval_loss": 2.0, "final": True}) + "\n")
  (sweep / sweep_arms.SWEEP_FILE).write_text(json.dumps(
      {"experiment": "../exp.py", "common_overrides": [], "aliases": {"optim.lr": "lr"},
       "arms": [{"name": n, "overrides": {"optim.lr": float(n[3:])}} for n in names]}))
  (sweep / "final.png").write_bytes(b"stale")
  paths = results.write_results(str(sweep))
  assert not any(p.endswith(".png") for p in paths)
  assert not (sweep / "curves.png").exists() and not (sweep / "final.png").exists()
  assert "Plots:" not in (sweep / "results.md").read_text()


def test_an_only_run_records_every_arms_field_names(tmp_path):
  """A first --only run writes sweep.json for all arms, with the short names of all
  their fields (results check a comparison's fields against them), not only those of
  the arms it ran."""
  experiment = write(tmp_path / "exp.py", EXPERIMENT + BAD_ARM)
  proc = run(sweep_cmd(experiment, tmp_path / "sweep", "--only=seq_warmup", "--no-results"))
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]  # the bad arm
  record = sweep_arms.read_sweep_file(str(tmp_path / "sweep"))
  assert len(record["arms"]) == N_ARMS + 1
  assert {"optim.lr": "lr", "optim.name": "name", "train.seed": "seed",
          "curriculum.seq_warmup.enabled": "seq_warmup"}.items() <= record["aliases"].items()
