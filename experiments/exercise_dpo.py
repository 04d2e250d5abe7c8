"""DPO at toy scale on code exercises: does direct preference optimization (Rafailov et
al. 2023, arXiv 2305.18290; phi-3 and phi-4 post-train with it) teach a small model
pretrained on code to prefer a function's real body over the same lines shuffled, on
exercises from files it never saw?

    python -m phijax.sweep experiments/exercise_dpo.py \\
        --workdir=experiments/results/exercise_dpo --parallel=2

Pairs (``phijax.data.exercises.preference_pairs``): prompt = an exercise's signature
and docstring, chosen = its body, rejected = the body's lines in a shuffled order
(deterministic: seeded by the exercise's file and line), so both responses hold the
same tokens and only their order tells them apart. Training pairs: the LIMA-sized
even sample of train exercises experiments/exercise_sft.py fine-tunes on
(``LIMA_EXERCISES``); evaluation pairs: all 124 held-out exercises (held-out stdlib
files), rendered with the ``plain`` template as DPO renders its pairs.

Arms (x seeds {0, 1}):

- ``config=pretrain``: experiments/exercise_sft.py's pretrain recipe, unchanged (the
  same config, so the same model: CPU training is deterministic).
- ``config=dpo``: warm-started from the seed's pretrain arm, which is also the frozen
  reference; ``train.objective=dpo``, beta DPO_BETA, AdamW at DPO_LR (linear decay to
  0.1x, 5 warmup steps), DPO_STEPS steps of 8 pairs (512 of the 1,000 training
  pairs, each once; a probe reached training DPO loss 0.12 by step 35). The
  run's own evaluation reads the preference source's hash-held-out 5% (pairs from
  training files).

Before / after (``plot`` evaluates every finished arm, caching
ARM/evals-preferences.json, and appends the tables to results.md): on the 124
held-out pairs, with logp = the summed log-probability of the response tokens and
their end-of-turn given the prompt,

- likelihood preference accuracy: the share of pairs with logp(chosen) >
  logp(rejected), for the pretrain model (before) and the DPO model (after), and the
  mean logp(chosen) - logp(rejected);
- DPO's implicit reward, r = beta (logp_policy - logp_reference): accuracy (r_chosen >
  r_rejected) and margin (r_chosen - r_rejected), the numbers the DPO run logs. Before
  DPO the policy is the reference, so both are 0 by construction.

Runtime on 2 CPU cores at --parallel=2: measured 33 minutes beside other jobs (load
average 10-17; pretrain 1,225-1,255 s, DPO 606-611 s, ~2 minutes of scoring); on a
quiet machine about 7 minutes.
"""

import importlib.util
import json
import math
import os

import numpy as np

from phijax.data import config as data_config, exercises as data_exercises


