"""Frozen-embedding SGD fine-tuning (Kumar et al. 2022, "How to Fine-Tune Vision Models
with SGD", arXiv 2211.09359).

Question: the paper finds that fine-tuning with SGD does worse than AdamW when the first
(embedding) layer gets much larger gradients than the rest, and that freezing that
layer (less than 1% of their models' parameters) lets SGD, with or without momentum,
match or beat AdamW while keeping less optimizer state. Does that hold for a small
phi fine-tuned on code packages it never saw in pretraining?

    python -m phijax.sweep experiments/freeze_sgd.py \\
        --workdir=experiments/results/freeze_sgd --parallel=1
    # smoke: the pretrain arm and one SGD arm, 20 steps each, ~1 min (53 s measured)
    python -m phijax.sweep experiments/freeze_sgd.py --workdir=runs/freeze_sgd_quick \\
        --only='config=finetune,optim=sgd,freeze=embed,lr=0.3,seed=0' \\
        --config.train.tokens=40960 --config.curriculum.lr.warmup_steps=3 --parallel=1

Measured on 2 CPU cores shared with another experiment's sweep and a test suite (load
average 4-7): 21m36s for the 25 arms (pretrain 5m47s, fine-tuning arms 27-65 s, about
half of it start-up and compilation), then about 3 minutes for ``plot``'s 26
evaluations and gradient diagnostic; 24m37s in all.

Arms:

- ``config=pretrain,seed=0`` (one pretrain, shared by every fine-tuning arm): the
  ablation model of lr_sweep.py (phi, hidden 128, 2 layers, 2048-token vocabulary,
  0.92M parameters, untied ``lm_head``) on the stdlib WITHOUT the packages NEW
  (``exclude``; 9.3% of the corpus bytes), PRETRAIN_STEPS steps of 8 x 256 tokens,
  AdamW at 8e-3 (lr_sweep.py's best), 10 warmup steps, cosine to 0.1x. Its tokenizer
  is trained on that corpus only.
- ``config=finetune`` (x seeds {0, 1}, which set the data order): warm-started from
  the pretrain arm (parameters only, a fresh optimizer; ``train.init_from`` also
  makes the run read text with the pretrain arm's tokenizer), on ONLY the packages NEW
  (stdlib ``glob``), FINETUNE_STEPS steps of 8 x 256, 3 warmup steps, cosine to 0.1x,
  clip 1.0 (global norm over the parameters that train). Methods x LR grid:
  SGD with momentum 0.9 (the paper's SGD; 4 bytes of state per trained parameter),
  LR in SGD_LRS; AdamW (b1 0.9, b2 0.95), LR in ADAMW_LRS; weight decay 0 for both
  (SGD's decoupled decay would scale with its much larger LR); each with and without
  ``optim.freeze=embed`` (the token embedding ``embed``, 2048 x 128 = 28% of this
  model's parameters; the untied ``lm_head`` and everything else train).

Metrics: each fine-tuning run's own evaluations read its source's held-out split,
i.e. the held-out files of the NEW packages (4 files, 11,044 tokens; the pretrain run
saw none of these packages). "Before": ``plot`` scores the pretrain arm
on those same files (``python -m phijax.evaluate --task=bpb`` with this file's
``finetune`` config, cached in ARM/evals-new/). Forgetting: ``plot`` also scores every
fine-tuning arm on the pretraining corpus's held-out files (``--config=...:
pretrain``, cached in ARM/evals-old/). Optimizer state: the ``opt_state_bytes_per_param``
each run logs (float32 bytes over ALL parameters, frozen ones included in the count).
Best LR: per method, the LR with the lowest seed-mean held-out loss (chosen on the same
held-out files it is reported on, for every method alike); the CSV and results.md keep
the whole grid. ``plot`` also computes the paper's diagnostic: the held-out gradient's
norm per parameter group (embedding, LM head, block matrices, norms and biases) at the
pretrained parameters, on both corpora.

Departures from the paper, and from the plan this file started from: one pretrain arm
shared by all fine-tuning seeds (the seeds vary the fine-tuning data order only); SGD
with momentum 0.9 only (no momentum-free arm: it would need its own LR grid); the
frozen layer is the token embedding, 28% of this model's parameters (the paper's patch
or token embeddings are under 1%), so freezing it also removes much of the model's
capacity to adapt, and saves a quarter of the optimizer state rather than almost none.
Clip 1.0 is kept from the repository's defaults; it bites only at SGD's largest LR
(gradient norms stay under 0.7 elsewhere).
"""

