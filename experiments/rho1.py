"""Rho-1: selective language modelling (Lin et al. 2024, "Rho-1: Not All Tokens Are What
You Need", arXiv 2404.07965).

Question: Rho-1 scores every training token with a reference model trained on clean,
high-quality data and trains only on the top fraction of each batch's tokens by excess
loss (the model's loss minus the reference's); the paper reports better downstream and
held-out results than plain language modelling at the same tokens (ratio 60% best for
math, 70% for general text). Here the target is Python stdlib source and the training
corpus is clean stdlib mixed with text that is low quality for that target: does
``train.token_selection`` reach lower held-out bits per byte on clean stdlib than plain
LM on the same noisy mixture, same tokens, same tokenizer?

    python -m phijax.sweep experiments/rho1.py --workdir=experiments/results/rho1 \\
        --parallel=1
    # smoke: the reference and SLM 0.6 at seed 0, 20 steps each
    python -m phijax.sweep experiments/rho1.py --workdir=runs/rho1_quick \\
        --only='config=mix,select=0.6,seed=0' --config.train.tokens=40960 \\
        --config.train.eval_every=10 --parallel=1

Measured on 2 CPU cores shared with another experiment's sweep (load average 5-7):
19m17s for the 9 reference and noisy-mix arms at --parallel=1 (101-175 s per arm,
3.5k-6.4k tokens/s: the other job's load moved throughput more than the SLM arms'
extra reference forward did), then 63 s for the clean-only control arm (added later, on
a quieter machine: 9.9k tokens/s), ~1 minute for ``plot``'s evaluations; the smoke
variant 1m36s.

Data (``get_config``): the ``stdlib`` source (generated files left out, as always, and
here the ``encodings`` package too, CLEAN_EXCLUDE: its held-out ``cp858.py`` is a codec
table the generated-file filter missed when this ran (it has caught it since), 19% of the evaluation's bytes, which the noisy
arms learned from the noise; a first run with it in scored the reference worse than
plain LM) at weight CLEAN_WEIGHT, plus two noise sources made of the generated files the
stdlib source leaves out, found under ``phijax.data.corpus.stdlib_root()`` when the
config is built: ``tables``, the gencodec.py codec tables (``encodings/*.py`` less the
codec modules that are not generated: 65 files, 1.2 MB of 256-entry decoding tables, when
this ran; 70 since ``corpus.is_generated`` also knows the unmarked tables),
and ``topics``, ``pydoc_data/topics.py`` (0.76 MB of English help text in a dict; one
document, so all of it is training data), each at NOISE_WEIGHT of the rows: the noise is
40% of every mix arm's training tokens. ``data.eval_sources = "stdlib"``: every
evaluation the runs log reads FINAL_EVAL_BATCHES x 8 held-out rows of clean stdlib
only. (The committed run predates that field; then evaluations read sources in key
order, and ``stdlib`` sorting first, which is why the noise sources have these names,
gave the same rows.) ``plot`` checks this by evaluating every arm on the ``stdlib`` source
alone (it matches to the last digit), and on the ``tables`` held-out files (a few codec
tables) for how much of the noise each arm learned.

Arms:

- ``config=reference``: the same model on clean stdlib only (no noise), TOKENS tokens,
  seed 0; one reference shared by both seeds of the other arms. Its ``tokenizer.model``
  (the cached stdlib 2048-token BPE) is every arm's tokenizer
  (``data.tokenizer.path={arm:config=reference}/tokenizer.model``), as Rho-1 needs the
  same token ids in both losses. It is also the "perfect filter" control: a model that
  saw only clean tokens, all TOKENS of them (the others see 60% clean).
- ``config=mix,select=0`` (plain LM), ``select=0.6`` (the paper's ratio, here also the
  clean share of the tokens), ``select=0.3`` (half of it) and ``select=0.9`` on the
  noisy mixture, x seeds {0, 1}; ``train.reference={arm:config=reference}``. The same
  seed gives the same initialisation and batches in every mix arm, so arms are compared
  seed by seed.
- ``config=reference,select=0.6``: a control without noise: SLM 0.6 on the reference's
  own clean data, budget and seed (so the same initialisation and batches as the
  reference), scored by the reference. Does selection help when nothing is noise?

Model and budget: galore.py's ablation model (hidden 128, 2 layers, 2048-token
vocabulary, ~0.9M parameters) with Muon at LR 2.4e-2 (lr_sweep.py's best Muon LR at this
model), batch 8 x 256, TOKENS tokens per arm, 10 LR-warmup steps, cosine over tokens to
0.1x. Every evaluation reads the same FINAL_EVAL_BATCHES = 32 held-out batches.

``summarize``: per arm, held-out stdlib bits per byte (seed mean and seeds), minus plain
LM seed by seed. ``plot`` (it has the sweep directory, which ``summarize`` has not)
evaluates every arm on ``stdlib`` and on the ``tables`` held-out files alone
(``heldout_bpb``), measures which sources the final SLM models would select
(``selection_by_source``), adds those and the logged ``selected_fraction`` and
``excess_loss`` (the mean over the selected tokens of model minus reference loss; whole
run and last quarter) to results.md and rho1.csv (all cached in ARM/evals-rho1.json),
and draws rho1.png: final bits/byte per arm with seeds as points, the held-out curves,
and the excess-loss curves.
"""

