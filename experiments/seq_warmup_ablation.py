"""Sequence-length warmup ablation: does warming up the sequence length let a small
phi-style model train stably at a high learning rate? (Li, Zhang & He 2022, "The
Stability-Efficiency Dilemma", arXiv 2108.06084: GPT-2 stable at 8x batch and 4x LR.)

    python experiments/seq_warmup_ablation.py            # full run: 12 arms, ~15-25 min
    python experiments/seq_warmup_ablation.py --quick    # 4 small arms, ~1-2 min

(Times on 2 CPU cores: the lower figure idle, the higher with other jobs running.)

Arms: {base LR, 10x, 33x} x {no warmup, sequence-length warmup} x seeds, each trained
on the same number of *tokens* (``train.tokens``: an arm with short early batches takes
more steps) with the same step-based LR warmup and token-based cosine decay, as in
the paper. The model is smaller than ``configs/tiny.py``'s (hidden 128, 2 layers) so
every arm fits the budget; the data is the built-in stdlib corpus.

Each arm trains in its own run directory ``<out>/<arm>/`` with ``phijax.train.train``;
rerunning the script resumes an interrupted arm and skips finished (or diverged) ones.
Written to ``<out>/``: ``results.md`` (the table, also printed) and ``loss_curves.png``
(training loss, held-out loss and gradient norm against tokens, every arm).

Columns: final held-out loss (nats/token) and bits/byte over the same held-out rows
for every arm; ``spike steps``: steps whose smoothed training loss is above
``--spike-ratio`` times its running minimum (the paper's "loss ratio", on an EMA so
one hard batch is not a spike), ``max loss ratio``: the largest such ratio; max
gradient norm (before clipping); steps skipped as non-finite; wall time of the arm.
Training loss at a short warmup length is not comparable to full-length loss (less
context per token), so compare arms on held-out loss, which is always full length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from phijax import curriculum  # noqa: E402
from phijax import train as train_lib  # noqa: E402

ARM_FILE = "arm.json"  # per run directory: the arm's settings, status and wall time


@dataclasses.dataclass(frozen=True)
class Arm:
  lr: float
  seq_warmup: bool
  seed: int
  mode: str = "truncate"  # seq warmup's way of shortening batches

  @property
  def warmup_tag(self) -> str:
    if not self.seq_warmup:
      return "nowarmup"
    return "seqwarmup" if self.mode == "truncate" else f"seqwarmup-{self.mode}"

  @property
  def name(self) -> str:
    return f"lr{self.lr:g}_{self.warmup_tag}_s{self.seed}"

  @property
  def label(self) -> str:
    return f"lr {self.lr:g}, {self.warmup_tag}, seed {self.seed}"


def parse_args(argv=None):
  from phijax import cli  # one-line errors with exit 2, like every phijax command
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="smoke run: tiny token budget, one seed (about 1-2 minutes)")
  p.add_argument("--out", default=None,
                 help="results directory (default experiments/results/seq_warmup; with "
                      "--quick runs/seq_warmup_quick, which git ignores, so a smoke run "
                      "never overwrites the committed results)")
  p.add_argument("--lrs", default="3e-3,3e-2,1e-1",
                 help="comma-separated peak learning rates: a base AdamW rate for this "
                      "model and high ones (10x, 33x)")
  p.add_argument("--seeds", default="0,1", help="comma-separated seeds")
  p.add_argument("--tokens", type=int, default=640_000, help="training tokens per arm")
  p.add_argument("--seq-len", type=int, default=256, help="full sequence length")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--vocab", type=int, default=2048,
                 help="sentencepiece vocabulary (trained on the stdlib once, then cached); "
                      "small, because at hidden 128 the output layer dominates the FLOPs")
  p.add_argument("--lr-warmup-steps", type=int, default=10,
                 help="step-based LR warmup, the same in every arm (short on purpose, "
                      "so the first steps at a high LR are not already tamed by it)")
  p.add_argument("--warmup-start", type=int, default=32, help="first warmup length")
  p.add_argument("--warmup-duration", type=float, default=0.3,
                 help="sequence-length warmup duration, fraction of the token budget")
  p.add_argument("--warmup-mode", choices=curriculum.SEQ_MODES, default="truncate",
                 help="truncate: drop each row's tail (the paper; more, shorter steps "
                      "for the same tokens); reshape: cut rows into more short rows (the "
                      "same steps and tokens per step as without warmup)")
  p.add_argument("--eval-points", type=int, default=6,
                 help="periodic held-out evaluations per arm (for the curves)")
  p.add_argument("--final-eval-batches", type=int, default=32,
                 help="held-out batches for the final loss (the same rows for every arm)")
  p.add_argument("--spike-ratio", type=float, default=1.05,
                 help="a spike step: smoothed training loss > ratio * its running minimum")
  quick, _ = p.parse_known_args(argv)
  if quick.quick:  # smaller defaults; flags given explicitly still win
    p.set_defaults(lrs="3e-3,1e-1", seeds="0", tokens=100_000, eval_points=2,
                   final_eval_batches=4)
  args = p.parse_args(argv)
  args.out = args.out or (os.path.join(ROOT, "runs", "seq_warmup_quick") if args.quick
                          else os.path.join(ROOT, "experiments", "results", "seq_warmup"))
  try:
    args.lr_list = [float(s) for s in args.lrs.split(",") if s.strip()]
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    p.error(f"--lrs={args.lrs!r} / --seeds={args.seeds!r}: give comma-separated numbers")
  if not args.lr_list or not args.seed_list:
    p.error("--lrs and --seeds need at least one value each")
  if args.warmup_start >= args.seq_len:
    p.error(f"--warmup-start={args.warmup_start} must be below --seq-len={args.seq_len}")
  return args


def load_tiny_config():
  """configs/tiny.py's get_config() (installed as phijax.configs.tiny)."""
  from phijax.configs import tiny
  return tiny.get_config()


