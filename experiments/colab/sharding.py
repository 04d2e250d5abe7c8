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
# # Sharding: the (data, fsdp, tensor) mesh on 8 devices
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/phijax/phijax/blob/main/experiments/colab/sharding.ipynb)
#
# How does phijax lay a Phi model out over devices, what does that cost each
# device for the full phi-2, and does a sharded train step compute the same loss
# as one device? On a CPU the notebook simulates 8 devices
# (`--xla_force_host_platform_device_count=8`, set before JAX is imported), builds
# the `(data, fsdp, tensor)` mesh from `phijax.model.sharding`, lists every parameter of
# a `phi2:runlocal` model with its logical axes and its sharding, computes the
# per-device memory of the full 2.78B-parameter phi-2 (weights, gradients and
# Adam's two moments in float32) on a few 8-device meshes, and trains a few
# steps on 8 devices and on 1. Expected: data parallelism alone needs 44.5 GB
# per device, FSDP or tensor parallelism over 8 about 5.6 GB; the sharded losses
# equal the single-device ones to float32 rounding (a few 1e-6). On a GPU or TPU
# it uses the real devices instead.

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
STEPS = 0  # train steps compared; 0: picked below

# %% [markdown]
# ## Devices
#
# The simulated devices must be asked for before JAX starts, so this cell sets
# `XLA_FLAGS` only where no GPU or TPU is visible (the flag changes nothing but
# the CPU backend).

# %%
SMOKE = SMOKE or os.environ.get("PHIJAX_NOTEBOOK_SMOKE", "0") not in ("", "0")
OUT = OUT or os.environ.get("PHIJAX_NOTEBOOK_OUT", "")
if SMOKE and not OUT:  # a smoke run never writes over the committed figure
  OUT = os.path.join(ROOT, "runs", "colab", "smoke")
RUNS = os.path.join(OUT, "runs") if OUT else os.path.join(ROOT, "runs", "colab")
FIGURES = os.path.join(OUT, "figures") if OUT else "figures"
os.makedirs(FIGURES, exist_ok=True)

import re, shutil

