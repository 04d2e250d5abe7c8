"""The curriculum against hand-computed tables and plain-Python oracles: DeepSpeed's
sequence-length pacing, bucketing, batch shortening, LR schedules (token-based decay
included), stages, config errors, and the plot command."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from phijax import config as base
from phijax.train import curriculum
from phijax import curriculum_plot
from phijax.data import config as data_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(seq_len=1024, batch=4, steps=100, tokens=0, lr=1e-3, **warmup):
  c = base.default()
  c.data.seq_len = seq_len
  c.train.update(batch_size=batch, steps=steps, tokens=tokens)
  c.optim.lr = lr
  c.curriculum.lr.update(schedule="constant", warmup_steps=0)
  if warmup:
    c.curriculum.seq_warmup.enabled = True
    c.curriculum.seq_warmup.update(warmup)
  return c


def lengths(cur, ts):
  # duration in steps: the pacing coordinate is the step
  return [cur.at(t, 0).seq_len for t in ts]


def walk(cur, max_steps=100_000):
  """Runs the curriculum the way the train loop does: tokens += the step's batch."""
  rows, step, tokens = [], 0, 0
  while True:
    p = cur.at(step, tokens)
    rows.append(p)
    if p.done or step >= max_steps:
      return rows
    step += 1
    tokens += p.tokens_per_step


# --- sequence-length pacing: DeepSpeed fixed_linear / fixed_root / fixed_discrete

# max 1024, T = 100 steps, t = 0..5; hand-computed from
# floor((t/T)^(1/deg) * (max - min) + min), down to a multiple of step, floored at the
# first multiple of step >= min (PR #8334's table gives 0 first for 8/16 and 1/8).
LINEAR_TABLE = {
    (8, 8): [8, 16, 24, 32, 48, 56],
    (8, 16): [16, 16, 16, 32, 48, 48],  # pre-fix DeepSpeed: [0, 16, 16, 32, 48, 48]
    (64, 16): [64, 64, 80, 80, 96, 112],
    (1, 8): [8, 8, 16, 24, 40, 48],  # pre-fix DeepSpeed: [0, 8, 16, 24, 40, 48]
}


@pytest.mark.parametrize("start,step_size", sorted(LINEAR_TABLE))
def test_linear_pacing_matches_deepspeed_table(start, step_size):
  cur = curriculum.Curriculum(make_config(
      kind="linear", start=start, step_size=step_size, duration=100.0,
      duration_unit="steps", buckets="none"))
  assert lengths(cur, range(6)) == LINEAR_TABLE[(start, step_size)]
  # 99/100 * 1016 + 8 = 1013.84 -> 1013 -> a multiple of step; from T on: max.
  assert lengths(cur, [99, 100, 101, 10_000]) == [1013 - 1013 % step_size, 1024, 1024, 1024]
  assert curriculum.paced_length(0, 100, start, 1024, step_size) >= start


def test_root_pacing_matches_deepspeed_table():
  cur = curriculum.Curriculum(make_config(
      kind="root", degree=2, start=8, step_size=8, duration=100.0, duration_unit="steps",
      buckets="none"))
  # sqrt(t/100) * 1016 + 8: t=1 -> 109.6, t=4 -> 211.2, t=25 -> 516, t=50 -> 726.4,
  # t=81 -> 922.4, each floored and cut to a multiple of 8.
  assert lengths(cur, [0, 1, 4, 25, 50, 81, 100]) == [8, 104, 208, 512, 720, 920, 1024]


def test_discrete_pacing_matches_deepspeed_definition():
  cur = curriculum.Curriculum(make_config(
      kind="discrete", lengths="64,128,256", boundaries="10,20", duration_unit="steps",
      max=256, seq_len=256))
  # lengths[i] while t <= boundaries[i], then the last
  assert lengths(cur, [0, 10, 11, 20, 21, 500]) == [64, 64, 128, 128, 256, 256]
  assert cur.buckets() == [64, 128, 256]


