"""Arithmetic length generalization by position encoding and format (after Shen et al.
2023, "Positional Description Matters for Transformers Arithmetic", arXiv 2311.14737).

Question: a small phi trained on a+b with operands of 1 to N digits, tested on N+1 and
N+2 digits: which of {rotary positions (RoPE), no position encoding (NoPE), RoPE with
a random position offset per training row} x {plain digits, reversed digits} carries
addition past the trained lengths?

    python -m phijax.sweep experiments/arith_length.py \\
        --workdir=experiments/results/arith_length --parallel=2
    python -m phijax.results experiments/results/arith_length  # cheap: evals are cached
    # smoke: 1 arm of 100 steps, ~1-2 min
    python -m phijax.sweep experiments/arith_length.py --workdir=runs/arith_quick \\
        --only='pe=rope,offset=off,format=reversed,seed=0' --config.train.steps=100

Expected on 2 CPU cores: ~30 minutes at --parallel=2 on an idle machine (one arm alone
took 4m33s at load 4-6); measured: 1h08m beside other jobs (load average 10-16,
10.5-13.5 minutes per pair of arms), evaluations included (~1 min).

Arms: position encoding {rope, nope, rope + random_position_offset} x format {plain,
reversed} x seeds {0, 1}: 12 arms, every one STEPS steps of BATCH rows of SEQ_LEN
tokens (the same token budget), Muon at LR, cosine decay with WARMUP LR-warmup steps.
The model is the small ablation phi of experiments/ (hidden 128, 2 layers, 4 heads,
partial rotary 0.5), with a 300-piece vocabulary (the smallest the tokenizer takes;
arithmetic uses 13 of its ids, one per character) and MAX_POSITIONS positions, so the
random offsets span [0, MAX_POSITIONS - SEQ_LEN]. Problems are `a+b=c`, each operand
1..N digits, from the same generator seed in every arm (`train.seed` sets the
initialization and the order). Packed rows restart positions at every problem.

After training, ``plot`` runs ``python -m phijax.evaluate --task=arithmetic`` on each
arm's final checkpoint (greedy decoding with the KV cache, exact match of the answer
and end-of-text; PER_LENGTH problems per operand length 1..N+2, the same problems for
every arm) and caches its report in the arm's ``evals/arithmetic.json``, so rerunning
``python -m phijax.results`` only redoes the tables. It adds the accuracy tables to
results.md (``summarize`` receives no directory, so ``plot`` inserts them) and draws
``accuracy.png`` (rows: encoding x format, columns: test length).

Note on RoPE + random offsets: rotary attention scores depend only on the distance
between query and key, so shifting a row's positions by one constant changes the
function only by float rounding; the arm is the control that says how much a
reordering of floating-point sums alone moves the results. Shen et al.'s random
embedding is about absolute (learned) position embeddings, which phi does not have.
"""

import json
import math
import os
import subprocess
import sys

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config

ALIASES = {"model.position_encoding": "pe", "model.random_position_offset": "offset",
           "data.sources.add.format": "format"}
N = 2  # training operands: 1..N digits; tested: 1..N+2
STEPS = 800
BATCH = 32
SEQ_LEN = 64
MAX_POSITIONS = 256
LR = 1e-2
WARMUP = 30
PER_LENGTH = 300  # test problems per operand length
ENCODINGS = [("rope", {"model.position_encoding": "rope",
                       "model.random_position_offset": False}),
             ("nope", {"model.position_encoding": "nope",
                       "model.random_position_offset": False}),
             ("rope+offset", {"model.position_encoding": "rope",
                              "model.random_position_offset": True})]
FORMATS = ["plain", "reversed"]
EVAL_FILE = os.path.join("evals", "arithmetic.json")


def get_config(arg=None):
  c = base.small_ablation(tiny.get_config(), tokens=0, batch_size=BATCH, eval_every=0,
                         final_eval_batches=4, log_every=10)
  c.train.steps = STEPS
  c.model.update(vocab_size=300, max_position_embeddings=MAX_POSITIONS)
  c.data.tokenizer.vocab_size = 300
  c.data.seq_len = SEQ_LEN
  c.data.sources = dict(add=data_config.arithmetic("+", 1, N, "plain", size=100_000,
                                                   heldout=1000))
  c.optim.lr = LR
  c.curriculum.lr.update(schedule="cosine", warmup_steps=WARMUP, min_ratio=0.1)
  return base.finish(c, arg)


def get_sweep(h):
  return h.product([o for _, o in ENCODINGS], h.sweep("data.sources.add.format", FORMATS),
                   h.seeds(2))


# --------------------------------------------------------- evaluation, tables, plots

LENGTHS = list(range(1, N + 3))


def _encoding(row) -> str:
  if row.get("pe") == "nope":
    return "nope"
  return "rope+offset" if row.get("offset") else "rope"


