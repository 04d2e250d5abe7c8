# ---
# jupyter:
#   colab:
#     provenance: []
#   jupytext:
#     notebook_metadata_filter: colab,kernelspec,language_info,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # Sequence-length warmup where the baseline is unstable
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/phijax/phijax/blob/main/experiments/colab/seq_warmup.ipynb)
#
# Li, Zhang & He (arXiv 2108.06084) report that warming up the sequence length
# (short rows first) keeps GPT-style pre-training stable at learning rates where it
# otherwise spikes. `experiments/seq_warmup_stability.py` tests that on a
# 0.9M-parameter phi model at a harsh setting (AdamW, no gradient clipping, no LR
# warmup, peak LR 0.3): no sequence warmup, warmup that keeps the tokens per step
# (`reshape`) and warmup that drops row tails (`truncate`, more steps). This
# notebook runs its arms through the sweep API (`phijax.sweeps.runner`,
# `phijax.sweeps.results`) and ends with the table and the loss curves. Expected
# (the committed results, seed 0): every arm spikes (max loss ratio 2.1 to 2.9,
# about 50 spike steps of 80); `reshape` is no more stable than no warmup and its
# held-out loss is within 0.05 nats of it; `truncate` ends lower (6.26 against 6.56)
# but takes 139 steps to the others' 80. So the stability claim does not reproduce
# at this scale. The exact losses move by up to 0.1 nats from one machine or code
# version to another: 80 unclipped steps at LR 0.3 amplify float rounding. On CPU
# the notebook runs those 3 arms (33-53 s each on idle cores, 2 at a time); on a GPU
# or TPU all 36 arms of the experiment. The smoke size runs 2 arms for 4 steps.

# %%
# Install: in Colab (or anywhere without phijax) clone the repository and install
# it; inside a phijax checkout nothing is installed.
REPO_URL = "https://github.com/phijax/phijax"
import importlib, importlib.util, os, site, subprocess, sys


def find_checkout(*starts):
  """The phijax checkout at or above one of ``starts``, else None."""
  for path in map(os.path.abspath, starts):
    while not (os.path.isfile(os.path.join(path, "setup.py"))
               and os.path.isdir(os.path.join(path, "phijax", "evals"))):
      if os.path.dirname(path) == path:
        break
      path = os.path.dirname(path)
    else:
      return path
  return None


installed = importlib.util.find_spec("phijax")
ROOT = find_checkout(".", *(installed.submodule_search_locations if installed else []))
if ROOT is None:  # not "phijax": a folder of that name here would shadow the package
  ROOT = os.path.abspath("phijax-repo")
  if not os.path.isdir(ROOT):
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, ROOT], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ROOT],
                 check=True)
  for d in site.getsitepackages():  # the running kernel sees the new install
    site.addsitedir(d)
  importlib.invalidate_caches()
  print("cloned and installed phijax")
else:
  print("phijax checkout found: nothing to install")

# %% [markdown]
# ## Parameters
#
# What a run may change, in one cell: `SMOKE = True` (what CI runs) picks the
# seconds-long size; `OUT` moves the runs and the figure.

# %% tags=["parameters"]
# Parameters (papermill tag "parameters"). CI sets SMOKE = True, or the environment
# variable PHIJAX_NOTEBOOK_SMOKE=1: the size that runs in seconds.
SMOKE = False
OUT = ""  # "": runs/colab/, figures beside this notebook (smoke: runs/colab/smoke/)
ARMS = ""  # a regular expression over arm names; "": picked below

# %% [markdown]
# ## Accelerator and sizes
#
# The backend JAX finds (CPU, GPU or TPU) picks the sizes; the printed line says
# which.

# %%
SMOKE = SMOKE or os.environ.get("PHIJAX_NOTEBOOK_SMOKE", "0") not in ("", "0")
OUT = OUT or os.environ.get("PHIJAX_NOTEBOOK_OUT", "")
if SMOKE and not OUT:  # a smoke run never writes over the committed figure
  OUT = os.path.join(ROOT, "runs", "colab", "smoke")
RUNS = os.path.join(OUT, "runs") if OUT else os.path.join(ROOT, "runs", "colab")
FIGURES = os.path.join(OUT, "figures") if OUT else "figures"
os.makedirs(FIGURES, exist_ok=True)

import jax

PLATFORM = jax.default_backend()  # "cpu", "gpu" or "tpu"

# Smoke: warmup from 128, so two length buckets (128, 256) to compile, not four.
SMOKE_OVERRIDES = ["--config.train.tokens=8192", "--config.train.eval_every=0",
                   "--config.train.final_eval_batches=2",
                   "--config.curriculum.seq_warmup.start=128"]
SIZES = {  # which arms, settings for every arm
    "smoke": (r"^lr_warmup=0,lr=0.3,seq_warmup=(off|on,mode=reshape),seed=0$",
              SMOKE_OVERRIDES),
    "cpu": (r"^lr_warmup=0,lr=0.3,.*seed=0$", []),  # 3 arms, 80-139 steps each
    "gpu": (r".", []),  # all 36 arms
    "tpu": (r".", []),
}
size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
arms_regex, COMMON = SIZES[size]
ARMS = ARMS or arms_regex
print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}, arms matching "
      f"{ARMS!r} {' '.join(COMMON)}")

# %% [markdown]
# ## The arms
#
# The experiment file's `get_sweep` lists 36 arms; each becomes an ordinary run
# directory named by its overrides. `sweep.json` records them for the results.

# %%
import re