import json
import math
import os
import subprocess
import sys

from phijax import config as base
from phijax.configs import tiny

ALIASES = {"optim.name": "optim", "optim.freeze": "freeze", "optim.lr": "lr"}
RECIPES = ("pretrain", "finetune")
# The packages held out of pretraining and fine-tuned on (fnmatch over stdlib paths).
NEW = "email/*,json/*,xml/*,http/*"
STEP_TOKENS = 8 * 256
PRETRAIN_STEPS = 600
PRETRAIN_LR = 8e-3  # AdamW, experiments/lr_sweep.py
FINETUNE_STEPS = 60
SGD_LRS = (0.3, 1.0, 3.0)
ADAMW_LRS = (1e-3, 3e-3, 1e-2)
SGD_MOMENTUM = 0.9
EVAL_BATCHES = 6  # the NEW packages' whole held-out split: 44 rows of 256 (4 rows padding)
PRETRAIN_ARM = "config=pretrain,seed=0"


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"freeze_sgd.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = base.small_ablation(tiny.get_config(), tokens=PRETRAIN_STEPS * STEP_TOKENS,
                          batch_size=8, eval_every=0, final_eval_batches=32, log_every=2)
  c.train.save_every_minutes = 0.0  # checkpoints only at the end: the arms are short
  c.optim.update(name="adamw", lr=PRETRAIN_LR, b1=0.9, b2=0.95, weight_decay=0.1,
                 clip=1.0)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  if recipe == "pretrain":
    c.data.sources.stdlib.exclude = NEW
  else:
    c.data.sources.stdlib.glob = NEW
    c.train.update(tokens=FINETUNE_STEPS * STEP_TOKENS, eval_every=10, log_every=1,
                   eval_batches=EVAL_BATCHES, final_eval_batches=EVAL_BATCHES)
    c.curriculum.lr.warmup_steps = 3
    # b1 is SGD's momentum (and Adam's first moment); no weight decay for either
    # method: SGD's decay scales with its much larger LR.
    c.optim.update(b1=SGD_MOMENTUM, weight_decay=0.0)
  return base.finish(c, None)


def get_sweep(h):
  arms = [{"config": "pretrain", "train.seed": 0}]
  grid = [("sgd", lr) for lr in SGD_LRS] + [("adamw", lr) for lr in ADAMW_LRS]
  for name, lr in grid:
    for freeze in ("", "embed"):
      for seed in (0, 1):
        arm = {"config": "finetune", "optim.name": name}
        if freeze:
          arm["optim.freeze"] = freeze
        arm.update({"optim.lr": lr, "train.seed": seed,
                    "train.init_from": f"{{arm:{PRETRAIN_ARM}}}"})
        arms.append(arm)
  return arms


# ------------------------------------------------------------------- summary and plot

METHODS = (("sgd", ""), ("sgd", "embed"), ("adamw", ""), ("adamw", "embed"))
LABELS = {("sgd", ""): "SGD", ("sgd", "embed"): "SGD, embedding frozen",
          ("adamw", ""): "AdamW", ("adamw", "embed"): "AdamW, embedding frozen"}
COLORS = {("sgd", ""): "tab:blue", ("sgd", "embed"): "tab:cyan",
          ("adamw", ""): "tab:red", ("adamw", "embed"): "tab:orange"}
MARKERS = {"": "o", "embed": "s"}


def _method(r) -> tuple:
  return (r.get("optim"), r.get("freeze") or "")


def _grid(table) -> dict:
  """{method: {lr: [finished rows, by seed]}} of the fine-tuning arms."""
  out = {m: {} for m in METHODS}
  for r in sorted(table.rows, key=lambda r: (r.get("lr") or 0, r.get("seed") or 0)):
    if (r.get("config") == "finetune" and r.get("status") == "done"
        and math.isfinite(r.get("eval_loss", math.nan)) and _method(r) in out):
      out[_method(r)].setdefault(r["lr"], []).append(r)
  return out


def _mean(values) -> float:
  vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
  return sum(vals) / len(vals) if vals else math.nan


