"""Step time with asynchronous checkpoints vs without, on the tiny config.

    python benchmarks/checkpoint_overhead.py [--steps=60] [--save_every=5]

Runs the same training twice in temporary directories: once saving only at the end,
once saving every ``save_every`` steps (orbax, asynchronous), and compares the
tokens/s logged in metrics.jsonl (the first logging window, which holds the compile,
is left out). Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from phijax import train  # noqa: E402


def tiny_config(steps, save_every, log_every):
  from phijax.configs import tiny
  c = tiny.get_config()
  c.train.update(steps=steps, save_every=save_every, log_every=log_every, eval_every=0,
                 samples=0, final_eval_batches=1, progress=False, keep_last=2)
  return c


def tokens_per_sec(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  tps = [r["tokens_per_sec"] for r in rows if "tokens_per_sec" in r][1:]
  return sum(tps) / len(tps)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--save_every", type=int, default=5)
  p.add_argument("--log_every", type=int, default=5)
  args = p.parse_args()
  results = {}
  for name, every in (("no checkpoints", 0), (f"async save every {args.save_every}", args.save_every)):
    with tempfile.TemporaryDirectory() as d:
      t = time.perf_counter()
      train.train(tiny_config(args.steps, every, args.log_every), d)
      results[name] = (tokens_per_sec(d), time.perf_counter() - t,
                       len(os.listdir(os.path.join(d, "checkpoints"))))
  base = results["no checkpoints"][0]
  for name, (tps, wall, kept) in results.items():
    print(f"{name:24s}: {tps:8.0f} tokens/s  ({tps / base:.3f}x)  wall {wall:.1f}s  "
          f"checkpoints kept {kept}")


if __name__ == "__main__":
  main()