def arm_config(args, arm: Arm):
  """configs/tiny.py, shrunk to the ablation's model, budgeted in tokens."""
  c = load_tiny_config()
  c.model.update(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                 intermediate_size=4 * args.hidden)
  c.model.vocab_size = args.vocab
  c.data.tokenizer.vocab_size = args.vocab
  c.data.seq_len = args.seq_len
  c.train.update(
      steps=0, tokens=args.tokens, batch_size=args.batch_size, seed=arm.seed,
      log_every=1,  # every step's loss and grad norm: spikes are single steps
      eval_every=0, eval_batches=4, final_eval_batches=args.final_eval_batches,
      save_every=0, save_every_minutes=1.0, keep_last=1,  # resumable, cheap
      samples=0, progress=False)
  # AdamW, whatever tiny's optimizer is: the paper's setting, and the arms' LRs are
  # AdamW rates.
  c.optim.update(name="adamw", lr=arm.lr)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=args.lr_warmup_steps,
                         min_ratio=0.1, token_based_decay=True)
  c.curriculum.seq_warmup.update(
      enabled=arm.seq_warmup, kind="linear", start=args.warmup_start,
      duration=args.warmup_duration, duration_unit="fraction", buckets="pow2",
      mode=arm.mode)
  # Evaluations at evenly spaced steps; arms differ in step count, not in tokens.
  steps = curriculum.Curriculum(c).total_steps_estimate()
  c.train.eval_every = max(1, steps // (args.eval_points + 1)) if args.eval_points else 0
  return c


def settings(config) -> dict:
  """What makes two runs of an arm the same experiment (checked before resuming)."""
  resolved = json.loads(config.to_json_best_effort())
  keep_train = ("tokens", "batch_size", "seed", "final_eval_batches", "eval_every")
  return {"model": resolved["model"], "optim": resolved["optim"],
          "curriculum": resolved["curriculum"], "seq_len": resolved["data"]["seq_len"],
          "train": {k: resolved["train"][k] for k in keep_train}}


def read_arm_file(workdir: str) -> dict | None:
  path = os.path.join(workdir, ARM_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_arm_file(workdir: str, record: dict) -> None:
  tmp = os.path.join(workdir, ARM_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, os.path.join(workdir, ARM_FILE))


def run_arm(args, arm: Arm, config, index: int, total: int) -> dict:
  """Trains (or resumes, or skips) one arm; returns its arm.json record."""
  workdir = os.path.join(args.out, arm.name)
  want = settings(config)
  record = read_arm_file(workdir)
  if record is not None and record["settings"] != want:
    sys.exit(f"error: {workdir} holds a run with different settings (an earlier "
             "invocation with other flags); delete that directory or pass another --out")
  if record is not None and record["status"] in ("finished", "diverged"):
    print(f"[{index}/{total}] {arm.label}: already {record['status']}, skipped", flush=True)
    return record
  verb = "resuming" if record is not None else "training"
  record = record or {"arm": dataclasses.asdict(arm), "settings": want,
                      "status": "running", "wall_s": 0.0}
  os.makedirs(workdir, exist_ok=True)
  write_arm_file(workdir, record)
  print(f"[{index}/{total}] {arm.label}: {verb} {args.tokens:,} tokens in {workdir}",
        flush=True)
  start = time.perf_counter()
  # train() prints its own progress lines; they go to the arm's train.log.
  with open(os.path.join(workdir, "train.log"), "a") as log, \
      contextlib.redirect_stdout(log):
    try:
      summary = train_lib.train(config, workdir)
      record["status"] = "finished" if summary.get("finished") else "interrupted"
      record["message"] = summary.get("message", "")
    except RuntimeError as e:  # train() stops after max_nonfinite bad steps in a row
      if "non-finite" not in str(e):
        raise
      record["status"], record["message"] = "diverged", str(e)
    except (train_lib.ConfigError, curriculum.CurriculumError, FileNotFoundError) as e:
      sys.exit(f"error: arm {arm.name}: {e}")
    finally:
      record["wall_s"] += time.perf_counter() - start  # accumulates over resumes
      write_arm_file(workdir, record)
  if record["status"] == "interrupted":
    sys.exit(f"interrupted: {record['message']}")
  print(f"[{index}/{total}] {arm.label}: {record['status']} in "
        f"{time.perf_counter() - start:.0f}s", flush=True)
  return record


# ----------------------------------------------------------------------------- analysis


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and math.isfinite(v)


SMOOTHING = 0.1  # EMA weight of the newest step's loss (spikes and the plot)


def ema(values, alpha: float = SMOOTHING) -> list[float]:
  """Exponential moving average; non-finite values are skipped (the average holds)."""
  out, avg = [], None
  for v in values:
    if _finite(v):
      avg = v if avg is None else (1 - alpha) * avg + alpha * v
    out.append(avg if avg is not None else math.nan)
  return out


def loss_rises(losses, ratio: float) -> tuple[int, float]:
  """(steps whose smoothed loss exceeds ``ratio`` x the minimum smoothed loss before
  them, the largest smoothed loss / that minimum). Smoothed because one hard batch
  of this heterogeneous corpus (a data table, a test file) moves a step's loss by
  10-20% in every arm alike, while a training instability lasts several steps.
  Non-finite losses count as spikes."""
  count, worst, running_min = 0, 1.0, math.inf
  for raw, loss in zip(losses, ema(losses)):
    if not _finite(raw):
      count += 1
    elif loss > ratio * running_min:
      count += 1
    if _finite(loss) and running_min < math.inf:
      worst = max(worst, loss / running_min)
    if _finite(loss):
      running_min = min(running_min, loss)
  return count, worst


def summarize(args, arm: Arm, record: dict) -> dict:
  rows = read_metrics(os.path.join(args.out, arm.name))
  # A resumed arm re-logs steps after its last checkpoint: keep each step's last row.
  train_rows = {r["step"]: r for r in rows if "loss" in r}
  train_rows = [train_rows[s] for s in sorted(train_rows)]
  evals = [r for r in rows if "eval_loss" in r and not r.get("final")]
  final = [r for r in rows if r.get("final")]
  grad_norms = [r["grad_norm"] for r in train_rows if _finite(r["grad_norm"])]
  out = {
      "arm": arm, "status": record["status"], "wall_s": record["wall_s"],
      "steps": train_rows[-1]["step"] if train_rows else 0,
      "tokens": train_rows[-1]["tokens"] if train_rows else 0,
      **dict(zip(("spikes", "max_loss_ratio"),
                 loss_rises([r["loss"] for r in train_rows], args.spike_ratio))),
      "max_grad_norm": max(grad_norms) if grad_norms else math.nan,
      "skipped": train_rows[-1].get("skipped_steps", 0) if train_rows else 0,
      "eval_loss": final[-1]["eval_loss"] if final else math.nan,
      "eval_bpb": final[-1]["eval_bpb"] if final else math.nan,
      "gzip_bpb": final[-1].get("gzip_bpb", math.nan) if final else math.nan,
      "curve": {"tokens": [r["tokens"] for r in train_rows],
                "loss": [r["loss"] if _finite(r["loss"]) else math.nan for r in train_rows],
                "grad_norm": [r["grad_norm"] if _finite(r["grad_norm"]) else math.nan
                              for r in train_rows]},
      "eval_curve": {"tokens": [r["tokens"] for r in evals],
                     "loss": [r["eval_loss"] for r in evals]},
  }
  return out


def _fmt(v, spec):
  return format(v, spec) if _finite(v) else "-"


def _ratio(v) -> str:
  return _fmt(v, ".3f" if not _finite(v) or v < 100 else ".3g")


def results_table(results: list[dict]) -> str:
  lines = [
      "| arm | peak LR | seq warmup | seed | held-out loss | bits/byte | spike steps | "
      "max loss ratio | max grad norm | skipped | steps | tokens | wall (s) |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    a = r["arm"]
    loss = _fmt(r["eval_loss"], ".4f") if r["status"] == "finished" else r["status"]
    lines.append(
        f"| {a.name} | {a.lr:g} | {a.mode if a.seq_warmup else 'no'} | {a.seed} | {loss} | "
        f"{_fmt(r['eval_bpb'], '.4f')} | {r['spikes']} | {_ratio(r['max_loss_ratio'])} | "
        f"{_fmt(r['max_grad_norm'], '.2f')} | {r['skipped']} | {r['steps']} | "
        f"{r['tokens']:,} | {r['wall_s']:.0f} |")
  return "\n".join(lines)


def comparison_table(results: list[dict]) -> str:
  """Per learning rate: seed-mean held-out loss and spikes without vs with warmup."""
  lines = ["| peak LR | held-out loss, no warmup | held-out loss, seq warmup | "
           "difference (warmup - none) | spike steps, none / warmup | "
           "max loss ratio, none / warmup |",
           "|---|---|---|---|---|---|"]
  for lr in sorted({r["arm"].lr for r in results}):
    def mean(key, warm):
      vals = [r[key] for r in results if r["arm"].lr == lr and r["arm"].seq_warmup == warm]
      vals = [v for v in vals if _finite(v)]
      return sum(vals) / len(vals) if vals else math.nan
    none, warm = mean("eval_loss", False), mean("eval_loss", True)
    diff = warm - none if _finite(none) and _finite(warm) else math.nan
    lines.append(f"| {lr:g} | {_fmt(none, '.4f')} | {_fmt(warm, '.4f')} | "
                 f"{_fmt(diff, '+.4f')} | {_fmt(mean('spikes', False), '.1f')} / "
                 f"{_fmt(mean('spikes', True), '.1f')} | "
                 f"{_ratio(mean('max_loss_ratio', False))} / "
                 f"{_ratio(mean('max_loss_ratio', True))} |")
  return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
  """Training loss (raw, faint, and smoothed), held-out loss and gradient norm
  against tokens: color = learning rate, dashed = sequence-length warmup."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state

  lrs = sorted({r["arm"].lr for r in results})
  colors = {lr: f"C{i}" for i, lr in enumerate(lrs)}
  fig = Figure(figsize=(14, 5), layout="constrained")
  ax_train, ax_eval, ax_grad = fig.subplots(1, 3)
  for r in results:
    a, c = r["arm"], r["curve"]
    style = dict(color=colors[a.lr], linestyle="--" if a.seq_warmup else "-")
    ax_train.plot(c["tokens"], c["loss"], color=colors[a.lr], alpha=0.15, linewidth=0.6)
    ax_train.plot(c["tokens"], ema(c["loss"]), label=a.label, **style)
    if r["eval_curve"]["tokens"]:
      ax_eval.plot(r["eval_curve"]["tokens"], r["eval_curve"]["loss"], marker="o",
                   label=a.label, **style)
    if _finite(r["eval_loss"]):
      ax_eval.plot([r["tokens"]], [r["eval_loss"]], marker="*", markersize=12,
                   color=colors[a.lr])
    ax_grad.plot(c["tokens"], c["grad_norm"], linewidth=0.7, alpha=0.8, **style)
  ax_train.set(title=f"training loss (EMA {SMOOTHING:g}; faint: per step)",
               xlabel="tokens", ylabel="loss (nats/token)")
  ax_eval.set(title="held-out loss, full length (star: final)", xlabel="tokens",
              ylabel="loss (nats/token)")
  ax_grad.set(title="gradient norm before clipping", xlabel="tokens", yscale="log")
  ax_train.legend(fontsize=7)
  ax_eval.legend(fontsize=7)
  # The interesting part is after the first fast drop: clip the y range to it.
  tail = [v for r in results for v in r["curve"]["loss"][len(r["curve"]["loss"]) // 10:]
          if math.isfinite(v)]
  if tail:
    ax_train.set_ylim(min(tail) - 0.2, max(tail) + 0.5)
  fig.savefig(path, dpi=110)


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  # The mode means nothing without warmup: no-warmup arms are shared between a
  # truncate and a reshape invocation on the same --out.
  arms = [Arm(lr, warm, seed, args.warmup_mode if warm else "truncate")
          for seed in args.seed_list for lr in args.lr_list for warm in (False, True)]
  print(f"seq-warmup ablation: {len(arms)} arms, {args.tokens:,} tokens each, "
        f"results in {args.out}", flush=True)
  try:  # every arm's config is checked before any arm trains
    configs = [arm_config(args, arm) for arm in arms]
  except ValueError as e:  # CurriculumError and ml_collections type errors
    sys.exit(f"error: {e}")
  start = time.perf_counter()
  records = [run_arm(args, arm, config, i + 1, len(arms))
             for i, (arm, config) in enumerate(zip(arms, configs))]
  results = [summarize(args, arm, rec) for arm, rec in zip(arms, records)]
  gzip_bpb = next((r["gzip_bpb"] for r in results if _finite(r["gzip_bpb"])), math.nan)
  text = "\n\n".join([
      "# Sequence-length warmup ablation",
      "Command: `" + " ".join(["python experiments/seq_warmup_ablation.py",
                               *(sys.argv[1:] if argv is None else argv)]) + "`",
      f"Model: phi, hidden {args.hidden}, {args.layers} layers, {args.heads} heads; "
      f"batch {args.batch_size} x {args.seq_len}; {args.tokens:,} training tokens per arm; "
      f"AdamW, clip 1.0, {args.lr_warmup_steps} LR-warmup steps, cosine decay over "
      f"tokens to 0.1x. Sequence warmup: linear from {args.warmup_start} to "
      f"{args.seq_len} over {args.warmup_duration:g} of the tokens, pow2 buckets, "
      f"{args.warmup_mode}. Held-out loss: final, over {args.final_eval_batches} "
      f"batches at full length (gzip -9 on the held-out text: {_fmt(gzip_bpb, '.3f')} "
      f"bits/byte). Spike steps: steps whose training loss (EMA {SMOOTHING:g}) is "
      f"above {args.spike_ratio:g} x its running minimum; max loss ratio: the largest "
      f"smoothed loss / running minimum (1 = never rose). Training loss during warmup "
      f"is at a shorter length (less context per token), so compare arms on held-out "
      f"loss.",
      results_table(results),
      comparison_table(results),
      f"Plot: `loss_curves.png`. Total wall time of this invocation: "
      f"{time.perf_counter() - start:.0f}s."])
  plot(results, os.path.join(args.out, "loss_curves.png"))
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text + "\n")
  print()
  print(text)
  print(f"\nwrote {os.path.join(args.out, 'results.md')} and "
        f"{os.path.join(args.out, 'loss_curves.png')}")


if __name__ == "__main__":
  main()