import json
import math
import os

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config, corpus

ALIASES = {"train.token_selection": "select"}
RECIPES = ("mix", "reference")
TOKENS = 409_600  # 200 steps of 8 x 256
LR = 2.4e-2  # lr_sweep.py's best Muon LR for this model at 80 steps
EVAL_EVERY = 40
FINAL_EVAL_BATCHES = 32
CLEAN_WEIGHT = 0.6
# The codec package is left out of the clean source: its hand-written or unmarked codec
# tables (encodings/cp858.py, 34 KB, is held out and was 19% of the evaluation's bytes)
# are the noise's kind of text, so a noisy arm learned part of the "clean" test set.
CLEAN_EXCLUDE = "encodings/*"
NOISE_WEIGHT = 0.2  # each of tables and topics
RATIOS = (0.6, 0.3, 0.9)
REFERENCE = "{arm:config=reference}"
EVAL_FILE = "evals-rho1.json"  # per arm: held-out bpb on stdlib alone and on tables
SELECTION_ROWS = 80  # selection_by_source: rows per batch (60/20/20 as the mixture)
NOISE_EVAL_BATCHES = 3  # the codec tables' held-out files fill 27 rows


def noise_sources() -> dict:
  """The stdlib's generated files as text sources: the codec tables and pydoc's topics."""
  root = corpus.stdlib_root()
  enc = sorted(p.name for p in (root / "encodings").glob("*.py"))
  not_generated = [n for n in enc if not corpus.is_generated(root / "encodings" / n)]
  return {
      "tables": data_config.source("text", str(root / "encodings" / "*.py"),
                                   exclude=",".join(not_generated), weight=NOISE_WEIGHT),
      "topics": data_config.source("text", str(root / "pydoc_data" / "topics.py"),
                                  weight=NOISE_WEIGHT)}


def get_config(arg=None):
  recipe = arg or "mix"
  if recipe not in RECIPES:
    raise ValueError(f"rho1.py: recipe {recipe!r}; choose one of {RECIPES}")
  c = base.small_ablation(tiny.get_config(), tokens=TOKENS, batch_size=8,
                          eval_every=EVAL_EVERY, final_eval_batches=FINAL_EVAL_BATCHES,
                          log_every=2)
  c.optim.update(name="muon", lr=LR)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  c.train.eval_batches = FINAL_EVAL_BATCHES  # periodic evals: the final eval's rows
  c.train.save_every_minutes = 0.0  # one checkpoint, at the end: the arms are short
  # Every recipe has the same sources (the same config keys); the reference gives the
  # noise weight 0, so it neither trains on it nor trains its tokenizer on it.
  c.data.sources.stdlib.update(weight=CLEAN_WEIGHT, exclude=CLEAN_EXCLUDE)
  c.data.eval_sources = "stdlib"  # held-out: the target alone, not the noisy mix
  for name, src in noise_sources().items():
    if recipe == "reference":
      src.weight = 0.0
    c.data.sources[name] = src
  return base.finish(c, None)