def test_pacing_in_tokens_and_fractions():
  # duration as a fraction of a 100-step run = 30 steps: (t/30) * 56 + 8, step 8
  cur = curriculum.Curriculum(make_config(
      seq_len=64, kind="linear", start=8, step_size=8, duration=0.3, buckets="none"))
  assert lengths(cur, [0, 5, 15, 29, 30]) == [8, 16, 32, 56, 64]
  # duration in tokens: the coordinate is tokens seen, whatever the step
  cur = curriculum.Curriculum(make_config(
      seq_len=64, kind="linear", start=8, step_size=8, duration=5600.0,
      duration_unit="tokens", buckets="none"))
  assert [cur.at(0, t).seq_len for t in (0, 799, 800, 2800, 5599, 5600)] == \
      [8, 8, 16, 32, 56, 64]


# --- buckets: bounded compilation


def test_pow2_buckets_bound_the_number_of_lengths():
  cur = curriculum.Curriculum(make_config(
      steps=1000, kind="linear", start=64, step_size=8, duration=0.3, buckets="pow2"))
  assert cur.buckets() == [64, 128, 256, 512, 1024]
  assert curriculum.buckets(cur_config := make_config(
      steps=1000, kind="linear", start=64, step_size=8, duration=0.3)) == cur.buckets()
  assert cur_config.curriculum.seq_warmup.buckets == "pow2"  # the default bounds compiles
  assert len(cur.buckets()) == math.log2(1024 / 64) + 1
  for t in range(0, 1000, 7):
    ds = min(1024, (math.floor(min(t / 300, 1) * 960 + 64) // 8) * 8)  # DeepSpeed
    assert cur.at(t, 0).seq_len == 2 ** int(math.log2(ds)), t  # snapped down to pow2
  assert sorted(set(cur.plan()["seq_len"].tolist())) == cur.buckets()


def test_multiple_buckets_and_visited_lengths():
  cur = curriculum.Curriculum(make_config(
      steps=1000, kind="linear", start=64, step_size=8, duration=0.3,
      buckets="multiple:256"))
  assert cur.buckets() == [64, 256, 512, 768, 1024]
  for t in range(0, 400, 3):
    ds = (math.floor(min(t / 300, 1) * 960 + 64) // 8) * 8
    assert cur.at(t, 0).seq_len == (ds // 256 * 256 if ds >= 256 else 64), t
  # a run that ends before warmup does compiles only the lengths it reaches
  short = curriculum.Curriculum(make_config(
      steps=100, kind="linear", start=64, step_size=8, duration=1000.0,
      duration_unit="steps"))
  assert short.buckets() == [64, 128]  # at t=99: 99/1000*960 + 64 = 159 -> 128


# --- shortening batches


def full_batch(rows=3, length=16):
  rng = np.random.default_rng(0)
  inputs = rng.integers(0, 1000, (rows, length)).astype(np.int32)
  segment_ids = np.repeat(np.array([[1] * 5 + [2] * 7 + [3] * 4]), rows, 0).astype(np.int32)
  starts = np.array([0] * 5 + [5] * 7 + [12] * 4)
  positions = np.tile(np.arange(length) - starts, (rows, 1)).astype(np.int32)
  return {"inputs": inputs, "targets": np.roll(inputs, -1, axis=1),
          "segment_ids": segment_ids, "positions": positions,
          "loss_mask": (rng.random((rows, length)) > 0.3).astype(np.float32),
          "row_id": np.arange(rows)}


def test_reshape_keeps_every_token():
  batch = full_batch()
  out = curriculum.shorten_batch(batch, 4, "reshape")
  assert out["inputs"].shape == (12, 4) and out["loss_mask"].shape == (12, 4)
  for key in ("inputs", "targets", "segment_ids", "positions", "loss_mask"):
    # new row 4*b + k is columns [4k, 4k+4) of old row b: every token, in order
    for b in range(3):
      for k in range(4):
        np.testing.assert_array_equal(out[key][4 * b + k], batch[key][b, 4 * k:4 * k + 4])
  assert out["inputs"].size == batch["inputs"].size
  assert out["loss_mask"].sum() == batch["loss_mask"].sum()
  np.testing.assert_array_equal(out["row_id"], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
  # document 2 (cols 5..11) is cut at col 8: it goes on in the next row, same id,
  # positions continuing (3, 4, 5, 6), so RoPE sees the same offsets as before
  np.testing.assert_array_equal(out["segment_ids"][2], [2, 2, 2, 2])
  np.testing.assert_array_equal(out["positions"][2], [3, 4, 5, 6])


def test_truncate_drops_exactly_the_tail():
  batch = full_batch()
  out = curriculum.shorten_batch(batch, 6, "truncate")
  for key in ("inputs", "targets", "segment_ids", "positions", "loss_mask"):
    assert out[key].shape == (3, 6)
    np.testing.assert_array_equal(out[key], batch[key][:, :6])
  np.testing.assert_array_equal(out["row_id"], batch["row_id"])
  # what is gone is exactly the last 10 columns of every row
  assert batch["inputs"].size - out["inputs"].size == 3 * 10
  same = curriculum.shorten_batch(batch, 16, "truncate")
  np.testing.assert_array_equal(same["inputs"], batch["inputs"])


def test_shorten_batch_rejects_bad_lengths():
  batch = full_batch()
  with pytest.raises(ValueError, match="divide"):
    curriculum.shorten_batch(batch, 6, "reshape")
  with pytest.raises(ValueError, match="cannot shorten"):
    curriculum.shorten_batch(batch, 32, "truncate")
  with pytest.raises(ValueError, match="mode"):
    curriculum.shorten_batch(batch, 8, "crop")


def test_reshape_mode_counts_full_batches_of_tokens():
  cur = curriculum.Curriculum(make_config(
      seq_len=256, batch=4, steps=50, kind="linear", start=32, duration=0.5,
      mode="reshape"))
  assert cur.at(0, 0).seq_len == 32 and cur.at(0, 0).tokens_per_step == 4 * 256
  assert cur.total_tokens == 50 * 4 * 256


# --- learning rate


def lr_config(schedule, steps=100, lr=1.0, **kw):
  c = make_config(steps=steps, lr=lr)
  c.curriculum.lr.update(schedule=schedule, **kw)
  return curriculum.Curriculum(c)


def test_warmup_then_cosine():
  cur = lr_config("cosine", warmup_steps=10, min_ratio=0.1)
  for s in range(10):
    assert cur.at(s, 0).lr == pytest.approx((s + 1) / 10)  # Megatron's warmup count
  for s in range(10, 101):
    p = (s - 10) / 90
    assert cur.at(s, 0).lr == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def test_lima_linear_and_constant_and_rsqrt():
  cur = lr_config("linear", steps=10, lr=1e-5, end_lr=1e-6)
  assert [cur.at(s, 0).lr for s in range(11)] == pytest.approx(
      [1e-5 - 9e-6 * s / 10 for s in range(11)])
  cur = lr_config("constant", warmup_steps=4)
  assert [cur.at(s, 0).lr for s in (0, 3, 4, 99)] == pytest.approx([0.25, 1, 1, 1])
  cur = lr_config("rsqrt", warmup_steps=16)
  assert [cur.at(s, 0).lr for s in (15, 16, 64, 100)] == pytest.approx(
      [1.0, 1.0, 0.5, math.sqrt(16 / 100)])


@pytest.mark.parametrize("decay", ["exp", "linear"])
def test_wsd(decay):
  cur = lr_config("wsd", warmup_steps=10, decay_fraction=0.2, wsd_decay=decay, min_ratio=0.1)
  for s in range(10, 81):
    assert cur.at(s, 0).lr == pytest.approx(1.0), s  # stable until the last 20%
  for s in range(80, 101):
    p = (s - 80) / 20
    want = 0.1 ** p if decay == "exp" else 1 - 0.9 * p
    assert cur.at(s, 0).lr == pytest.approx(want), s


def test_token_based_decay_ends_at_the_same_tokens_with_and_without_seq_warmup():
  budget = 4 * 256 * 60  # tokens: 60 full batches
  runs = {}
  for warm in (False, True):
    c = make_config(seq_len=256, batch=4, tokens=budget, lr=1.0)
    c.curriculum.lr.update(schedule="cosine", warmup_steps=5, min_ratio=0.1)
    if warm:
      c.curriculum.seq_warmup.update(enabled=True, start=16, step_size=16, duration=0.5,
                                     buckets="none")
    runs[warm] = (curriculum.Curriculum(c), walk(curriculum.Curriculum(c)))
  for warm, (cur, rows) in runs.items():
    *running, last = rows
    assert last.done and last.tokens >= budget > running[-1].tokens
    assert last.lr == pytest.approx(0.1)  # end of decay exactly when the budget is met
    assert all(p.lr > 0.1 + 1e-9 for p in running)  # ... not before
    assert cur.total_steps_estimate() == last.step
    # oracle: cosine over tokens from where step-based warmup ended
    warm_tokens = rows[5].tokens
    for p in running[5:]:
      frac = (p.tokens - warm_tokens) / (budget - warm_tokens)
      assert p.lr == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
  # with warmup the short early batches take more steps for the same tokens
  assert runs[True][1][-1].step > runs[False][1][-1].step == 60
  # the plan the plot shows is the run the loop walks
  cur, rows = runs[True]
  plan = cur.plan()
  np.testing.assert_array_equal(plan["tokens"], [p.tokens for p in rows[:-1]])
  np.testing.assert_array_equal(plan["seq_len"], [p.seq_len for p in rows[:-1]])
  assert cur.buckets() == sorted({p.seq_len for p in rows[:-1]})


def test_step_based_decay_would_spend_the_schedule_on_short_batches():
  c = make_config(seq_len=256, batch=4, tokens=4 * 256 * 60, lr=1.0)
  c.curriculum.lr.update(schedule="linear", warmup_steps=0, min_ratio=0.0)
  c.curriculum.seq_warmup.update(enabled=True, start=16, step_size=16, duration=0.5,
                                 buckets="none")
  by_tokens = walk(curriculum.Curriculum(c))
  c.curriculum.lr.token_based_decay = False
  by_steps = walk(curriculum.Curriculum(c))
  half = next(p for p in by_tokens if p.tokens >= 4 * 256 * 30)
  assert half.lr == pytest.approx(1 - half.tokens / (4 * 256 * 60))
  assert by_steps[half.step].lr == pytest.approx(1 - half.step / (len(by_steps) - 1))
  assert by_steps[half.step].lr < half.lr - 0.2  # halfway in tokens, mostly decayed


# --- stages


def two_source_config(steps=100):
  c = make_config(steps=steps, lr=1.0)
  c.data.sources.web = data_config.source("text", "/data/web", weight=1.0)
  c.data.sources.hq = data_config.source("jsonl", "/data/hq.jsonl", weight=1.0)
  return c


def test_minicpm_stages_switch_exactly_with_their_own_lr():
  c = two_source_config()
  c.curriculum.lr.update(schedule="constant", warmup_steps=10)
  c.curriculum.stages.pretrain = curriculum.stage(0.9, "fraction", "web:1")
  c.curriculum.stages.anneal = curriculum.stage(
      0.1, "fraction", "web:0.7,hq:0.3", lr_schedule="exp", end_ratio=0.1)
  c.curriculum.stage_order = "pretrain,anneal"
  cur = curriculum.Curriculum(c)
  for s in range(100):
    p = cur.at(s, 0)
    if s < 90:
      assert (p.stage, p.stage_name) == (0, "pretrain")
      assert p.weights == {"stdlib": 0.0, "web": 1.0, "hq": 0.0}
      assert p.lr == pytest.approx(min(1, (s + 1) / 10))
    else:
      assert (p.stage, p.stage_name) == (1, "anneal")
      assert p.weights == pytest.approx({"stdlib": 0.0, "web": 0.7, "hq": 0.3})
      assert p.lr == pytest.approx(0.1 ** ((s - 90) / 10))
  assert cur.at(100, 0).done and not cur.at(99, 0).done
  assert cur.at(95, 0).scalars() == pytest.approx(
      {"lr": 0.1 ** 0.5, "seq_len": 1024, "stage": 1, "mix/stdlib": 0.0, "mix/web": 0.7,
       "mix/hq": 0.3})


@pytest.mark.parametrize("rule", ["linear", "cosine", "constant"])
def test_stage_lr_rule_starts_where_the_global_schedule_is(rule):
  c = two_source_config(steps=100)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=0, min_ratio=0.0)
  c.curriculum.stages.a = curriculum.stage(50, "steps", "web:1")
  c.curriculum.stages.b = curriculum.stage(0, "steps", "hq:1", lr_schedule=rule,
                                           end_ratio=0.2, lr_scale=2.0)
  c.curriculum.stage_order = "a,b"
  cur = curriculum.Curriculum(c)
  g0 = 0.5 * (1 + math.cos(math.pi * 0.5))  # global cosine at step 50: 0.5
  for s in range(50):
    assert cur.at(s, 0).lr == pytest.approx(0.5 * (1 + math.cos(math.pi * s / 100)))
  for s in range(50, 101):
    q = (s - 50) / 50
    want = {"linear": g0 + (0.2 - g0) * q, "constant": g0,
            "cosine": 0.2 + (g0 - 0.2) * 0.5 * (1 + math.cos(math.pi * q))}[rule]
    assert cur.at(s, 0).lr == pytest.approx(2.0 * want), s


def test_token_stages_switch_at_the_first_step_past_their_length():
  c = two_source_config(steps=200)
  c.data.seq_len = 64
  c.curriculum.seq_warmup.update(enabled=True, start=8, duration=0.5, buckets="none")
  c.curriculum.stages.a = curriculum.stage(3000, "tokens", "web:1")
  c.curriculum.stages.b = curriculum.stage(25, "steps", "hq:2,web:2", lr_scale=0.5)
  c.curriculum.stages.c = curriculum.stage(0, "steps", "")
  c.curriculum.stage_order = "a,b,c"
  cur = curriculum.Curriculum(c)
  rows = walk(cur)
  switch_b = next(p.step for p in rows if p.tokens >= 3000)
  for p in rows[:-1]:
    want = 0 if p.step < switch_b else 1 if p.step < switch_b + 25 else 2
    assert p.stage == want, p
    assert p.lr == pytest.approx(0.5 if want == 1 else 1.0)
  assert rows[switch_b].weights == pytest.approx({"stdlib": 0, "web": 0.5, "hq": 0.5})
  assert rows[-2].weights == pytest.approx({"stdlib": 1 / 3, "web": 1 / 3, "hq": 1 / 3})
  # a resumed run (a fresh Curriculum at a saved position) plans the same
  again = curriculum.Curriculum(c)
  for p in rows[switch_b - 2:switch_b + 30]:
    assert again.at(p.step, p.tokens) == p


def test_stage_weights_override_from_the_command_line(tmp_path):
  cfg_file = tmp_path / "cfg.py"
  cfg_file.write_text(
      "from phijax import config\nfrom phijax.train import curriculum\n"
      "from phijax.data import config as data_config\n"
      "def get_config(arg=None):\n"
      "  c = config.default()\n"
      "  c.data.sources.hq = data_config.source('jsonl', '/data/hq.jsonl')\n"
      "  c.train.steps = 50\n"
      "  c.curriculum.stages.main = curriculum.stage(0.8, 'fraction', 'stdlib:1')\n"
      "  c.curriculum.stages.anneal = curriculum.stage(0.2, 'fraction', 'hq:1')\n"
      "  c.curriculum.stage_order = 'main,anneal'\n"
      "  return c\n")
  out = tmp_path / "plan.png"
  res = subprocess.run(
      [sys.executable, "-m", "phijax.curriculum_plot", f"--config={cfg_file}",
       f"--out={out}", "--config.curriculum.stages.anneal.weights=hq:1,stdlib:3",
       "--config.curriculum.seq_warmup.enabled=true"],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert res.returncode == 0, res.stderr
  assert "stage 1 'anneal' from step 40" in res.stdout and "stdlib:0.75" in res.stdout
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  bad = subprocess.run(
      [sys.executable, "-m", "phijax.curriculum_plot", f"--config={cfg_file}",
       f"--out={out}", "--config.curriculum.stages.anneal.weights=books:1"],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]  # one line
  assert ("error: curriculum.stages.anneal.weights='books:1' names data source(s) ['books']"
          in bad.stderr)


# --- config errors


def error_of(mutate):
  c = make_config(seq_len=256, kind="linear", start=64)
  mutate(c)
  with pytest.raises(curriculum.CurriculumError) as e:
    curriculum.Curriculum(c)
  return str(e.value)


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c.curriculum.seq_warmup.update(start=512),
     "curriculum.seq_warmup.start=512 must be in [1, max=256]"),
    (lambda c: c.curriculum.seq_warmup.update(step_size=24),
     "curriculum.seq_warmup.step_size=24 does not divide the max length 256"),
    (lambda c: c.curriculum.seq_warmup.update(kind="cubic"),
     "curriculum.seq_warmup.kind='cubic' is unknown"),
    (lambda c: c.curriculum.lr.update(schedule="step"),
     "curriculum.lr.schedule='step' is unknown"),
    (lambda c: c.curriculum.stages.update({"x": curriculum.stage(0, "steps", "wiki:1")}),
     "curriculum.stages.x.weights='wiki:1' names data source(s) ['wiki'] that "
     "config.data.sources does not define"),
    (lambda c: c.curriculum.stages.update({"a": curriculum.stage(1), "b": curriculum.stage()}),
     "set curriculum.stage_order"),
    (lambda c: c.curriculum.seq_warmup.update(kind="discrete", lengths="64,128",
                                              boundaries="5,10"),
     "curriculum.seq_warmup.lengths='64,128' needs one more entry"),
    (lambda c: c.curriculum.seq_warmup.update(mode="reshape", start=48, step_size=16,
                                              buckets="none"),
     "do not divide it"),
    (lambda c: c.curriculum.lr.update(schedule="cosine", warmup_steps=100),
     "warmup (100 steps) is not shorter than the run"),
    (lambda c: c.curriculum.lr.update(schedule="wsd", min_ratio=0.0),
     "wsd_decay='exp'"),
    (lambda c: c.curriculum.seq_warmup.update(buckets="fib"),
     "curriculum.seq_warmup.buckets='fib' is unknown"),
])
def test_config_errors_name_the_field(mutate, expected):
  message = error_of(mutate)
  assert expected in message
  assert "\n" not in message


def test_stage_past_the_end_of_training_is_an_error():
  c = two_source_config(steps=100)
  c.curriculum.stages.a = curriculum.stage(100, "steps", "web:1")
  c.curriculum.stages.b = curriculum.stage(0, "steps", "hq:1")
  c.curriculum.stage_order = "a,b"
  with pytest.raises(curriculum.CurriculumError, match="'b' would start at step 100"):
    curriculum.Curriculum(c)


# --- the plot


def test_plot_plan_writes_a_png(tmp_path):
  c = two_source_config(steps=300)
  c.data.seq_len = 256
  c.curriculum.seq_warmup.update(enabled=True, start=32, duration=0.3)
  c.curriculum.lr.update(schedule="wsd", warmup_steps=20)
  c.curriculum.stages.pretrain = curriculum.stage(0.9, "fraction", "web:1")
  c.curriculum.stages.anneal = curriculum.stage(0.1, "fraction", "web:1,hq:1")
  c.curriculum.stage_order = "pretrain,anneal"
  path = tmp_path / "plan.png"
  cur = curriculum_plot.plot_plan(c, str(path))
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
  assert cur.buckets() == [32, 64, 128, 256]
  assert [s.start_step for s in cur.stages] == [0, 270]