def _groups(table):
  """[(encoding, format)] in ENCODINGS x FORMATS order, those the table has."""
  have = {(_encoding(r), r.get("format")) for r in table.rows}
  return [(e, f) for e, _ in ENCODINGS for f in FORMATS if (e, f) in have]


def _cached(path: str, step: int):
  """The arm's arithmetic report if it is for its final step and these settings."""
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  s = report.get("settings", {})
  ok = (report.get("step") == step and s.get("digits") == [LENGTHS[0], LENGTHS[-1]]
        and s.get("per_length") == PER_LENGTH and s.get("seed") == 0
        and s.get("ops") == "+")
  return report if ok else None


def evaluate_arm(arm_dir: str, step: int):
  """``python -m phijax.evaluate --task=arithmetic`` on the arm's newest checkpoint
  (the final one), unless ``evals/arithmetic.json`` already holds that step's report.
  Returns the report (None if the evaluation failed)."""
  path = os.path.join(arm_dir, EVAL_FILE)
  report = _cached(path, step)
  if report is None:
    cmd = [sys.executable, "-m", "phijax.evaluate", f"--workdir={arm_dir}",
           "--task=arithmetic", f"--arith_digits={LENGTHS[0]}-{LENGTHS[-1]}",
           f"--arith_per_length={PER_LENGTH}", "--batch_size=200", "--seed=0"]
    print(f"arith_length: evaluating {os.path.basename(arm_dir)}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
      print(f"arith_length: evaluation of {arm_dir} failed:\n{done.stderr[-2000:]}",
            file=sys.stderr, flush=True)
      return None
    report = _cached(path, step)
  return report


def _digit_accuracy(samples_path: str, fmt: str) -> dict:
  """Per operand length: the share of the answer's digits (by place value) the output
  gets right; a softer signal than exact match (an output that is not a number counts
  as all wrong)."""
  from phijax.data import arithmetic
  hits, total = {}, {}
  with open(samples_path) as f:
    for line in f:
      r = json.loads(line)
      want = str(r["a"] + r["b"])[::-1]  # least significant first
      try:
        got = str(arithmetic.read_number(r["output"], fmt))[::-1]
      except ValueError:
        got = ""
      d = r["digits"]
      hits[d] = hits.get(d, 0) + sum(a == b for a, b in zip(want, got))
      total[d] = total.get(d, 0) + len(want)
  return {d: hits[d] / total[d] for d in total}


def _results_by_arm(table, sweep_dir):
  """{arm: {"exact": {length: acc}, "digit": {length: acc}}} for the finished arms."""
  out = {}
  for r in table.rows:
    if r["status"] != "done":
      continue
    arm_dir = os.path.join(sweep_dir, r["arm"])
    report = evaluate_arm(arm_dir, int(r["steps"]))
    if report is None:
      continue
    exact = {int(d): v for d, v in report["scores"]["accuracy_by_digits"].items()}
    samples = os.path.join(arm_dir, "evals", "arithmetic.samples.jsonl")
    out[r["arm"]] = {"exact": exact,
                     "digit": _digit_accuracy(samples, report["settings"]["format"])}
  return out


def _cell(values, per_seed=True) -> str:
  vals = [v for v in values if v is not None and math.isfinite(v)]
  if not vals:
    return "-"
  mean = sum(vals) / len(vals)
  if not per_seed or len(vals) == 1:
    return f"{mean:.3f}"
  return f"{mean:.3f} (" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _length_header(d: int) -> str:
  return f"{d} digits" + (" (trained)" if d <= N else f" (N+{d - N})")


def _tables(table, by_arm) -> str:
  seeds = table.values("seed")
  lines = []
  for metric, title in (
      ("exact", "Exact-match accuracy"),
      ("digit", "Digit accuracy (share of the answer's digits right by place value)")):
    rows = []
    for enc, fmt in _groups(table):
      row = {"encoding": enc, "format": fmt}
      for d in LENGTHS:
        vals = []
        for s in seeds:
          arms = [r["arm"] for r in table.rows if _encoding(r) == enc and
                  r.get("format") == fmt and r.get("seed") == s and r["arm"] in by_arm]
          vals.append(by_arm[arms[0]][metric].get(d, math.nan) if arms else math.nan)
        row[_length_header(d)] = _cell(vals)
      rows.append(row)
    from phijax.sweeps.tables import summary_table
    lines += [f"{title} by operand length (both operands of that length; "
              f"{PER_LENGTH} problems per length, the same in every arm; seed mean, then "
              f"seeds {', '.join(map(str, seeds))} in brackets). Trained on 1..{N} "
              "digits:", summary_table(rows)]
  return "\n\n".join(lines)


def _offset_check(table, sweep_dir) -> str:
  """RoPE with and without random offsets, same seed and format: the largest
  difference of their logged training losses (rotary scores are shift-invariant, so
  only float rounding separates them)."""
  from phijax.sweeps import runs
  worst, pairs = 0.0, 0
  for r in table.rows:
    if _encoding(r) != "rope+offset" or r["status"] != "done":
      continue
    ref = [x for x in table.rows if _encoding(x) == "rope" and x["status"] == "done"
           and x.get("format") == r.get("format") and x.get("seed") == r.get("seed")]
    if not ref:
      continue
    a, _, _ = runs.split_rows(runs.read_rows(os.path.join(sweep_dir, r["arm"])))
    b, _, _ = runs.split_rows(runs.read_rows(os.path.join(sweep_dir, ref[0]["arm"])))
    b = {x["step"]: x["loss"] for x in b}
    pairs += 1
    worst = max([worst] + [abs(x["loss"] - b[x["step"]]) for x in a if x["step"] in b])
  if not pairs:
    return ""
  return (f"RoPE with vs without random position offsets ({pairs} pairs of arms with the "
          f"same seed and format): largest difference of the logged training losses "
          f"{worst:.2g} nats. Rotary attention depends only on the distance between "
          "positions, so a constant shift per row leaves the function unchanged up to "
          "float rounding (whose differences grow over the steps): the offset arms are "
          "reruns of the RoPE arms, a measure of run-to-run noise, not a test of Shen et "
          "al.'s randomized absolute positions.")


def plot(table, sweep_dir):
  """Evaluates every finished arm (cached), adds the accuracy tables to results.md and
  draws accuracy.png: exact match and digit accuracy, rows encoding x format, columns
  the test length (seed mean; each seed in the cell's second line)."""
  import numpy as np
  from matplotlib.figure import Figure

  by_arm = _results_by_arm(table, sweep_dir)
  groups = _groups(table)
  seeds = table.values("seed")
  # results.md: the runner wrote it before calling plot; the tables go before its
  # closing "Plots:" paragraph (summarize gets the table but not the sweep directory).
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path) as f:
    text = f.read()
  section = ("## Accuracy by operand length\n\n" + _tables(table, by_arm) +
             "\n\nPlot: `accuracy.png` (the same numbers as heat maps).")
  check = _offset_check(table, sweep_dir)
  if check:
    section += "\n\n" + check
  cut = text.rfind("\nPlots: ")
  text = (text[:cut] + "\n" + section + "\n" + text[cut:] if cut >= 0
          else text + "\n" + section + "\n")
  with open(md_path, "w") as f:
    f.write(text)
  csv_path = os.path.join(sweep_dir, "accuracy.csv")
  with open(csv_path, "w") as f:
    f.write("arm,encoding,format,seed," + ",".join(
        f"exact_{d}" for d in LENGTHS) + "," + ",".join(f"digit_{d}" for d in LENGTHS) + "\n")
    for r in table.rows:
      if r["arm"] in by_arm:
        res = by_arm[r["arm"]]
        f.write(f"\"{r['arm']}\",{_encoding(r)},{r['format']},{r['seed']}," + ",".join(
            f"{res['exact'].get(d, math.nan):.4f}" for d in LENGTHS) + "," + ",".join(
            f"{res['digit'].get(d, math.nan):.4f}" for d in LENGTHS) + "\n")

  fig = Figure(figsize=(13, 1.6 + 0.75 * len(groups)), layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, metric, title in ((axes[0], "exact", "exact-match accuracy"),
                            (axes[1], "digit", "digit accuracy (by place value)")):
    grid = np.full((len(groups), len(LENGTHS)), np.nan)
    for i, (enc, fmt) in enumerate(groups):
      for j, d in enumerate(LENGTHS):
        vals = [by_arm[r["arm"]][metric].get(d, math.nan) for r in table.rows
                if _encoding(r) == enc and r.get("format") == fmt and r["arm"] in by_arm]
        if vals:
          grid[i, j] = float(np.mean(vals))
          seed_text = " / ".join(f"{v:.2f}" for v in vals)
          dark = grid[i, j] < 0.6
          ax.text(j, i - 0.12, f"{grid[i, j]:.2f}", ha="center", va="center",
                  fontsize=12, fontweight="bold", color="white" if dark else "black")
          ax.text(j, i + 0.22, seed_text, ha="center", va="center", fontsize=8,
                  color="white" if dark else "black")
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.axvline(N - 0.5, color="red", linewidth=2)
    ax.set_xticks(range(len(LENGTHS)), [_length_header(d).replace(" digits", "")
                                        for d in LENGTHS])
    ax.set_yticks(range(len(groups)), [f"{e}, {f}" for e, f in groups])
    ax.set(xlabel="operand length (digits); red line: end of the training range",
           title=f"{title}\n(seed mean; small: seeds {' / '.join(map(str, seeds))})")
    fig.colorbar(im, ax=ax, shrink=0.8)
  path = os.path.join(sweep_dir, "accuracy.png")
  fig.savefig(path, dpi=100)
  return [path, csv_path]