def get_sweep(h):
  arms = [{"config": "reference"}]
  tok = {"data.tokenizer.path": f"{REFERENCE}/tokenizer.model"}
  for ratio in (0.0, *RATIOS):
    for seed in (0, 1):
      arm = {"config": "mix", "train.token_selection": ratio, "train.seed": seed, **tok}
      if ratio:
        arm["train.reference"] = REFERENCE
      arms.append(arm)
  # Control: selection without noise, on the reference's own clean data and budget.
  arms.append({"config": "reference", "train.token_selection": 0.6,
               "train.reference": REFERENCE, **tok})
  return arms


# ------------------------------------------------------------------- summary and plot

def _label(r) -> str:
  s = r.get("select") or 0
  if r.get("config") == "reference":
    return f"SLM {s:g}, clean only" if s else "reference (clean only)"
  return "LM (every token)" if not s else f"SLM {s:g}"


def _groups(table):
  """[(label, [finished rows])]: reference, LM, SLM by ratio, seeds together."""
  out = {}
  for r in table.rows:
    if r.get("status") == "done" and math.isfinite(r.get("eval_loss", math.nan)):
      out.setdefault(_label(r), []).append(r)
  order = ["reference (clean only)", "SLM 0.6, clean only", "LM (every token)"] + [
      f"SLM {x:g}" for x in sorted(RATIOS, reverse=True)]
  return [(k, out[k]) for k in order if k in out] + [
      (k, v) for k, v in out.items() if k not in order]


def heldout_bpb(arm_dir: str) -> dict:
  """{source: bits/byte} of the arm's final model on the ``stdlib`` held-out rows alone
  (FINAL_EVAL_BATCHES batches, the training evaluations' rows) and on the ``tables``
  held-out files (NOISE_EVAL_BATCHES batches); cached in ARM/evals-rho1.json."""
  path = os.path.join(arm_dir, EVAL_FILE)
  from phijax.evals import model_source
  m = model_source.load_run(arm_dir)
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get("step") == m.step:
      return cached["bpb"]
  import ml_collections
  from phijax.train import perplexity
  cfg_data = ml_collections.ConfigDict(m.run_config["data"])
  out = {}
  for name, batches in (("stdlib", FINAL_EVAL_BATCHES), ("tables", NOISE_EVAL_BATCHES)):
    ev = perplexity.evaluate_heldout(m.cfg, m.params, m.tokenizer, cfg_data, batch_size=8,
                                     num_batches=batches, sources=[name])
    out[name] = float(ev["eval_bpb"])
  with open(path, "w") as f:
    json.dump({"step": m.step, "bpb": out}, f, indent=2)
  return out


