"""Decode speed on the same weights: phijax's KV-cache ``Generator`` vs the old
full-forward loop vs Hugging Face ``generate`` (when transformers + torch are installed),
as tokens/s and ratios from one run.

    python benchmarks/generate.py                                # tiny and phi1_5:runlocal
    python benchmarks/generate.py --models=tiny --batch=1,8 --new_tokens=256
    python benchmarks/generate.py --skip_full --repeats=5         # the slow baseline off

Per model and batch size: a random prompt of ``--prompt_len`` tokens per row, greedy,
exactly ``--new_tokens`` new tokens (no EOS). Each implementation runs once to warm up
(compiles), then the timed runs take turns (cached, full-forward, HF, cached, ...) so
that load from elsewhere on a shared machine hits all three; the best of ``--repeats``
counts, the median is printed beside it. HF runs once per ``--torch_threads`` count
(default 1 and all CPUs) and its fastest counts: on a 2-core machine that something
else is using, torch's 2 threads wait on each other and run up to 10x slower than 1.
Printed: a table (model, batch, impl, best and median seconds, tokens/s = batch * new
tokens / best seconds with the prefill included, and tokens/s relative to cached), the
lines ``cached / full-forward: Nx`` and ``cached / HF generate: Nx`` (how many times
faster cached is), and whether each baseline's greedy tokens equal the cached
decoder's (or where they first differ).

The weights are ``phijax.model.init_params`` with ``--init_std`` (default 0.15, not the
configs' 0.02: at 0.02 the random model's logits are nearly flat, so float rounding
could flip near-ties and the token check would say nothing about the decoders) and
reach HF through ``phijax.convert.to_hf``. HF runs in float32 on the CPU; phijax
computes in float32 too unless ``--dtype=config`` keeps the config's compute dtype
(phi-1.5's is bfloat16: then the tokens may part ways with HF's). Not a test: numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax import config_files  # noqa: E402
from phijax.model import decode  # noqa: E402
from phijax.model import Transformer, init_params  # noqa: E402
from phijax.model.config import ModelConfig  # noqa: E402


# --- the old decoder: a full forward per token over a fixed power-of-two buffer ------
# Copied from phijax/generate.py (now phijax/model/decode.py) as of commit 15d4105
# (``_next_token_fn`` and the ``sample`` loop), widened to a batch of equal-length prompts: row b reads its logits
# at the same position i, as the old single-row code did at row 0.

@functools.lru_cache(maxsize=8)
def _next_token_fn(model_cfg):
  model = Transformer(model_cfg)

  @jax.jit
  def next_token(params, buf, i, key, temperature, top_k, top_p, allowed):
    logits = model.apply({"params": params}, buf)  # causal: pads after i are unseen
    logits = jnp.where(allowed, logits[:, i - 1], -jnp.inf)
    return jax.vmap(decode.pick_token, in_axes=(0, None, None, None, None))(
        logits, jax.random.fold_in(key, i), temperature, top_k, top_p)

  return next_token


def full_forward_sample(model_cfg, params, prompts: np.ndarray, max_new_tokens: int,
                        length: int | None = None) -> np.ndarray:
  """Greedy ``[B, max_new_tokens]`` ids after ``prompts`` (``[B, T]``), one full forward
  over the whole buffer per token. ``length`` fixes the buffer (the compiled shape), so
  a short warm-up compiles what the timed run uses."""
  B, T = prompts.shape
  total = T + max_new_tokens
  if length is None:
    length = min(model_cfg.max_position_embeddings, 1 << (total - 1).bit_length())
  next_token = _next_token_fn(model_cfg)
  settings = (jnp.float32(0.0), jnp.int32(0), jnp.float32(1.0))
  key = jax.random.key(0)
  buf = np.zeros((B, length), np.int32)
  buf[:, :T] = prompts
  any_id = jnp.ones((model_cfg.vocab_size,), bool)
  for i in range(T, min(total, length)):
    t = np.asarray(next_token(params, jnp.asarray(buf), i, key, *settings, any_id))
    buf[:, i] = t
  return buf[:, T:min(total, length)]


# --- the three implementations, each: (warm-up, timed run) -> ids [B, N] --------------

def cached_runner(cfg, params, prompts, new_tokens):
  gen = decode.Generator(cfg, params)
  rows = [p.tolist() for p in prompts]

  def run():
    outs = gen.generate(rows, max_new_tokens=new_tokens, temperature=0.0, eos_id=None)
    return np.asarray([o.ids for o in outs])

  return run, run  # the warm-up is a whole run: the cache bucket depends on its length


def full_runner(cfg, params, prompts, new_tokens):
  params = jax.device_put(params)
  total = prompts.shape[1] + new_tokens
  length = min(cfg.max_position_embeddings, 1 << (total - 1).bit_length())
  warm = lambda: full_forward_sample(cfg, params, prompts, 2, length)  # compiles `length`
  return warm, lambda: full_forward_sample(cfg, params, prompts, new_tokens, length)


def hf_model(cfg, params, workdir):
  """The weights as HF loads them (``phijax.convert.to_hf``), float32, never stopping
  early, and a line naming the versions and the attention implementation."""
  import torch
  import transformers

  from phijax import convert
  transformers.utils.logging.disable_progress_bar()  # keeps the table readable
  directory = os.path.join(workdir, "hf")
  convert.to_hf(cfg, params, directory)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory).float().eval()
  model.generation_config.eos_token_id = None  # random weights: every run makes N tokens
  model.generation_config.pad_token_id = 0
  info = (f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{model.config._attn_implementation} attention")
  return model, info


def hf_runner(model, prompts, new_tokens, threads):
  import torch
  x = torch.tensor(prompts, dtype=torch.long)
  mask = torch.ones_like(x)

  def run():
    # Per run: the runs of different thread counts take turns in one process.
    torch.set_num_threads(threads)
    with torch.no_grad():
      out = model.generate(x, attention_mask=mask, max_new_tokens=new_tokens,
                           do_sample=False)
    return out[:, prompts.shape[1]:].numpy()

  return run, run


def time_round_robin(runners, repeats):
  """``{name: (best seconds, median seconds, ids)}``. Every runner warms up first, then
  the timed runs take turns (a, b, c, a, b, c, ...) so that a burst of load from
  elsewhere on a shared machine lands on all of them rather than on one; ``repeats``
  maps a name to its number of timed runs (the slow baseline may take fewer)."""
  for warm, _ in runners.values():
    warm()
  times = {name: [] for name in runners}
  ids = {}
  for r in range(max(repeats.values())):
    for name, (_, run) in runners.items():
      if r < repeats[name]:
        t = time.perf_counter()
        ids[name] = run()
        times[name].append(time.perf_counter() - t)
  return {name: (min(ts), float(np.median(ts)), ids[name]) for name, ts in times.items()}


def agreement(ref, ids) -> str:
  if ids.shape != ref.shape:
    return f"no (shapes {ids.shape} vs {ref.shape})"
  diff = np.argwhere(ids != ref)
  if diff.size == 0:
    return "yes"
  row, i = diff[np.argsort(diff[:, 1], kind="stable")[0]]
  return f"no (first difference at new token {i}, row {row})"


def model_config(spec, dtype, init_std):
  cfg = ModelConfig.from_dict(config_files.load(spec).model)
  return cfg.replace(init_std=init_std,
                     **({} if dtype == "config" else {"dtype": dtype}))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="tiny,phi1_5:runlocal",
                 help="comma-separated config specs (NAME[:ARG] or PATH.py[:ARG])")
  p.add_argument("--batch", default="1", help="comma-separated batch sizes")
  p.add_argument("--new_tokens", type=int, default=256)
  p.add_argument("--prompt_len", type=int, default=32)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--full_repeats", type=int, default=None,
                 help="timed runs of the full-forward loop (default --repeats; it is slow)")
  p.add_argument("--dtype", default="float32",
                 help="phijax compute dtype; 'config' keeps the config's")
  p.add_argument("--init_std", type=float, default=0.15)
  p.add_argument("--torch_threads", default=f"1,{os.cpu_count() or 1}",
                 help="comma-separated torch thread counts, each timed; the fastest counts")
  p.add_argument("--skip_full", action="store_true", help="no full-forward loop")
  p.add_argument("--skip_hf", action="store_true", help="no HF generate")
  args = p.parse_args()

  skip_hf = args.skip_hf
  if not skip_hf:
    try:
      import torch  # noqa: F401
      import transformers  # noqa: F401
    except ImportError:
      print("HF generate: skipped (pip install 'phijax[hf]' to compare)")
      skip_hf = True
  torch_threads = sorted({int(t) for t in args.torch_threads.split(",")})
  full_repeats = args.repeats if args.full_repeats is None else args.full_repeats
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs); "
        f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, greedy, "
        f"best of {args.repeats} (full-forward: {full_repeats}) after a warm-up")
  header = (f"{'model':<18} {'batch':>5}  {'impl':<16} {'best s':>9} {'median s':>9} "
            f"{'tokens/s':>10} {'vs cached':>10}")
  summary = []
  for spec in args.models.split(","):
    cfg = model_config(spec, args.dtype, args.init_std)
    if args.prompt_len + args.new_tokens > cfg.max_position_embeddings:
      raise SystemExit(f"{spec}: {args.prompt_len} + {args.new_tokens} tokens exceed its "
                       f"{cfg.max_position_embeddings} positions")
    params = init_params(cfg, jax.random.key(0))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f"\n{spec}: {n_params / 1e6:.2f}M parameters, hidden {cfg.hidden_size}, "
          f"{cfg.num_layers} layers, vocab {cfg.vocab_size}, compute {cfg.dtype}, "
          f"init_std {cfg.init_std}")
    with tempfile.TemporaryDirectory() as workdir:
      hf, info = (None, None) if skip_hf else hf_model(cfg, params, workdir)
    for batch in (int(b) for b in args.batch.split(",")):
      prompts = np.random.default_rng(0).integers(
          0, cfg.vocab_size, (batch, args.prompt_len)).astype(np.int32)
      n = batch * args.new_tokens
      runners = {"cached": cached_runner(cfg, params, prompts, args.new_tokens)}
      repeats = {"cached": args.repeats}
      if not args.skip_full:
        runners["full-forward"] = full_runner(cfg, params, prompts, args.new_tokens)
        repeats["full-forward"] = full_repeats
      for threads in () if hf is None else torch_threads:
        name = f"HF {threads} thread" + "s" * (threads > 1)
        runners[name] = hf_runner(hf, prompts, args.new_tokens, threads)
        repeats[name] = args.repeats
      results = time_round_robin(runners, repeats)
      secs, _, ref = results["cached"]
      print(header)
      for impl, (best, median, _) in results.items():
        print(f"{spec:<18} {batch:>5}  {impl:<16} {best:9.3f} {median:9.3f} "
              f"{n / best:10.1f} {secs / best:9.3f}x")
      lines = []
      if "full-forward" in results:
        lines.append(f"cached / full-forward: {results['full-forward'][0] / secs:.2f}x")
      hf_rows = [(best, impl) for impl, (best, _, _) in results.items()
                 if impl.startswith("HF")]
      if hf_rows:
        best, impl = min(hf_rows)  # HF at its best thread count
        lines.append(f"cached / HF generate: {best / secs:.2f}x ({impl})")
      for line in lines:
        print(line)
        summary.append(f"{spec} batch {batch}: {line}")
      for impl, (_, _, ids) in list(results.items())[1:]:
        print(f"{impl} tokens agree with cached: {agreement(ref, ids)}")
    if info is not None:
      print(f"HF: {info}")
  if summary:
    print("\nsummary (tokens/s of cached over each baseline):")
    print("\n".join(summary))


if __name__ == "__main__":
  main()