# XLA's C++ warnings would flood the cell output (the embedding lookup on a
# table sharded over vocab and embed makes the partitioner replicate it once).
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
accelerator = (shutil.which("nvidia-smi") or os.path.exists("/dev/accel0")
               or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"))
if not accelerator:
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                 os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import jax

PLATFORM = jax.default_backend()  # "cpu", "gpu" or "tpu"

SIZES = {"smoke": 2, "cpu": 5, "gpu": 5, "tpu": 5}  # train steps compared
size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
STEPS = STEPS or SIZES[size]
print(f"{jax.device_count()} {PLATFORM} device(s) ({jax.devices()[0].device_kind}): "
      f"size {size!r}, {STEPS} train steps compared")

# %% [markdown]
# ## The mesh
#
# Devices in a `(data, fsdp, tensor)` grid: the batch is split over `data` and
# `fsdp`, parameters over `fsdp` (their `embed` axis) and `tensor` (heads, MLP,
# vocabulary). The table shows which device sits where.

# %%
from IPython.display import Markdown, display


def show_table(rows, columns):
  """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
  lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(format(r[k], f) for k, _, f in columns) + " |")
  display(Markdown("\n".join(lines)))


import math

from ml_collections import ConfigDict

from phijax.model import sharding


def mesh_sizes(n):
  """(data, fsdp, tensor) for n devices: 2 x 2 x 2 for 8, the rest on data."""
  tensor = 2 if n % 2 == 0 else 1
  fsdp = 2 if n % (2 * tensor) == 0 else 1
  return dict(data=n // (fsdp * tensor), fsdp=fsdp, tensor=tensor)


mesh = sharding.make_mesh(ConfigDict(mesh_sizes(jax.device_count())))
print(dict(mesh.shape))
grid = mesh.devices.reshape(-1, mesh.shape["tensor"])
show_table([{"row": f"data {i // mesh.shape['fsdp']}, fsdp {i % mesh.shape['fsdp']}",
             **{f"t{j}": str(d.id) for j, d in enumerate(row)}}
            for i, row in enumerate(grid)],
           [("row", "", "s")] + [(f"t{j}", f"tensor {j}", "s")
                                 for j in range(mesh.shape["tensor"])])

# %% [markdown]
# ## Every parameter's sharding (`phi2:runlocal`)
#
# `configs/phi2.py:runlocal` is phi-2's architecture (partial rotary 0.4, dense
# attention, biases) shrunk to hidden 64 and 2 layers. Each parameter names its
# logical axes (`model.param_axes`); the default rules turn them into a
# `PartitionSpec` over the mesh; the last column is one device's shard.

# %%
from flax import linen as nn

from phijax import config_files, model as model_lib
from phijax.model.config import ModelConfig

config = config_files.load("phi2:runlocal", ["--config.model.dtype=float32"])
cfg = ModelConfig.from_dict(config.model)
rules = sharding.parse_rules(config.mesh.rules)
axes = model_lib.param_axes(cfg)
shapes = nn.unbox(model_lib.abstract_params(cfg))
shardings = sharding.logical_sharding(mesh, rules, axes, shapes)
is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
flat_axes = jax.tree_util.tree_flatten_with_path(axes, is_leaf=is_spec)[0]
param_rows = [{"name": "/".join(sharding.path_names(path)), "shape": str(shape.shape),
               "axes": str(tuple(spec)), "spec": str(tuple(sh.spec)),
               "shard": str(sh.shard_shape(shape.shape))}
              for (path, spec), shape, sh in zip(
                  flat_axes, jax.tree_util.tree_leaves(shapes),
                  jax.tree_util.tree_leaves(shardings))]
show_table(param_rows, [("name", "parameter", "s"), ("shape", "shape", "s"),
                        ("axes", "logical axes", "s"), ("spec", "mesh axes", "s"),
                        ("shard", "per-device shard", "s")])

# %% [markdown]
# ## A sharded train step equals one device
#
# The same `phi2:runlocal` model (float32 compute, the config's residual
# dropout on), the same initial parameters and the same batches of the stdlib
# corpus, through `step.build` (`phijax.train.step`) on the whole mesh and on a
# one-device mesh.

# %%
import jax.numpy as jnp

from phijax import data
from phijax.train import enable_compilation_cache, optim, step

enable_compilation_cache(config.train.compile_cache_dir)
tok = data.load_tokenizer(config.data)
batches = data.make_train_iterator(config.data, tok, batch_size=config.train.batch_size,
                                   seed=0)
batches = [next(batches) for _ in range(STEPS)]
tx = optim.make_direction(config.optim)
one = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
losses = {}
for label, m in (("sharded", mesh), ("one device", one)):
  fns = step.build(cfg, tx, m, rules)
  state = fns.init(jax.random.key(0))
  losses[label] = []
  for b in batches:
    state, metrics = fns.train_step(
        state, step.device_batch(b, fns.batch_sharding), jnp.float32(1e-3))
    losses[label].append(float(metrics["loss"]))
show_table([{"step": i + 1, "sharded": a, "one": b, "diff": abs(a - b)}
            for i, (a, b) in enumerate(zip(losses["sharded"], losses["one device"]))],
           [("step", "step", "d"), ("sharded", f"loss, {dict(mesh.shape)}", ".6f"),
            ("one", "loss, 1 device", ".6f"), ("diff", "difference", ".1e")])

# %% [markdown]
# ## Per-device memory of the full phi-2
#
# From shapes only (`jax.eval_shape`: nothing is allocated): for each mesh, every
# parameter's shard under the same rules (a dimension the mesh does not divide
# stays whole), times 4 bytes, for the weights, the gradients and each of Adam's
# two moments. Activations come on top and depend on batch, length and
# rematerialization.

# %%
full = ModelConfig.from_dict(config_files.load("phi2").model)
full_shapes = jax.tree_util.tree_leaves(nn.unbox(model_lib.abstract_params(full)))
full_axes = jax.tree_util.tree_leaves(model_lib.param_axes(full), is_leaf=is_spec)


def shard_elements(shape, names, sizes):
  """Elements of one device's shard of a parameter on a mesh of ``sizes``."""
  spec = nn.logical_to_mesh_axes(names, list(rules))
  n = 1
  for dim, entry in zip(shape, tuple(spec) + (None,) * len(shape)):
    mesh_axes = (entry,) if isinstance(entry, str) else (entry or ())
    ways = math.prod(sizes[a] for a in mesh_axes)
    n *= dim // ways if dim % ways == 0 else dim
  return n


MESHES = [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2), (1, 4, 2), (4, 2, 1)]
memory = []
for d, f, t in MESHES:
  sizes = dict(data=d, fsdp=f, tensor=t)
  elements = sum(shard_elements(s.shape, a, sizes) for s, a in zip(full_shapes, full_axes))
  gb = 4 * elements / 1e9
  memory.append({"mesh": f"data {d}, fsdp {f}, tensor {t}", "weights": gb,
                 "grads": gb, "adam": 2 * gb, "total": 4 * gb})
total_params = sum(math.prod(s.shape) for s in full_shapes)
print(f"phi-2: {total_params:,} parameters")
show_table(memory, [("mesh", "mesh (8 devices)", "s"), ("weights", "weights GB", ".2f"),
                    ("grads", "gradients GB", ".2f"), ("adam", "Adam m + v GB", ".2f"),
                    ("total", "total GB per device", ".2f")])

# %% [markdown]
# ## Result
#
# The per-device memory of training the full phi-2 with AdamW in float32 on each
# 8-device mesh, by part.

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(10, 4.8))
labels = [m["mesh"].replace(", ", "\n") for m in memory]
bottom = np.zeros(len(memory))
for key, label in (("weights", "weights"), ("grads", "gradients"),
                   ("adam", "Adam moments (m, v)")):
  values = np.array([m[key] for m in memory])
  ax.bar(labels, values, bottom=bottom, label=label)
  bottom += values
for x, total in enumerate(bottom):
  ax.annotate(f"{total:.1f} GB", (x, total), ha="center", va="bottom")
ax.axhline(80, color="tab:red", linestyle="--", linewidth=0.8, label="80 GB (one H100)")
ax.set(xlabel="mesh", ylabel="GB per device (float32)",
       title=f"phi-2 ({total_params / 1e9:.2f}B parameters) training state per device, "
             "8 devices; activations not included")
ax.legend()
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(FIGURES, "sharding.png"), dpi=110)
plt.show()
