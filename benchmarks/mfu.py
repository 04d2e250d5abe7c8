"""Model FLOPs utilisation of a config's full train step on the local accelerators.

    python benchmarks/mfu.py                                  # configs/phi1_5.py, 8 x 2048
    python benchmarks/mfu.py --config=configs/phi2.py --batch=4 --impls=cudnn,pallas_gpu
    python benchmarks/mfu.py --remat=none,dots --json=mfu.json
    python benchmarks/mfu.py --smoke                          # CPU: tiny shapes, interpret mode

Trains the config's model (its dtype, its optimizer, its mesh over every local device)
on random tokens and prints, per attention implementation and remat policy: step
time, tokens/s, MFU against the devices' bf16 data-sheet peak (phijax.train.metrics's FLOP
counting: 6N plus causal attention), compile time and peak device memory. Each case
runs in its own process, so one case's peak memory or out-of-memory error does not
touch the next; a failing case prints its error and the table goes on. Not a test:
on a machine without an accelerator it says so and exits 0 (``--smoke`` runs the
code path on CPU instead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _progress(msg, start):
  # stderr, so a case that times out still says how far it got (run_case reads it)
  print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)


def one_case(args) -> dict:
  """Build, compile and time one (impl, remat) case in this process."""
  start = time.perf_counter()
  import jax
  import jax.numpy as jnp

  from phijax import config_files
  from phijax.train import metrics, optim
  from phijax.model import sharding
  from phijax.model.config import ModelConfig
  from phijax.train.step import build, device_batch, random_batch

  impl, remat = args.one.split(",")
  config = config_files.load(args.config)
  config.model.attention_impl = impl
  config.model.remat = remat
  if args.dtype:
    config.model.dtype = args.dtype
  model_cfg = ModelConfig.from_dict(config.model)
  B, L = args.batch, args.seq or config.data.seq_len
  mesh = sharding.make_mesh(config.mesh)
  fns = build(model_cfg, optim.make_direction(config.optim, width_mult=model_cfg.width_mult),
              mesh, sharding.DEFAULT_RULES)
  row = dict(impl=impl, remat=remat, batch=B, seq=L, devices=len(jax.devices()),
             device=jax.devices()[0].device_kind, optimizer=config.optim.name,
             dtype=model_cfg.dtype)
  t = time.perf_counter()
  step = fns.compile_train_step(B, L)
  row["compile_s"] = time.perf_counter() - t
  _progress(f"compiled the train step in {row['compile_s']:.1f} s", start)
  mem = step.memory_analysis()
  if mem is not None:
    row["compiled_temp_gb"] = getattr(mem, "temp_size_in_bytes", 0) / 1e9
  state = fns.init(jax.random.key(0))
  batch = device_batch(random_batch(B, L, model_cfg.vocab_size), fns.batch_sharding)
  lr = jnp.float32(1e-5)
  jax.block_until_ready((state, batch))
  _progress("initialised the state and the batch", start)
  for _ in range(args.warmup):
    state, m = step(state, batch, lr)
  jax.block_until_ready((state, m))
  _progress(f"{args.warmup} warm-up steps done", start)
  times = []
  for _ in range(args.steps):  # one step at a time: the median is robust to a hiccup
    t = time.perf_counter()
    state, m = step(state, batch, lr)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  peak, peak_src = metrics.device_peak_flops()
  fpt = metrics.flops_per_token(model_cfg, L)
  row.update(total_s=time.perf_counter() - start, step_ms=step_s * 1e3, tokens_per_s=B * L / step_s,
             loss=float(m["loss"]) if "loss" in m else None,
             model_tflops_per_s=B * L * fpt / step_s / 1e12, peak_source=peak_src,
             mfu=(B * L * fpt / step_s / peak) if peak else None,
             params=int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))))
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    row["peak_gb"] = stats["peak_bytes_in_use"] / 1e9
  return row


def run_case(argv_common, impl, remat, env, timeout) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv_common, f"--one={impl},{remat}"]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    done = [ln for ln in err.splitlines() if ln.startswith("[")]
    return dict(impl=impl, remat=remat, error=f"timed out after {timeout} s" + (
        f"; last: {done[-1]}" if done else "; before the compile finished"))
  for line in reversed(p.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
  msg = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln),
             tail[-1] if tail else f"exit {p.returncode}")
  return dict(impl=impl, remat=remat, error=msg.strip()[:200])


def fmt(row) -> str:
  if "error" in row:
    return f"| {row['impl']:<10} | {row['remat']:<5} | error: {row['error']} |"
  mfu = "-" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
  peak = f"{row['peak_gb']:.1f}" if "peak_gb" in row else "-"
  return (f"| {row['impl']:<10} | {row['remat']:<5} | {row['step_ms']:9.1f} | "
          f"{row['tokens_per_s']:10.0f} | {row['model_tflops_per_s']:7.1f} | {mfu:>6} | "
          f"{row['compile_s']:7.1f} | {peak:>7} |")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/phi1_5.py")
  p.add_argument("--batch", type=int, default=8, help="rows per step (global)")
  p.add_argument("--seq", type=int, default=0, help="tokens per row (default: the config's)")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype ('' = the config's)")
  p.add_argument("--impls", default="cudnn,pallas_gpu,xla")
  p.add_argument("--remat", default="none", help="comma list of model.remat policies")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--timeout", type=int, default=600, help="seconds per case")
  p.add_argument("--json", default="", help="also write the rows to this file")
  p.add_argument("--smoke", action="store_true",
                 help="CPU check of this script: configs/tiny.py, 2 x 64, interpret mode")
  p.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: one case
  args = p.parse_args(argv)
  if args.one:
    print(json.dumps(one_case(args)), flush=True)
    return 0

  env = dict(os.environ)
  if args.smoke:
    args.config, args.batch, args.seq, args.steps, args.warmup = "configs/tiny.py", 2, 64, 1, 1
    args.impls = ",".join(i for i in args.impls.split(",") if i != "cudnn")
    env["PHIJAX_PALLAS_INTERPRET"] = "1"
  else:
    import jax
    if jax.default_backend() == "cpu":
      print("benchmarks/mfu.py: no accelerator (default backend: cpu); skipping. Run it on "
            "a GPU or TPU host, or pass --smoke for a CPU check.")
      return 0
  common = [f"--config={args.config}", f"--batch={args.batch}", f"--seq={args.seq}",
            f"--dtype={args.dtype}", f"--steps={args.steps}", f"--warmup={args.warmup}"]
  print(f"config {args.config}: batch {args.batch} x {args.seq or 'config seq_len'}, "
        f"{args.dtype or 'config dtype'}, {args.steps} timed steps (median)", flush=True)
  print("| impl       | remat |   step ms |   tokens/s | TFLOP/s |    MFU | compile | peak GB |")
  print("|:-----------|:------|----------:|-----------:|--------:|-------:|--------:|--------:|")
  rows = []
  for remat in args.remat.split(","):
    for impl in args.impls.split(","):
      row = run_case(common, impl, remat, env, args.timeout)
      rows.append(row)
      print(fmt(row), flush=True)
  ok = [r for r in rows if "error" not in r]
  if ok:
    r = ok[0]
    print(f"device: {r['device']} x {r['devices']}; {r['params']:,} parameters; "
          f"optimizer {r['optimizer']}; MFU against {r['peak_source']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
