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
# # Designing a curriculum before training
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/phijax/phijax/blob/main/experiments/colab/curriculum.ipynb)
#
# A curriculum here is everything that changes over a run as a function of its
# position (steps and tokens): the training sequence length, the learning rate
# and the data mixture (`phijax.train.curriculum`). Because it is a pure function of
# the config, every plan can be drawn before a single step runs. This notebook
# compares sequence-length warmup pacings (DeepSpeed's linear, root and discrete)
# at an equal token budget, WSD against cosine and linear decay, and designs a
# MiniCPM-style run: WSD whose decay coincides with an anneal stage that shifts the
# mixture to a second source. Expected: warmup arms take more (shorter) steps for
# the same tokens; WSD holds the peak LR for most of the run; and a short run of
# the designed curriculum logs exactly the planned learning rate, length and
# mixture at every step (at the smoke size and on CPU it trains the 1M-parameter
# `tiny:runlocal` model; on a GPU or TPU the 2.9M `tiny`).

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
TRAIN_STEPS = 0  # the check run's steps; 0: picked below

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

SIZES = {  # config of the check run, its steps
    "smoke": ("tiny:runlocal", 16),
    "cpu": ("tiny:runlocal", 200),
    "gpu": ("tiny", 400),  # 400 of its 1,100 steps: the curriculum is the point
    "tpu": ("tiny", 400),
}
size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
CHECK_CONFIG, steps = SIZES[size]
TRAIN_STEPS = TRAIN_STEPS or steps
print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}; check run: "
      f"{CHECK_CONFIG}, {TRAIN_STEPS} steps")

# %% [markdown]
# ## Sequence-length warmup pacings
#
# `configs/tiny.py` at the small phi's rows (batch 16 x 256) on a budget of 1.64M
# tokens, 400 steps at full length. Warmup starts at 32 tokens a row and reaches 256
# after 30% of the tokens; lengths snap down to powers of two (one compiled step per
# length).
# With `truncate` a short row is cut, so a warmup run takes more steps.

# %%
from IPython.display import Markdown, display


