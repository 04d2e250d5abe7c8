"""Per-device memory of a config's training on a mesh, without the devices.

    python -m phijax.plan --config=configs/phi2.py --mesh=data=1,fsdp=8,tensor=1
    python -m phijax.plan --config=phi4 --mesh=fsdp=64 --no-activations   # bytes only
    python -m phijax.plan --config=phi3_mini --mesh=fsdp=8 --config.train.batch_size=64

Prints, per device: parameters, optimizer state and gradients (exact: the byte size
of each leaf's shard under the config's sharding rules, from the abstract parameter
and optimizer trees), and the train step's temporaries (activations kept for the
backward pass, gradients in flight, workspace) from XLA's memory analysis of the
step compiled for the config's batch and length on simulated CPU devices. Then it
says which accelerators (``DEVICES``) the sum fits.

The temporaries are an estimate: they come from XLA's CPU compiler, whose fusion and
scheduling differ from the GPU and TPU compilers'. Attention is compiled as phijax's
flash kernel (``pallas_tpu`` in interpret mode: it keeps what the real kernels keep
for the backward pass, q/k/v, the output and the log-sum-exp, not the scores), or as
the ``xla`` impl where the kernel cannot take the shapes, which the report then says.
Micro-batches count. Calibration: for phi-1.5 at batch
8 x 2048 on one device (AdamW, no remat) this says 108 GB in all (91 GB of
temporaries); the same step measured 55.7 GB peak on an H200 (benchmarks/RESULTS.md).
Read the temporaries as an upper bound, about twice what a GPU compiler needs. The
CPU estimate also does not see ``model.remat``: it gave the same temporaries with
``none`` and ``full`` for the tiny model, phi-2 and phi-4 (a GPU compiler's would drop).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

from phijax import cli

# Memory per accelerator (bytes, as the vendors state it).
DEVICES = {"TPU v5e (16 GB)": 16e9, "A100 40GB": 40e9, "A100 80GB": 80e9,
           "H100 80GB": 80e9, "H200 141GB": 141e9}
GB = 1e9

parser = cli.ArgumentParser(prog="python -m phijax.plan", description=__doc__)
cli.add_config(parser)
parser.add_argument("--mesh", default="",
                    help="data=N,fsdp=N,tensor=N (sizes left out are 1; default: the "
                         "config's mesh, where -1 means one device)")
parser.add_argument("--no-activations", action="store_true",
                    help="skip compiling the step: parameters, optimizer and gradients only")


def parse_mesh(text: str, cfg_mesh) -> dict:
  """``"data=1,fsdp=8"`` -> ``{"data": 1, "fsdp": 8, "tensor": 1}``."""
  if not text:
    sizes = {a: int(cfg_mesh[a]) for a in ("data", "fsdp", "tensor")}
    return {a: (1 if s == -1 else s) for a, s in sizes.items()}
  sizes = {"data": 1, "fsdp": 1, "tensor": 1}
  for item in filter(None, (s.strip() for s in text.split(","))):
    name, _, value = item.partition("=")
    if name not in sizes or not value.isdigit() or int(value) < 1:
      raise cli.UsageError(f"--mesh: cannot read {item!r}; write data=N,fsdp=N,tensor=N "
                           "with positive sizes")
    sizes[name] = int(value)
  return sizes


def _ensure_cpu_devices(n: int) -> None:
  """Simulated CPU devices for the mesh: set before JAX starts, else checked."""
  if "jax" not in sys.modules:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  have = len(jax.devices("cpu"))
  if have < n:
    raise cli.UsageError(f"--mesh needs {n} devices but JAX started with {have} CPU "
                         "devices; run phijax.plan in its own process")


def shard_bytes(shapes, shardings) -> int:
  """Bytes one device holds of a tree of arrays (the largest shard of each leaf)."""
  import jax
  total = 0
  for x, sh in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(shardings)):
    total += math.prod(sh.shard_shape(x.shape)) * x.dtype.itemsize
  return total


def plan(config, mesh_sizes: dict, activations: bool = True) -> dict:
  """Per-device bytes of training ``config`` on a mesh of ``mesh_sizes``."""
  n = math.prod(mesh_sizes.values())
  _ensure_cpu_devices(n)
  import jax
  import ml_collections

  from phijax.model import attention
  from phijax.train import optim
  from phijax.model import quant, sharding
  from phijax.kernels.flash import UnsupportedAttention
  from phijax.model.config import ModelConfig
  from phijax.train.step import build

  mesh = sharding.make_mesh(ml_collections.ConfigDict(mesh_sizes), jax.devices("cpu")[:n])
  rules = sharding.parse_rules(config.mesh.rules)

  def step_fns(impl):
    model_cfg = dataclasses.replace(ModelConfig.from_dict(config.model), attention_impl=impl)
    lora = model_cfg.lora.rank > 0  # only the adapters train
    tx = optim.make_direction(config.optim, width_mult=model_cfg.width_mult,
                              adapters_only=lora)
    t = config.train
    return build(model_cfg, tx, mesh, rules, microbatches=t.microbatches,
                 objective=t.objective, dpo_beta=t.dpo_beta,
                 token_selection=t.token_selection,
                 token_selection_by=t.token_selection_by,
                 trainable=optim.trainable(config.optim, adapters_only=lora))

  fns = step_fns("xla")
  model_cfg = fns.model.cfg
  state = jax.eval_shape(fns.init.jitted, jax.random.key(0))
  shardings = fns.state_shardings
  # What trains: everything, or what optim.freeze and LoRA (the adapters) leave.
  trainable = optim.trainable(config.optim, adapters_only=model_cfg.lora.rank > 0)
  mask = jax.tree_util.tree_leaves(
      trainable(state.params) if trainable else jax.tree_util.tree_map(
          lambda _: True, state.params))
  trained = [(x, sh) for x, sh, t in zip(jax.tree_util.tree_leaves(state.params),
                                         jax.tree_util.tree_leaves(shardings.params), mask)
             if t]
  out = {"mesh": mesh_sizes, "devices": n,
         "model": f"{model_cfg.arch}, {model_cfg.num_layers} layers, hidden "
                  f"{model_cfg.hidden_size}, {config.optim.name}"
                  + (f", LoRA rank {model_cfg.lora.rank}" if model_cfg.lora.rank else ""),
         "parameters": quant.parameter_count(state.params),
         "trainable": sum(x.size for x, _ in trained),
         "params_bytes": shard_bytes(state.params, shardings.params),
         "opt_bytes": shard_bytes(state.opt_state, shardings.opt_state)}
  # QLoRA: the quantized block matrices' bytes (per device) and the values they hold.
  nodes = [(x, sh) for (p, x), sh in zip(jax.tree_util.tree_flatten_with_path(state.params)[0],
                                         jax.tree_util.tree_leaves(shardings.params))
           if len(p) > 1 and quant.kind_of(sharding.path_names(p)[-2])]
  if nodes:
    out["quantized"] = {
        "kind": model_cfg.lora.quantize,
        "parameters": sum(math.prod(n["codes"].shape) * (2 if k == "nf4" else 1)
                          for _, k, n in quant.quantized_nodes(state.params)),
        "bytes": shard_bytes([x for x, _ in nodes], [sh for _, sh in nodes]),
        "global_bytes": sum(math.prod(x.shape) * x.dtype.itemsize for x, _ in nodes)}
  # Gradients: the trained parameters' dtype and sharding (frozen ones get none).
  out["grad_bytes"] = shard_bytes([x for x, _ in trained], [sh for _, sh in trained])
  # DPO and Rho-1 hold a frozen reference model beside the trained one, placed as the
  # parameters are.
  out["ref_bytes"] = out["params_bytes"] if fns.takes_reference else 0
  B, L = config.train.batch_size, config.data.seq_len
  out.update(batch=B, seq_len=L, microbatches=config.train.microbatches)
  if B % sharding.batch_divisor(mesh, rules):
    raise cli.UsageError(f"train.batch_size={B} does not split over the mesh's batch axes "
                         f"({sharding.batch_divisor(mesh, rules)} ways)")
  if activations:
    t = time.perf_counter()
    try:  # the flash kernel's memory: CPU interpret mode lowers it like any jnp code
      with attention.interpret_mode():
        compiled = step_fns("pallas_tpu").compile_train_step(B, L)
      out["attention"] = "flash kernel (pallas_tpu, interpret mode)"
    except UnsupportedAttention as e:
      compiled = fns.compile_train_step(B, L)
      out["attention"] = f"xla, which keeps score blocks (the kernel cannot: {e})"
    out["compile_s"] = time.perf_counter() - t
    mem = compiled.memory_analysis()
    out["temp_bytes"] = int(mem.temp_size_in_bytes)
    out["batch_bytes"] = int(mem.argument_size_in_bytes) - (
        out["params_bytes"] + out["ref_bytes"] + out["opt_bytes"] + shard_bytes(
            (state.step, state.rng, state.nonfinite_streak, state.skipped),
            (shardings.step, shardings.rng, shardings.nonfinite_streak, shardings.skipped)))
  # The state is donated, so the step's outputs reuse its buffers; gradients live
  # inside the temporaries when compiled, and separately when estimated without.
  out["total_bytes"] = out["params_bytes"] + out["ref_bytes"] + out["opt_bytes"] + (
      out["temp_bytes"] + out["batch_bytes"] if activations else out["grad_bytes"])
  out["fits"] = {name: out["total_bytes"] <= cap for name, cap in DEVICES.items()}
  return out


def _size(n: float) -> str:
  return f"{n / GB:9.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:9.2f} MB"


def _quantized_line(q: dict) -> str:
  return (f"    of which base   {_size(q['bytes'])}  ({q['parameters']:,} block-matrix "
          f"values in {q['kind']}: {q['global_bytes'] / q['parameters']:.3f} bytes each, "
          "float32's 4)")


def report(p: dict) -> str:
  mesh = ",".join(f"{a}={s}" for a, s in p["mesh"].items())
  lines = [f"{p['model']}: {p['parameters']:,} parameters on mesh {mesh} "
           f"({p['devices']} devices), batch {p['batch']} x {p['seq_len']}"
           + (f" in {p['microbatches']} micro-batches" if p["microbatches"] > 1 else ""),
           *([f"trainable: {p['trainable']:,} of {p['parameters']:,} parameters "
              f"({100 * p['trainable'] / p['parameters']:.2f}%; the rest frozen)"]
             if p.get("trainable", p["parameters"]) < p["parameters"] else []),
           "per device:",
           f"  parameters        {_size(p['params_bytes'])}",
           *([_quantized_line(p["quantized"])] if p.get("quantized") else []),
           f"  optimizer state   {_size(p['opt_bytes'])}"]
  if p["ref_bytes"]:
    lines.append(f"  reference model   {_size(p['ref_bytes'])}  (frozen: DPO / Rho-1 token "
                 "selection)")
  if "temp_bytes" in p:
    lines += [f"  step temporaries  {_size(p['temp_bytes'])}  (activations, gradients, "
              "workspace: XLA's CPU estimate, an upper bound)",
              f"  batch             {_size(p['batch_bytes'])}"]
  else:
    lines += [f"  gradients         {_size(p['grad_bytes'])}  (activations not counted: "
              "--no-activations)"]
  lines.append(f"  total             {_size(p['total_bytes'])}")
  if "attention" in p:
    lines.append(f"attention compiled as: {p['attention']}")
  fits = [n for n, ok in p["fits"].items() if ok]
  lines.append("fits: " + (", ".join(fits) if fits else "none of " + ", ".join(DEVICES)))
  return "\n".join(lines)


def main(args):
  sizes = parse_mesh(args.mesh, args.config.mesh)
  p = plan(args.config, sizes, activations=not args.no_activations)
  print(report(p))


def run(argv=None):
  cli.main(parser, main, argv)


if __name__ == "__main__":
  run()