def _best(grid) -> dict:
  """{method: (lr, rows)}: the LR with the lowest seed-mean held-out loss."""
  out = {}
  for m, by_lr in grid.items():
    if by_lr:
      lr = min(by_lr, key=lambda lr: _mean(r["eval_loss"] for r in by_lr[lr]))
      out[m] = (lr, by_lr[lr])
  return out


def state_bytes(name: str, freeze: str) -> dict:
  """Optimizer-state bytes per parameter (over all parameters, frozen ones counted) of
  the fine-tuning config with this optimizer and freeze, as the training loop
  (phijax/train/loop.py) computes the ``opt_state_bytes_per_param`` it logs; and the
  frozen share of the parameters."""
  import jax
  import numpy as np
  from flax import linen as nn
  from phijax import model
  from phijax.train import optim

  cfg = get_config("finetune")
  cfg.optim.update(name=name, freeze=freeze)
  params = nn.unbox(model.abstract_params(cfg.model))
  state = jax.eval_shape(optim.make_direction(cfg.optim).init, params)
  sizes = {optim.path_string(p): int(np.prod(x.shape))
           for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  frozen = 0
  if freeze:
    labels = optim.freeze_labels(freeze)(params)
    frozen = sum(sizes[optim.path_string(p)] for p, lab in
                 jax.tree_util.tree_flatten_with_path(labels)[0] if lab == "frozen")
  return {"bytes": optim.state_bytes_per_parameter(state, params),
          "frozen_share": frozen / sum(sizes.values()), "params": sum(sizes.values())}


def _pm(values, digits=3, signed=False) -> str:
  vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
  if not vals:
    return "-"
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  text = f.format(sum(vals) / len(vals))
  return text + (" [" + ", ".join(f.format(v) for v in vals) + "]" if len(vals) > 1 else "")


def summarize(table):
  """The LR grid (seed means, each seed in brackets) and each method at its best LR,
  paired by seed against AdamW at its best LR. The run's own final evaluation: the NEW
  packages' held-out files."""
  from phijax.sweeps.tables import summary_table
  grid = _grid(table)
  best = _best(grid)
  rows = []
  for m in METHODS:
    for lr, members in grid[m].items():
      rows.append({"method": LABELS[m], "lr": f"{lr:g}",
                   "best LR": "yes" if best.get(m, (None,))[0] == lr else "",
                   "held-out loss, new packages (mean [seed 0, 1])":
                       _pm([r["eval_loss"] for r in members]),
                   "bits/byte": _pm([r["eval_bpb"] for r in members])})
  parts = ["Fine-tuning LR grid (final held-out loss on the new packages' held-out "
           "files, nats/token):", summary_table(rows)]
  adamw = best.get(("adamw", ""))
  ref = {r["seed"]: r["eval_loss"] for r in adamw[1]} if adamw else {}
  rows = []
  for m in METHODS:
    if m not in best:
      continue
    lr, members = best[m]
    sb = state_bytes(*m)
    rows.append({"method (at its best LR)": LABELS[m], "lr": f"{lr:g}",
                 "held-out loss, new packages": _pm([r["eval_loss"] for r in members]),
                 "minus AdamW's best, per seed": _pm(
                     [r["eval_loss"] - ref[r["seed"]] for r in members if r["seed"] in ref],
                     signed=True),
                 "bits/byte": _pm([r["eval_bpb"] for r in members]),
                 "optimizer state, bytes/param": f"{sb['bytes']:.2f}"})
  parts += ["Each method at its best LR (lowest seed-mean held-out loss); differences "
            "paired by seed:", summary_table(rows)]
  return "\n\n".join(parts)


# ------------------------------------------------- before / after and forgetting scores

def _eval_path(arm_dir: str, corpus: str) -> str:
  return os.path.join(arm_dir, f"evals-{corpus}", "evals", "bpb.json")


def evaluate_arm(arm_dir: str, corpus: str) -> dict:
  """``python -m phijax.evaluate --task=bpb`` on the arm's final parameters, over the
  held-out files of the NEW packages (``corpus="new"``: this file's finetune config) or
  of the pretraining corpus (``"old"``: its pretrain config, the pretrain arm's own
  final-eval rows); cached in ARM/evals-CORPUS/, its log in ARM/evals-CORPUS.log."""
  path = _eval_path(arm_dir, corpus)
  if not os.path.exists(path):
    recipe = "finetune" if corpus == "new" else "pretrain"
    cmd = [sys.executable, "-m", "phijax.evaluate", f"--workdir={arm_dir}", "--task=bpb",
           f"--config={os.path.abspath(__file__)}:{recipe}",
           f"--out={os.path.join(arm_dir, f'evals-{corpus}')}"]
    with open(os.path.join(arm_dir, f"evals-{corpus}.log"), "w") as log:
      if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
        print(f"freeze_sgd: evaluating {arm_dir} on {corpus} failed; see {log.name}",
              flush=True)
        return {}
  with open(path) as f:
    return json.load(f)["scores"]


def gradient_norms(pretrain_dir: str, batches: int = 4) -> dict:
  """The paper's diagnostic: at the pretrained parameters, the gradient of the mean
  held-out loss per parameter group, on the NEW packages and on the pretraining corpus
  (the first ``batches`` held-out batches of each). {corpus: {group: (grad norm,
  grad norm / parameter norm)}}."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import linen as nn
  from phijax import data
  from phijax.evals import model_source
  from phijax.train import optim
  from phijax.model import sharding
  from phijax.train import perplexity
  from phijax.train.step import device_batch

  m = model_source.load_run(pretrain_dir)
  fns = perplexity.eval_fns(m.cfg, 8)
  params = jax.device_put(m.params, fns.state_shardings.params)

  def group(path):
    p = optim.path_string(path)
    if p == "embed":
      return "token embedding (embed)"
    if p.startswith("lm_head"):
      return "LM head (lm_head, bias)"
    if p.endswith("kernel"):
      return "block matrices"
    return "norms and biases"

  out = {}
  for corpus in ("new", "old"):
    cfg = get_config("finetune" if corpus == "new" else "pretrain")
    evs = data.make_eval_batches(cfg.data, m.tokenizer, batch_size=8, num_batches=batches,
                                 process_index=0, process_count=1)

    def loss(p, b):
      s = fns.eval_step.jitted(p, b)
      return s["nll_sum"] / s["tokens"]
    grads = None
    for b in evs:
      with sharding.mesh_context(fns.batch_sharding.mesh), \
          nn.logical_axis_rules(sharding.DEFAULT_RULES):
        g = jax.grad(loss)(params, device_batch(b, fns.batch_sharding,
                                                keys=perplexity.EVAL_KEYS))
      grads = g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
    sq_g, sq_w = {}, {}
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                            jax.tree_util.tree_leaves(params)):
      k = group(path)
      sq_g[k] = sq_g.get(k, 0.0) + float(jnp.sum((g / len(evs)) ** 2))
      sq_w[k] = sq_w.get(k, 0.0) + float(jnp.sum(w.astype(jnp.float32) ** 2))
    out[corpus] = {k: (np.sqrt(sq_g[k]), np.sqrt(sq_g[k] / sq_w[k])) for k in sq_g}
  return out


def _scores(table, sweep_dir) -> dict:
  """{arm name: {"new": scores, "old": scores}}: the pretrain arm on both corpora, each
  finished fine-tuning arm on the pretraining corpus (its NEW score is its own final
  evaluation, the same rows as ``evaluate_arm(..., "new")``)."""
  out = {}
  for r in table.rows:
    if r.get("status") != "done":
      continue
    arm_dir = os.path.join(sweep_dir, r["arm"])
    got = {"old": evaluate_arm(arm_dir, "old")}
    if r.get("config") == "pretrain":
      got["new"] = evaluate_arm(arm_dir, "new")
    else:
      got["new"] = {"eval_loss": r["eval_loss"], "eval_bpb": r["eval_bpb"]}
    out[r["arm"]] = got
  return out


def _logged_bytes(arm_dir) -> float:
  from phijax.sweeps import runs
  _, _, final = runs.split_rows(runs.read_rows(arm_dir))
  return (final or {}).get("opt_state_bytes_per_param", math.nan)


def _write_csv(table, sweep_dir, scores, best) -> str:
  import csv
  path = os.path.join(sweep_dir, "freeze_sgd.csv")
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arm", "method", "optim", "freeze", "lr", "seed", "best_lr",
                "new_heldout_loss", "new_heldout_bpb", "old_heldout_loss",
                "old_heldout_bpb", "opt_state_bytes_per_param"])
    for r in table.rows:
      s = scores.get(r["arm"])
      if s is None:
        continue
      m = _method(r) if r.get("config") == "finetune" else None
      w.writerow([r["arm"], LABELS.get(m, "pretrained (before fine-tuning)"),
                  r.get("optim") or "adamw", r.get("freeze") or "", r.get("lr") or PRETRAIN_LR,
                  r.get("seed"), "yes" if m in best and best[m][0] == r.get("lr") else "",
                  *(f"{s[c].get(k, math.nan):.4f}" for c in ("new", "old")
                    for k in ("eval_loss", "eval_bpb")),
                  f"{_logged_bytes(os.path.join(sweep_dir, r['arm'])):.3f}"])
  return path


def plot(table, sweep_dir):
  """Scores the arms before / after and on the pretraining corpus (cached), appends
  those tables and the gradient diagnostic to results.md, writes freeze_sgd.csv and
  draws freeze_sgd.png."""
  from matplotlib.figure import Figure
  from phijax.sweeps.tables import summary_table

  scores = _scores(table, sweep_dir)
  grid = _grid(table)
  best = _best(grid)
  pre = [r for r in table.rows if r.get("config") == "pretrain" and r["arm"] in scores]
  before = scores[pre[0]["arm"]] if pre else {"new": {}, "old": {}}
  b_new, b_old = (before[c].get("eval_loss", math.nan) for c in ("new", "old"))
  csv_path = _write_csv(table, sweep_dir, scores, best)

  # ---- results.md: before / after, forgetting, memory; the gradient diagnostic
  rows = [{"model": "pretrained (before fine-tuning)", "lr": "-",
           "new packages: held-out loss": f"{b_new:.3f}",
           "bits/byte": f"{before['new'].get('eval_bpb', math.nan):.3f}",
           "pretraining corpus: held-out loss": f"{b_old:.3f}",
           "rise (forgetting)": "-", "logged state bytes/param": "-"}]
  for m in METHODS:
    if m not in best:
      continue
    lr, members = best[m]
    new = [scores[r["arm"]]["new"]["eval_loss"] for r in members]
    old = [scores[r["arm"]]["old"].get("eval_loss", math.nan) for r in members]
    rows.append({"model": LABELS[m], "lr": f"{lr:g}",
                 "new packages: held-out loss": _pm(new),
                 "bits/byte": _pm([r["eval_bpb"] for r in members]),
                 "pretraining corpus: held-out loss": _pm(old),
                 "rise (forgetting)": _pm([o - b_old for o in old], signed=True),
                 "logged state bytes/param": _pm(
                     [_logged_bytes(os.path.join(sweep_dir, r["arm"])) for r in members],
                     digits=2)})
  grads = gradient_norms(os.path.join(sweep_dir, pre[0]["arm"])) if pre else {}
  grows = [{"parameter group": k,
            "grad norm, new packages": f"{grads['new'][k][0]:.3f}",
            "grad norm / param norm, new": f"{grads['new'][k][1]:.4f}",
            "grad norm, pretraining corpus": f"{grads['old'][k][0]:.3f}",
            "grad norm / param norm, old": f"{grads['old'][k][1]:.4f}"}
           for k in sorted(grads.get("new", {}))]
  with open(os.path.join(sweep_dir, "results.md"), "a") as f:
    f.write("\n## Before / after, forgetting and memory (each method at its best LR)\n\n"
            + summary_table(rows) +
            "\n\nHeld-out loss in nats/token, mean over seeds [seed 0, seed 1]. New "
            "packages: the held-out files of `" + NEW + "` (11,044 tokens). Pretraining "
            "corpus: the pretrain arm's final-eval rows (the rest of the stdlib's "
            "held-out files, 32 batches); rise = after minus the pretrained model's. "
            "State bytes: `opt_state_bytes_per_param` as each run logs it (float32, over "
            "all parameters, frozen ones included). Every arm: `freeze_sgd.csv`.\n")
    if grows:
      f.write("\n## Gradient norms at the pretrained parameters\n\n" + summary_table(grows)
              + "\n\nThe gradient of the mean held-out loss (first 4 held-out batches of "
              "each corpus), L2 norm per parameter group, and that over the group's "
              "parameter norm. Kumar et al.'s premise is that the embedding's gradient is "
              "much larger than the other layers'.\n")
    f.write("\nPlot: `freeze_sgd.png`. The runner's `curves.png` and `final.png` are not "
            "committed: with 25 arms they are unreadable.\n")

  # ---- freeze_sgd.png
  fig = Figure(figsize=(19, 7.6), layout="constrained")
  ax_lr, ax_mem, ax_old = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1, 1]})
  for m in METHODS:
    by_lr = grid[m]
    if not by_lr:
      continue
    lrs = sorted(by_lr)
    shift = 1.05 if m[1] else 1 / 1.05  # frozen arms a little right, so seeds do not overlap
    ax_lr.plot([lr * shift for lr in lrs],
               [_mean(r["eval_loss"] for r in by_lr[lr]) for lr in lrs], "-",
               marker=MARKERS[m[1]], color=COLORS[m], label=LABELS[m], markersize=7)
    for lr in lrs:
      ax_lr.plot([lr * shift] * len(by_lr[lr]), [r["eval_loss"] for r in by_lr[lr]], "_",
                 color=COLORS[m], markersize=12, mew=1.5)
  if math.isfinite(b_new):
    ax_lr.axhline(b_new, color="gray", linestyle=":",
                  label=f"pretrained, before fine-tuning ({b_new:.3f})")
  ax_lr.set_xscale("log")
  ax_lr.set(xlabel="peak learning rate (log scale; AdamW's grid left, SGD's right)",
            ylabel="held-out loss on the new packages (nats / token)",
            title=f"LR grid, {FINETUNE_STEPS} fine-tuning steps\n(line: seed mean; "
                  "dashes: seeds 0 and 1)")
  ax_lr.grid(alpha=0.3, which="both")
  ax_lr.legend(fontsize="small", loc="upper center")

  adamw = best.get(("adamw", ""))
  ref = {r["seed"]: r["eval_loss"] for r in adamw[1]} if adamw else {}
  for m in METHODS:
    if m not in best:
      continue
    lr, members = best[m]
    diff = [r["eval_loss"] - ref[r["seed"]] for r in members if r["seed"] in ref]
    rise = [scores[r["arm"]]["old"].get("eval_loss", math.nan) - b_old for r in members]
    x = _logged_bytes(os.path.join(sweep_dir, members[0]["arm"]))
    new = [r["eval_loss"] for r in members]
    old = [scores[r["arm"]]["old"].get("eval_loss", math.nan) for r in members]
    for ax, vals, note in (
        (ax_mem, new, "minus AdamW " + _pm(diff, signed=True) if m != ("adamw", "") else ""),
        (ax_old, old, "rise " + _pm(rise, signed=True))):
      ax.plot([x] * len(vals), vals, "_", color=COLORS[m], markersize=16, mew=2)
      ax.plot([x], [_mean(vals)], marker=MARKERS[m[1]], color=COLORS[m], markersize=10,
              linestyle="none", label=f"{LABELS[m]}, lr {lr:g}: {x:.2f} B/param"
              + (f"; {note}" if note else ""))
  if math.isfinite(b_old):
    ax_old.axhline(b_old, color="gray", linestyle=":",
                   label=f"pretrained, before fine-tuning ({b_old:.3f})")
  ax_mem.set(xlabel="optimizer state, bytes per parameter (float32, all parameters)",
             ylabel="held-out loss on the new packages (nats / token)",
             title="each method at its best LR: new packages\n(marker: seed mean; "
                   "dashes: seeds; lower is better)")
  ax_old.set(xlabel="optimizer state, bytes per parameter (float32, all parameters)",
             ylabel="held-out loss on the pretraining corpus (nats / token)",
             title="the same runs on the pretraining corpus (forgetting)\n(marker: seed "
                   "mean; dashes: seeds; lower is better)")
  for ax in (ax_mem, ax_old):
    ax.set_xlim(2, 9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13))
  fig.suptitle("Fine-tuning a pretrained 0.9M-parameter phi on held-out stdlib packages ("
               + NEW.replace("/*", "") + "): SGD (momentum 0.9) vs AdamW, with and without "
               "the token embedding frozen")
  path = os.path.join(sweep_dir, "freeze_sgd.png")
  fig.savefig(path, dpi=100)
  return [csv_path, path]