def show_table(rows, columns):
  """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(format(r[k], f) for k, _, f in columns) + " |")
  display(Markdown("\n".join(lines)))


from phijax import config_files
from phijax.train.curriculum import Curriculum

TOKENS = 400 * 16 * 256
BASE = [f"--config.train.tokens={TOKENS}", "--config.curriculum.seq_warmup.start=32",
        "--config.data.seq_len=256", "--config.train.batch_size=16"]
PACINGS = {
    "no warmup": [],
    "linear": ["--config.curriculum.seq_warmup.enabled=true"],
    "root (degree 2)": ["--config.curriculum.seq_warmup.enabled=true",
                        "--config.curriculum.seq_warmup.kind=root"],
    "discrete 32/64/128/256": [
        "--config.curriculum.seq_warmup.enabled=true",
        "--config.curriculum.seq_warmup.kind=discrete",
        "--config.curriculum.seq_warmup.lengths=32,64,128,256",
        "--config.curriculum.seq_warmup.boundaries=100000,250000,490000",
        "--config.curriculum.seq_warmup.duration_unit=tokens"],
}
pacing_plans = {}
for label, flags in PACINGS.items():
  cur = Curriculum(config_files.load("tiny", BASE + flags))
  pacing_plans[label] = (cur, cur.plan())
show_table([{"pacing": k, "steps": c.total_steps, "tokens": c.total_tokens,
             "lengths": str(c.buckets())} for k, (c, _) in pacing_plans.items()],
           [("pacing", "pacing", "s"), ("steps", "steps", "d"),
            ("tokens", "tokens", ",d"), ("lengths", "lengths compiled", "s")])

# %% [markdown]
# ## Learning-rate schedules
#
# The same budget, peak 2e-2 and 40 warmup steps: cosine and linear decay to 10%,
# and WSD (warmup, stable, decay over the last 20%) with exponential or linear
# decay.

# %%
SCHEDULES = {
    "cosine": ["--config.curriculum.lr.schedule=cosine"],
    "linear": ["--config.curriculum.lr.schedule=linear"],
    "WSD, exp decay": ["--config.curriculum.lr.schedule=wsd",
                       "--config.curriculum.lr.decay_fraction=0.2"],
    "WSD, linear decay": ["--config.curriculum.lr.schedule=wsd",
                          "--config.curriculum.lr.decay_fraction=0.2",
                          "--config.curriculum.lr.wsd_decay=linear"],
}
lr_plans = {k: Curriculum(config_files.load("tiny", BASE + f)).plan()
            for k, f in SCHEDULES.items()}
for k, p in lr_plans.items():
  print(f"{k:18s} LR at 50% of the run {p['lr'][len(p['lr']) // 2]:.2e}, "
        f"at the end {p['lr'][-1]:.2e}")

# %% [markdown]
# ## A mixture anneal
#
# Two data sources: the standard library (`stdlib`) and, standing in for a small
# high-quality set, the standard library's `email` package as a text source. The
# designed run: linear sequence warmup, WSD, and the last 20% of the tokens an
# `anneal` stage at 70% `email` while WSD decays. `describe()` is what the
# training loop prints.

# %%
import sysconfig

from phijax.data import config as data_config
from phijax.train import curriculum


def designed(spec, overrides=()):
  """``spec`` with the two sources, the warmup, WSD and the anneal stage."""
  c = config_files.load(spec, list(overrides))
  with c.unlocked():
    c.data.sources.email = data_config.source(
        "text", os.path.join(sysconfig.get_paths()["stdlib"], "email"),
        glob="**/*.py", weight=0.0)
    c.curriculum.stages.pretrain = curriculum.stage(0.8, "fraction", "stdlib:0.9,email:0.1")
    c.curriculum.stages.anneal = curriculum.stage(0.2, "fraction", "stdlib:0.3,email:0.7")
    c.curriculum.stage_order = "pretrain,anneal"
    c.curriculum.seq_warmup.update(enabled=True, start=32)
    c.curriculum.lr.update(schedule="wsd", decay_fraction=0.2)
  return c


design = designed("tiny", BASE)
design_cur = Curriculum(design)
design_plan = design_cur.plan()
print(design_cur.describe())

# %% [markdown]
# ## Train it: the run follows the plan
#
# The same design on the check run's config, trained for a few steps;
# `metrics.jsonl` logs the learning rate, the row length and the mixture of every
# step (`log_every=1`), compared with the plan computed before training.

# %%
import numpy as np

from phijax.sweeps.runs import read_rows, split_rows
from phijax.train import loop

check = designed(CHECK_CONFIG, [f"--config.train.steps={TRAIN_STEPS}",
                                "--config.train.log_every=1", "--config.train.eval_every=0",
                                "--config.train.final_eval_batches=2",
                                "--config.train.samples=0", "--config.train.progress=false"])
run_dir = os.path.join(RUNS, "curriculum")
loop.train(check, run_dir)
logged, _, _ = split_rows(read_rows(run_dir))
check_plan = Curriculum(check).plan()
keys = [("lr", "lr"), ("seq_len", "seq_len"), ("stage", "stage")]
mismatches = sum(not np.isclose(r[k], check_plan[p][r["step"] - 1])
                 for r in logged for k, p in keys)
print(f"{len(logged)} logged steps; values that differ from the plan: {mismatches}")
assert mismatches == 0

# %% [markdown]
# ## Result
#
# The plans, drawn before training: training sequence length for each pacing,
# the learning-rate schedules, the designed run's mixture with its learning rate,
# and the check run's logged values on top of its plan.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter

fig, ((ax_len, ax_lr), (ax_mix, ax_check)) = plt.subplots(2, 2, figsize=(13, 8.5))
for label, (cur, p) in pacing_plans.items():
  ax_len.step(p["tokens"], p["seq_len"], where="post",
              label=f"{label}: {cur.total_steps} steps")
ax_len.set(xlabel="tokens", ylabel="training row length (tokens)",
           title="sequence-length warmup pacings, equal tokens")
ax_len.set_yscale("log", base=2)
ax_len.set_yticks([32, 64, 128, 256], ["32", "64", "128", "256"])
ax_len.minorticks_off()
for label, p in lr_plans.items():
  ax_lr.plot(p["tokens"], p["lr"], label=label)
ax_lr.set(xlabel="tokens", ylabel="learning rate", title="learning-rate schedules")
weights = np.array([[design_cur.stages[s].weights[n] for n in ("stdlib", "email")]
                    for s in design_plan["stage"]])
ax_mix.stackplot(design_plan["tokens"], weights.T, labels=["stdlib", "email"], alpha=0.6)
ax_mix.set(xlabel="tokens", ylabel="share of training tokens",
           title="designed run: mixture (stages pretrain, anneal) and LR")
ax_mix_lr = ax_mix.twinx()
ax_mix_lr.plot(design_plan["tokens"], design_plan["lr"], "k", label="learning rate (right)")
ax_mix_lr.set_ylabel("learning rate")
handles = ax_mix.get_legend_handles_labels()
lr_handles = ax_mix_lr.get_legend_handles_labels()
ax_mix.legend(handles[0] + lr_handles[0], handles[1] + lr_handles[1], loc="lower left")
steps = np.arange(1, len(check_plan["lr"]) + 1)
ax_check.plot(steps, check_plan["lr"], label="planned learning rate")
ax_check.plot([r["step"] for r in logged], [r["lr"] for r in logged], "o", markersize=3,
              label="logged learning rate")
ax_check.set(xlabel="step", ylabel="learning rate",
             title=f"check run ({CHECK_CONFIG}, {TRAIN_STEPS} steps): logged vs plan")
ax_check_len = ax_check.twinx()
ax_check_len.step(steps, check_plan["seq_len"], where="post", color="tab:purple",
                  label="planned row length (right)")
ax_check_len.plot([r["step"] for r in logged], [r["seq_len"] for r in logged], "x",
                  color="tab:purple", markersize=4, label="logged row length (right)")
ax_check_len.set_ylabel("row length (tokens)")
a, b = ax_check.get_legend_handles_labels(), ax_check_len.get_legend_handles_labels()
ax_check.legend(a[0] + b[0], a[1] + b[1], loc="center left", fontsize=8)
for ax in (ax_len, ax_lr, ax_mix, ax_check):
  ax.grid(alpha=0.3)
for ax in (ax_len, ax_lr, ax_mix):
  ax.xaxis.set_major_formatter(EngFormatter())
ax_len.legend()
ax_lr.legend()
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "curriculum.png"), dpi=110)
plt.show()
