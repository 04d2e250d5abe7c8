"""Data pipeline throughput on the built-in stdlib corpus (not a test).

    python benchmarks/data_pipeline.py                 # 0 and 2 workers, tiny.py shapes
    python benchmarks/data_pipeline.py --batches=400 --workers=0,1,2,4
    python benchmarks/data_pipeline.py --hosts=1,8,64 --seq_len=2048 --workers=   # pod table

Prints, per worker count: tokens/s of finished batches (after the first batch,
which includes worker start-up), packing efficiency; once: tokenizer training time
(fresh cache), the exact round trip over every stdlib file and its tokens per byte.
Goal: at least 20x what a tiny-model train step consumes (~20-50k tokens/s).

``--hosts``: the per-host budget of a pod run. For on-the-fly and prepared data
(``python -m phijax.data.prepare``, timed once): the time a host takes to open the
stream (on the fly: tokenize its corpus; prepared: read the lengths), and the rows per
second it delivers of its own share (``phijax.data.hosts``: 1/N of every global batch)
for N hosts, one process, no workers, against what a host consumes training phi-1.5:
CONSUMED_TOKENS_PER_GPU (the measured H100 step, benchmarks/RESULTS.md) x
GPUS_PER_HOST tokens a second. ``needs workers``: grain worker processes a host needs
to keep up, ceil(consumed / delivered) (workers scale about linearly: each reads its
own batches).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings


CONSUMED_TOKENS_PER_GPU = 31_420  # phi-1.5, batch 8 x 2048 on one H100 (RESULTS.md)
GPUS_PER_HOST = 8


def pod_table(cfg, tok, args):
  """Rows/s of one host's share, on the fly and prepared, for each host count."""
  import math
  import os


  from phijax.data import hosts, pipeline, prepare

  consumed = CONSUMED_TOKENS_PER_GPU * GPUS_PER_HOST / args.seq_len  # rows/s per host
  with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    prepare.prepare(cfg, tok, os.path.join(out, "prepared"), threads=cfg.read_threads)
    prep_s = time.perf_counter() - t0
    print(f"prepare (once, 1 process): {prep_s:.1f} s")
    print("| data | hosts | open s | rows/host/batch | host rows/s | global rows/s "
          "equivalent | consumed rows/s/host | needs workers |")
    print("|---|---|---|---|---|---|---|---|")
    cache_dir = cfg.tokenizer.cache_dir
    cfg.tokenizer.cache_dir = ""  # no token cache: on the fly means tokenizing
    for mode in ("on the fly", "prepared"):
      cfg.prepared = os.path.join(out, "prepared") if mode == "prepared" else ""
      for n in [int(h) for h in args.hosts.split(",")]:
        rows = hosts.block_rows(args.batch_size, n, 0)
        t0 = time.perf_counter()
        it = iter(pipeline.make_train_dataset(cfg, tok, batch_size=args.batch_size, seed=0,
                                              process_index=0, process_count=1, rows=rows))
        first = next(it)
        open_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.batches):
          next(it)
        rate = args.batches * len(rows) / (time.perf_counter() - t0)
        assert first["inputs"].shape == (len(rows), args.seq_len)
        print(f"| {mode} | {n} | {open_s:.2f} | {len(rows)} | {rate:,.0f} | "
              f"{rate * n:,.0f} | {consumed:,.0f} | {max(1, math.ceil(consumed / rate))} |")
    cfg.tokenizer.cache_dir, cfg.prepared = cache_dir, ""


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", type=int, default=200)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--workers", default="0,2")
  p.add_argument("--cache_dir", default="", help="tokenizer cache ('' = a fresh temp dir)")
  p.add_argument("--hosts", default="", help="host counts for the pod table, e.g. 1,8,64")
  args = p.parse_args()
  warnings.simplefilter("ignore")  # the stdlib has no non-UTF-8 files; nothing to hear

  from phijax import data
  from phijax.data import corpus

  cfg = data.config.defaults()
  cfg.seq_len = args.seq_len
  with tempfile.TemporaryDirectory() as tmp:
    cfg.tokenizer.cache_dir = args.cache_dir or tmp
    t0 = time.perf_counter()
    tok = data.load_tokenizer(cfg)
    print(f"tokenizer: {tok.vocab_size} pieces, load/train {time.perf_counter() - t0:.1f} s")

    root = corpus.stdlib_root()
    docs = [(str(f), (root / f).read_bytes().decode("utf-8")) for f in corpus.stdlib_files()]
    t0 = time.perf_counter()
    report = data.check_roundtrip(tok, docs)
    print(f"round trip: {report['documents']} stdlib files, {len(report['failed'])} failed, "
          f"{len(report['byte_count_mismatch'])} byte-count mismatches, "
          f"{report['tokens']} tokens / {report['bytes']} bytes = "
          f"{report['tokens_per_byte']:.4f} tokens/byte ({report['bytes_per_token']:.3f} "
          f"bytes/token), {time.perf_counter() - t0:.1f} s")

    if args.hosts:
      pod_table(cfg, tok, args)
    for workers in [int(w) for w in args.workers.split(",") if w]:
      cfg.workers = workers
      it = data.make_train_iterator(cfg, tok, batch_size=args.batch_size, seed=0,
                                    process_index=0, process_count=1)
      t0 = time.perf_counter()
      first = next(it)
      startup = time.perf_counter() - t0
      batches = []
      t0 = time.perf_counter()
      for _ in range(args.batches):
        batches.append(next(it))
      dt = time.perf_counter() - t0
      tokens = args.batches * args.batch_size * args.seq_len
      print(f"workers={workers}: {tokens / dt:,.0f} tokens/s ({args.batches} batches of "
            f"{args.batch_size}x{args.seq_len} in {dt:.2f} s; first batch {startup:.2f} s), "
            f"packing efficiency {data.packing_efficiency([first] + batches):.4f}")
      if hasattr(it, "close"):
        it.close()


if __name__ == "__main__":
  main()