from phijax.sweeps import arms as sweep_arms, results, runner, tables

spec = os.path.join(ROOT, "experiments", "seq_warmup_stability.py")
module = sweep_arms.load_experiment(spec)
sweep_dir = os.path.join(RUNS, "seq_warmup")
all_arms = sweep_arms.make_arms(spec, module, sweep_dir, COMMON)
arms = [a for a in all_arms if re.search(ARMS, a.name)]
names = sweep_arms.aliases([k for a in all_arms for k in a.overrides], module.ALIASES)
sweep_arms.write_sweep_file(sweep_dir, spec, all_arms, COMMON, names)
print(f"{len(arms)} of {len(all_arms)} arms:", *[a.name for a in arms], sep="\n  ")

# %% [markdown]
# ## Run them
#
# Each arm is a `python -m phijax.train` process (the command is at the top of
# its `log.txt`), as many at once as there are CPU cores (one at a time on an
# accelerator). Rerunning skips finished arms and resumes interrupted ones.

# %%
import warnings

# The runner starts each arm with fork + exec; nothing runs between the two
# in the child, so JAX's threads in this kernel are no risk.
warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
parallel = min(runner.default_parallel(), len(arms))
states = runner.run_arms(spec, arms, parallel)
assert all(s == "done" for s in states.values()), states
paths = results.write_results(sweep_dir)  # results.md / .csv, curves.png, final.png

# %% [markdown]
# ## Table
#
# Final held-out loss over the same held-out rows in every arm (compare arms on
# this: training loss during warmup is measured on shorter rows), the max loss
# ratio (smoothed training loss over its running minimum; 1 = it never rose),
# spike steps (ratio above 1.05) and optimizer steps; beside the held-out loss
# the committed result of the same arm (not at the smoke size, whose arms are
# shorter).

# %%
from IPython.display import Markdown, display


def show_table(rows, columns):
  """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(format(r[k], f) for k, _, f in columns) + " |")
  display(Markdown("\n".join(lines)))


import csv

table, _ = tables.collect(sweep_dir)
committed_csv = os.path.join(ROOT, "experiments", "results", "seq_warmup_stability",
                             "results.csv")
committed = {r["arm"]: float(r["eval_loss"]) for r in csv.DictReader(open(committed_csv))}
rows = [dict(r, warmup=r.get("mode") or "none", committed=committed.get(r["arm"], float("nan")))
        for r in table.rows if r["arm"] in {a.name for a in arms}]
show_table(rows, [("lr_warmup", "LR-warmup steps", "d"), ("lr", "peak LR", "g"),
                  ("warmup", "sequence warmup", "s"), ("seed", "seed", "d"),
                  ("eval_loss", "held-out loss", ".4f")]
                 + ([] if COMMON else [("committed", "committed result", ".4f")])
                 + [("max_loss_ratio", "max loss ratio", ".3f"),
                    ("spikes", "spike steps", "d"), ("steps", "steps", "d"),
                    ("max_grad_norm", "max grad norm", ".1f")])

# %% [markdown]
# ## Result
#
# Training loss (smoothed, log scale) and training sequence length against
# tokens for each arm, and the final held-out loss per arm.

# %%
import matplotlib.pyplot as plt
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter, ScalarFormatter

from phijax.sweeps.runs import ema, read_rows, split_rows

varied = [f for f in ("lr", "lr_warmup", "seed") if len({r[f] for r in rows}) > 1]
shared = [f for f in ("lr", "lr_warmup", "seed") if f not in varied]

fig, (ax_loss, ax_len, ax_final) = plt.subplots(
    1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [2, 1.4, 1]})
for r in rows:
  train_rows, _, _ = split_rows(read_rows(os.path.join(sweep_dir, r["arm"])))
  tokens = [t["tokens"] for t in train_rows]
  label = ", ".join([f"{r['warmup']}"] + [f"{f} {r[f]:g}" for f in varied])
  line, = ax_loss.plot(tokens, ema([t["loss"] for t in train_rows]), label=label)
  ax_len.step(tokens, [t["seq_len"] for t in train_rows], where="pre",
              color=line.get_color(), label=label)
  bar = ax_final.bar(label.replace(", ", "\n"), r["eval_loss"], color=line.get_color())
  ax_final.bar_label(bar, fmt="%.3f")
ax_loss.set(xlabel="tokens", ylabel="training loss, EMA 0.1 (nats / token)",
            yscale="log", title="training loss, sequence warmup: none / reshape / truncate")
ax_loss.yaxis.set_major_locator(LogLocator(subs=(1, 1.5, 2, 3, 5, 7)))
ax_loss.yaxis.set_major_formatter(ScalarFormatter())
ax_loss.yaxis.set_minor_formatter(NullFormatter())
ax_len.set(xlabel="tokens", ylabel="tokens per row", title="training sequence length")
ax_len.set_yscale("log", base=2)
ax_len.set_yticks([32, 64, 128, 256], ["32", "64", "128", "256"])
ax_len.minorticks_off()
ax_final.set(ylabel="final held-out loss (nats / token)", title="held-out loss")
ax_final.tick_params(axis="x", labelsize=7)
for ax in (ax_loss, ax_len):
  ax.grid(alpha=0.3)
  ax.xaxis.set_major_formatter(EngFormatter())
fig.suptitle(", ".join(f"{f} {rows[0][f]:g}" for f in shared) + " in every arm shown")
ax_loss.legend(fontsize=8)
ax_len.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "seq_warmup.png"), dpi=110)
plt.show()