def _sft_experiment():
  """experiments/exercise_sft.py (the pretrain recipe and its constants)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exercise_sft.py")
  spec = importlib.util.spec_from_file_location("exercise_sft", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


SFT = _sft_experiment()
RECIPES = ("pretrain", "dpo")
DPO_BETA = 0.1
DPO_LR = 1e-3
DPO_STEPS = 64  # 512 of the 1,000 training pairs, each seen once
PAIRS_PER_STEP = 8


def pairs_path(split: str = "train") -> str:
  return data_exercises.cached_jsonl(split, "preferences",
                                     count=SFT.LIMA_EXERCISES if split == "train" else 0)


def get_config(arg=None):
  recipe = arg or "pretrain"
  if recipe not in RECIPES:
    raise ValueError(f"exercise_dpo.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = SFT.get_config("pretrain")
  if recipe == "pretrain":
    return c
  c.unlock()
  c.data.sources = {"pairs": data_config.source("preferences", pairs_path("train"),
                                                template="plain")}
  c.train.update(objective="dpo", dpo_beta=DPO_BETA, steps=DPO_STEPS, tokens=0,
                 batch_size=PAIRS_PER_STEP, eval_every=0, eval_batches=0,
                 final_eval_batches=0, log_every=5)
  c.optim.update(name="adamw", lr=DPO_LR, b1=0.9, b2=0.95, weight_decay=0.0, clip=1.0)
  c.curriculum.lr.update(schedule="linear", warmup_steps=5, min_ratio=0.1,
                         token_based_decay=False)
  c.lock()
  return c


def get_sweep(h):
  arms = []
  for seed in (0, 1):
    arms += [{"config": "pretrain", "train.seed": seed},
             {"config": "dpo", "train.seed": seed,
              "train.init_from": f"{{arm:config=pretrain,seed={seed}}}"}]
  return arms


# ------------------------------------------------------- held-out preference scores

PREF_FILE = "evals-preferences.json"


def preference_logps(arm_dir: str) -> dict:
  """The arm's summed log-probabilities of every held-out pair's chosen and rejected
  response (with its end-of-turn) given the prompt, rendered as DPO renders pairs;
  cached in ARM/evals-preferences.json."""
  import types

  from phijax.model import decode
  from phijax.evals import model_source, exercises as ev
  cache = os.path.join(arm_dir, PREF_FILE)
  if os.path.exists(cache):
    with open(cache) as f:
      return json.load(f)
  with open(pairs_path("heldout")) as f:
    pairs = [json.loads(line) for line in f if line.strip()]
  m = model_source.load_run(arm_dir)
  gen = decode.Generator(m.cfg, m.params)
  out = {"pairs": pairs_path("heldout"), "names": [p["name"] for p in pairs],
         "template": "plain", "source": m.source}
  for side in ("chosen", "rejected"):
    enc = [ev.encode(types.SimpleNamespace(prompt=p["prompt"], response=p[side]),
                     m.tokenizer, "chat") for p in pairs]
    too_long = [len(e.ids) > m.cfg.max_position_embeddings for e in enc]
    if any(too_long):
      raise ValueError(f"{sum(too_long)} held-out pairs exceed the model's context")
    out[side] = (-ev.response_nll(gen, enc, 16)).tolist()
    out[f"{side}_tokens"] = [int(e.target_mask.sum()) for e in enc]
  tmp = f"{cache}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(out, f)
  os.replace(tmp, cache)
  return out


def _arm(table, recipe, seed):
  rows = [r for r in table.where(config=recipe, seed=seed) if r["status"] == "done"]
  return rows[0] if rows else None


def _scores(table, sweep_dir):
  """{seed: {"before": ..., "after": ...}}: per-pair log-probabilities of the pretrain
  (reference) arm and the DPO arm, and the derived numbers."""
  out = {}
  for seed in table.values("seed"):
    pre, dpo = _arm(table, "pretrain", seed), _arm(table, "dpo", seed)
    if pre is None:
      continue
    ref = preference_logps(os.path.join(sweep_dir, pre["arm"]))
    c0, r0 = np.asarray(ref["chosen"]), np.asarray(ref["rejected"])
    got = {"before": {"acc": float(np.mean(c0 > r0)), "margin": float(np.mean(c0 - r0)),
                      "chosen": float(np.mean(c0)), "diffs": (c0 - r0).tolist()}}
    if dpo is not None:
      pol = preference_logps(os.path.join(sweep_dir, dpo["arm"]))
      c1, r1 = np.asarray(pol["chosen"]), np.asarray(pol["rejected"])
      reward_c, reward_r = DPO_BETA * (c1 - c0), DPO_BETA * (r1 - r0)
      got["after"] = {"acc": float(np.mean(c1 > r1)), "margin": float(np.mean(c1 - r1)),
                      "chosen": float(np.mean(c1)), "diffs": (c1 - r1).tolist(),
                      "reward_acc": float(np.mean(reward_c > reward_r)),
                      "reward_margin": float(np.mean(reward_c - reward_r)),
                      "dpo_loss": float(np.mean(np.logaddexp(0.0, -(reward_c - reward_r))))}
      _, _, final = _split(sweep_dir, dpo["arm"])
      if final:
        got["after"]["dev"] = (final.get("eval_reward_accuracy", math.nan),
                               final.get("eval_reward_margin", math.nan),
                               final.get("eval_pairs", 0))
    out[seed] = got
  return out


def _split(sweep_dir, arm):
  from phijax.sweeps import runs
  return runs.split_rows(runs.read_rows(os.path.join(sweep_dir, arm)))


def _pm(values, digits=3, signed=False):
  from phijax.sweeps import tables
  vals = [v for v in values if math.isfinite(v)]
  if not vals:
    return "-"
  mean, std, n = tables.mean_std(vals)
  f = f"{{:{'+' if signed else ''}.{digits}f}}"
  return (f.format(mean) + (f" ± {std:.{digits}f}" if n > 1 else "") + " ["
          + ", ".join(f.format(v) for v in vals) + "]")


def _table(scores) -> str:
  from phijax.sweeps.tables import summary_table
  seeds = sorted(scores)
  get = lambda when, key: [scores[s].get(when, {}).get(key, math.nan) for s in seeds]
  rows = [
      {"model": "pretrained (before DPO; also the reference)",
       "likelihood preference accuracy": _pm(get("before", "acc")),
       "mean logp(chosen) - logp(rejected) (nats)": _pm(get("before", "margin"),
                                                         signed=True),
       "mean logp(chosen) (nats)": _pm(get("before", "chosen")),
       "DPO reward accuracy": "0 (policy = reference)",
       "DPO reward margin": "0 (policy = reference)", "DPO loss": f"{math.log(2):.3f}"},
      {"model": "after DPO",
       "likelihood preference accuracy": _pm(get("after", "acc")),
       "mean logp(chosen) - logp(rejected) (nats)": _pm(get("after", "margin"), signed=True),
       "mean logp(chosen) (nats)": _pm(get("after", "chosen")),
       "DPO reward accuracy": _pm(get("after", "reward_acc")),
       "DPO reward margin": _pm(get("after", "reward_margin"), signed=True),
       "DPO loss": _pm(get("after", "dpo_loss"))}]
  dev = [scores[s].get("after", {}).get("dev") for s in seeds]
  dev = [d for d in dev if d]
  text = summary_table(rows)
  if dev:
    text += ("\n\nThe DPO runs' own final evaluation, on the preference source's "
             f"hash-held-out pairs ({dev[0][2]} pairs from training files): reward "
             f"accuracy {_pm([d[0] for d in dev])}, margin "
             f"{_pm([d[1] for d in dev], signed=True)}.")
  return text


def summarize(table):
  return ("The held-out preference scores (before / after DPO) are appended at the end "
          "of this file by the experiment's `plot`, which scores each finished arm once "
          f"(cached in ARM/{PREF_FILE}). The `held-out loss` column above is each run's "
          "own final evaluation: the stdlib's held-out rows for pretrain, the DPO loss "
          "on the preference source's hash-held-out pairs for dpo.")


def plot(table, sweep_dir):
  """Scores the arms on the held-out pairs (cached), appends the table to results.md,
  draws preferences.png."""
  from matplotlib.figure import Figure
  from phijax.sweeps import runs

  scores = _scores(table, sweep_dir)
  seeds = sorted(scores)
  with open(os.path.join(sweep_dir, "results.md"), "a") as f:
    f.write("\n## Held-out preference pairs: before and after DPO\n\n" + _table(scores) +
            f"\n\n{len(scores[seeds[0]]['before']['diffs']) if seeds else 0} pairs from "
            "the held-out exercises (held-out stdlib files): chosen = the real body, "
            "rejected = its lines shuffled. logp: summed log-probability of the response "
            "and its end-of-turn given the prompt (plain template). Likelihood preference "
            "accuracy: share of pairs with logp(chosen) > logp(rejected); DPO reward r = "
            f"{DPO_BETA:g} (logp_policy - logp_reference). Mean ± sample std over "
            f"seeds, each seed in brackets (seed order {seeds}).\n\n"
            "Plot: `preferences.png`.\n")

  fig = Figure(figsize=(17, 5.2), layout="constrained")
  ax_hist, ax_margin, ax_acc = fig.subplots(1, 3)
  before = np.concatenate([scores[s]["before"]["diffs"] for s in seeds]) if seeds else []
  after = [scores[s]["after"]["diffs"] for s in seeds if "after" in scores[s]]
  after = np.concatenate(after) if after else np.asarray([])
  both = np.concatenate([before, after]) if len(after) else np.asarray(before)
  if len(both):
    bins = np.linspace(min(both.min(), -1), max(both.max(), 1), 40)
    ax_hist.hist(before, bins, color="tab:gray", alpha=0.6,
                 label=f"pretrained (before): {np.mean(before > 0):.0%} of pairs > 0")
    if len(after):
      ax_hist.hist(after, bins, color="tab:blue", alpha=0.6,
                   label=f"after DPO: {np.mean(after > 0):.0%} of pairs > 0")
  ax_hist.axvline(0, color="black", linewidth=1)
  ax_hist.set(title="held-out pairs: logp(chosen) - logp(rejected)\n(both seeds pooled; "
              "right of 0: the real body is more likely)",
              xlabel="log-probability difference (nats)", ylabel="pairs")
  ax_hist.legend(fontsize="small")
  for s, style, marker in zip(seeds, ("-", "--"), ("o", "s")):
    r = _arm(table, "dpo", s)
    if r is None:
      continue
    train, _, _ = _split(sweep_dir, r["arm"])
    steps = [x["step"] for x in train]
    ax_margin.plot(steps, runs.ema([x["reward_margin"] for x in train], 0.3), style,
                   color="tab:blue", label=f"seed {s}: training batches (EMA 0.3)")
    ax_acc.plot(steps, runs.ema([x["reward_accuracy"] for x in train], 0.3), style,
                color="tab:blue", label=f"seed {s}: training batches (EMA 0.3)")
    after_s = scores[s].get("after")
    if after_s:  # at the run's last step (the training rows are logged every 5)
      ax_margin.plot([r["steps"]], [after_s["reward_margin"]], marker, color="navy",
                     markersize=8, label=f"seed {s}: held-out pairs, after DPO")
      ax_acc.plot([r["steps"]], [after_s["reward_acc"]], marker, color="navy",
                  markersize=8, label=f"seed {s}: held-out pairs, after DPO")
  ax_margin.set(title=f"DPO reward margin (beta {DPO_BETA:g}; 0 before DPO)",
                xlabel="DPO step", ylabel="r(chosen) - r(rejected)")
  ax_acc.set(title="DPO reward accuracy (ties count as wrong; 0 before DPO)",
             xlabel="DPO step", ylabel="share of pairs with r(chosen) > r(rejected)")
  ax_acc.set_ylim(0, 1.02)
  for ax in (ax_margin, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
  path = os.path.join(sweep_dir, "preferences.png")
  fig.savefig(path, dpi=100)
  return [path]