def _token_nll(m, rows):
  """Per-token -log p(target) [N, L] of the loaded model ``m`` over packed ``rows``."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from phijax.train import losses
  from phijax.model import Transformer
  apply = jax.jit(lambda p, x, pos, seg: Transformer(m.cfg).apply({"params": p}, x, pos, seg))
  out = []
  for i in range(0, len(rows), 8):
    b = rows[i:i + 8]
    logits = apply(m.params, np.stack([r["inputs"] for r in b]),
                   np.stack([r["positions"] for r in b]),
                   np.stack([r["segment_ids"] for r in b]).astype(np.int32))
    out.append(np.asarray(losses.token_losses(logits, jnp.asarray(
        np.stack([r["targets"] for r in b])))[0]))
  return np.concatenate(out)


def selection_by_source(arm_dir: str, ratio: float) -> dict:
  """At the end of training: of the tokens the final model would select (the top
  ``ratio`` by excess loss over the final model and the reference) in a batch of
  SELECTION_ROWS training rows mixed as the config mixes them (stdlib 60%, tables and
  topics 20% each), the share from each source. Cached in ARM/evals-rho1.json."""
  import math as _math
  import ml_collections
  import numpy as np
  from phijax import data
  from phijax.evals import model_source
  from phijax.data import packing
  path = os.path.join(arm_dir, EVAL_FILE)
  with open(path) as f:
    cached = json.load(f)
  if "selected_share" in cached:
    return cached["selected_share"]
  m = model_source.load_run(arm_dir)
  ref = model_source.load_run(m.run_config["train"]["reference"])
  cfg_data = ml_collections.ConfigDict(m.run_config["data"])
  srcs = data.build_sources(cfg_data)
  rows, names = [], []
  for name, src in srcs.items():
    want = round(SELECTION_ROWS * cfg_data.sources[name].weight)
    idx = src.train_indices()
    idx = idx[np.linspace(0, len(idx) - 1, min(len(idx), want)).astype(int)]
    it = iter(packing.source_rows(src, idx, m.tokenizer, cfg_data.seq_len,
                                  shuffle_seed=None, read_threads=1,
                                  token_bytes=m.tokenizer.token_bytes))
    got = [r for _, r in zip(range(want), it)]
    rows += got
    names += [name] * len(got)
  excess = _token_nll(m, rows) - _token_nll(ref, rows)
  valid = np.stack([r["loss_mask"] for r in rows]) > 0
  k = max(1, _math.ceil(ratio * valid.sum()))
  cut = np.sort(excess[valid])[::-1][k - 1]
  chosen = valid & (excess >= cut)
  names = np.array(names)
  share = {n: float(chosen[names == n].sum() / chosen.sum()) for n in srcs}
  share.update({f"{n}_all": float(valid[names == n].sum() / valid.sum()) for n in srcs})
  cached["selected_share"] = share
  with open(path, "w") as f:
    json.dump(cached, f, indent=2)
  return share


def _train_rows(run_dir):
  from phijax.sweeps import runs
  train, evals, final = runs.split_rows(runs.read_rows(run_dir))
  return train, evals, final


def _selection_stats(run_dir) -> dict:
  """Means of the logged selected_fraction and excess_loss: whole run, last quarter."""
  train, _, _ = _train_rows(run_dir)
  out = {}
  for key in ("selected_fraction", "excess_loss"):
    vals = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
    if not vals:
      out[key], out[key + "_late"] = math.nan, math.nan
      continue
    last = max(s for s, _ in vals)
    late = [v for s, v in vals if s > 0.75 * last]
    out[key] = sum(v for _, v in vals) / len(vals)
    out[key + "_late"] = sum(late) / len(late)
  return out


def _cell(values, fmt="{:.3f}") -> str:
  vals = [v for v in values if v is not None and math.isfinite(v)]
  if not vals:
    return "-"
  mean = fmt.format(sum(vals) / len(vals))
  if len(values) == 1:
    return mean
  return f"{mean} (" + " / ".join(fmt.format(v) for v in values) + ")"


def summarize(table):
  """Per arm: held-out stdlib bits/byte (seed mean and seeds) and minus LM, seed by seed."""
  groups = _groups(table)
  lm = {r["seed"]: r["eval_bpb"] for label, rows in groups if label.startswith("LM")
        for r in rows}
  ref = next((rows[0]["eval_bpb"] for label, rows in groups
              if label == "reference (clean only)"), None)
  rows = []
  for label, members in groups:
    members = sorted(members, key=lambda r: r.get("seed") or 0)
    diffs = [r["eval_bpb"] - lm[r["seed"]] for r in members
             if r.get("config") == "mix" and r.get("seed") in lm]
    rows.append({
        "arm": label, "seeds": "/".join(str(r.get("seed") or 0) for r in members),
        "held-out stdlib bits/byte, mean (per seed)": _cell([r["eval_bpb"] for r in members]),
        "minus LM, same seed": " / ".join(f"{d:+.4f}" for d in diffs) or "-",
        "mean minus LM": (f"{sum(diffs) / len(diffs):+.4f}" if diffs else "-"),
        "minus reference": (f"{members[0]['eval_bpb'] - ref:+.4f}"
                            if label.endswith("clean only") and ref is not None else "-")})
  return rows


def _arm_numbers(table, sweep_dir) -> dict:
  """{arm: {"stdlib", "tables", "selected_fraction", "excess_loss", ..._late}}."""
  out = {}
  for _, members in _groups(table):
    for r in members:
      arm_dir = os.path.join(sweep_dir, r["arm"])
      out[r["arm"]] = {**heldout_bpb(arm_dir), **_selection_stats(arm_dir)}
      if r.get("select") and r.get("config") == "mix":
        share = selection_by_source(arm_dir, float(r["select"]))
        out[r["arm"]].update({f"share_{k}": v for k, v in share.items()})
  return out


def _selection_table(table, numbers) -> str:
  from phijax.sweeps import tables
  rows = []
  for label, members in _groups(table):
    members = sorted(members, key=lambda r: r.get("seed") or 0)
    n = [numbers[r["arm"]] for r in members]
    rows.append({
        "arm": label,
        "stdlib only (check)": _cell([x["stdlib"] for x in n]),
        "codec tables held-out": _cell([x["tables"] for x in n]),
        "selected fraction": _cell([x["selected_fraction"] for x in n]),
        "excess loss, whole run": _cell([x["excess_loss"] for x in n]),
        "excess loss, last quarter": _cell([x["excess_loss_late"] for x in n]),
        "selected at the end: stdlib / tables / topics": (
            " / ".join(_cell([x[f"share_{k}"] for x in n], "{:.2f}")
                       for k in ("stdlib", "tables", "topics"))
            if "share_stdlib" in n[0] else "-")})
  return ("## Per-source evaluation and selection statistics\n\n"
          "Bits per byte of each arm's final model, evaluated after training on one source "
          f"alone: `stdlib` ({FINAL_EVAL_BATCHES} batches: the same held-out rows as the "
          "training evaluation, so this column repeats the table above) and `tables` "
          f"(the held-out codec tables, {NOISE_EVAL_BATCHES} batches): how much of the "
          "noise each arm learned. `selected_fraction` and `excess_loss` are the training "
          "metrics SLM arms log (the share of a batch's tokens trained on; the mean over "
          "the selected tokens of model minus reference loss, nats), averaged over the "
          "logged steps. Selected at the end: the share of each source among the tokens "
          f"the final model would select in a batch of {SELECTION_ROWS} training rows "
          "mixed 60/20/20 as in training (`selection_by_source`). Mean (seeds in order)."
          "\n\n" + tables.summary_table(rows))


def plot(table, sweep_dir):
  """Evaluates every finished arm on stdlib and tables alone (cached), adds that table
  to results.md and rho1.csv, and draws rho1.png: final held-out stdlib bits/byte per
  arm (seeds as points) | held-out stdlib bits/byte during training | excess loss and
  the codec tables' bits/byte."""
  from matplotlib.figure import Figure
  from phijax.sweeps import runs

  groups = _groups(table)
  numbers = _arm_numbers(table, sweep_dir)
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path) as f:
    text = f.read()
  section = _selection_table(table, numbers)
  cut = text.rfind("\nPlots: ")
  text = (text[:cut] + "\n" + section + "\n" + text[cut:] if cut >= 0
          else text + "\n" + section + "\n")
  text = text.rstrip("\n") + " `rho1.png`: this experiment's figure.\n"
  with open(md_path, "w") as f:
    f.write(text)
  csv_path = os.path.join(sweep_dir, "rho1.csv")
  with open(csv_path, "w") as f:
    f.write("arm,label,seed,stdlib_bpb_final_eval,stdlib_bpb,tables_bpb,"
            "selected_fraction,excess_loss,excess_loss_last_quarter,"
            "selected_share_stdlib,selected_share_tables,selected_share_topics\n")
    for label, members in groups:
      for r in members:
        n = numbers[r["arm"]]
        f.write(f"\"{r['arm']}\",{label},{r.get('seed') or 0},{r['eval_bpb']:.5f},"
                f"{n['stdlib']:.5f},{n['tables']:.5f},{n['selected_fraction']:.4f},"
                f"{n['excess_loss']:.5f},{n['excess_loss_late']:.5f},"
                f"{n.get('share_stdlib', math.nan):.4f},{n.get('share_tables', math.nan):.4f},"
                f"{n.get('share_topics', math.nan):.4f}\n")

  colors = {"reference (clean only)": "black", "SLM 0.6, clean only": "tab:purple",
            "LM (every token)": "tab:blue"}
  extra = ["tab:red", "tab:orange", "tab:green", "tab:brown", "tab:pink", "tab:olive"]
  for label, _ in groups:
    if label not in colors:
      colors[label] = extra[len(colors) - 3]
  fig = Figure(figsize=(20, 8), layout="constrained")
  ax, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.1, 1.0]})
  markers = {0: "o", 1: "s"}
  for i, (label, members) in enumerate(groups):
    c = colors[label]
    vals = [r["eval_bpb"] for r in members]
    mean = sum(vals) / len(vals)
    ax.plot([i - 0.3, i + 0.3], [mean, mean], "-", color=c, linewidth=3)
    for r in members:
      s = r.get("seed") or 0
      ax.plot([i + (0.12 if s else -0.12)], [r["eval_bpb"]], markers[s], color=c,
              markersize=9, markeredgecolor="black")
    for r in members:
      _, evals, final = _train_rows(os.path.join(sweep_dir, r["arm"]))
      pts = [(e["tokens"], e["eval_bpb"]) for e in evals if "eval_bpb" in e]
      if final:
        pts.append((final["tokens"], final["eval_bpb"]))
      pts = sorted(dict(pts).items())
      s = r.get("seed") or 0
      ax2.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], marker=markers[s],
               color=c, linestyle="-" if s == 0 else "--", linewidth=1.5, markersize=5,
               label=f"{label}, seed {s}")
      n = numbers[r["arm"]]
      if math.isfinite(n["excess_loss"]):
        train, _, _ = _train_rows(os.path.join(sweep_dir, r["arm"]))
        xs = [t["tokens"] / 1000 for t in train if "excess_loss" in t]
        ys = runs.ema([t["excess_loss"] for t in train if "excess_loss" in t])
        ax3.plot(xs, ys, color=c, linestyle="-" if s == 0 else "--", linewidth=1.2,
                 label=f"{label}, seed {s} (codec tables held-out {n['tables']:.2f} bits/byte)")
  lo = min(r["eval_bpb"] for _, m in groups for r in m)
  hi = max(r["eval_bpb"] for _, m in groups for r in m)
  ax.set_ylim(lo - 0.15 * (hi - lo) - 0.02, hi + 0.2 * (hi - lo) + 0.02)
  ax.set_xticks(range(len(groups)), [
      g.replace(" (", "\n(").replace(", ", "\n")
      + f"\nmean {sum(r['eval_bpb'] for r in m) / len(m):.3f}" for g, m in groups])
  ax.set(ylabel="held-out stdlib bits per byte (lower is better)",
         title="final held-out bits/byte on clean stdlib\n(line: seed mean; circle: seed 0, "
               "square: seed 1)")
  ax.grid(alpha=0.3, axis="y")
  n_clean = sum(1 for g, _ in groups if g.endswith("clean only)") or g.endswith("clean only"))
  if 0 < n_clean < len(groups):
    ax.axvline(n_clean - 0.5, color="gray", linewidth=1, linestyle=":")
    ax.text(n_clean - 0.45, ax.get_ylim()[1], " noisy mix (40% noise) ->", va="top",
            fontsize="small", color="gray")
  ax2.set(xlabel="training tokens (thousands)", ylabel="held-out stdlib bits per byte",
          title=f"during training (the same {FINAL_EVAL_BATCHES} held-out stdlib batches)"
                "\n(solid: seed 0, dashed: seed 1)")
  ax2.grid(alpha=0.3)
  ax2.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
  ax3.axhline(0, color="black", linewidth=0.8)
  ax3.set(xlabel="training tokens (thousands)",
          ylabel="excess loss of the selected tokens (nats)",
          title="SLM arms: logged excess loss of the selected tokens\n"
                f"(model minus reference, mean; EMA {runs.SMOOTHING:g})")
  ax3.grid(alpha=0.3)
  ax3.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1)
  tokens = max(int(r.get("tokens") or 0) for _, m in groups for r in m)
  fig.suptitle(f"Rho-1 selective LM (SLM) vs plain LM on stdlib + {2 * NOISE_WEIGHT:.0%} "
               f"noise (codec tables, pydoc topics), {tokens:,} tokens per arm; "
               "reference: the same model on clean stdlib only")
  path = os.path.join(sweep_dir, "rho1.png")
  fig.savefig(path, dpi=100)
  return [csv_path, path]
