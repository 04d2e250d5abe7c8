"""Data pipeline throughput on the built-in stdlib corpus (not a test).

    python benchmarks/data_pipeline.py                 # 0 and 2 workers, tiny.py shapes
    python benchmarks/data_pipeline.py --batches=400 --workers=0,1,2,4

Prints, per worker count: tokens/s of finished batches (after the first batch,
which includes worker start-up), packing efficiency; once: tokenizer training time
(fresh cache), the exact round trip over every stdlib file and its tokens per byte.
Goal: at least 20x what a tiny-model train step consumes (~20-50k tokens/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", type=int, default=200)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--workers", default="0,2")
  p.add_argument("--cache_dir", default="", help="tokenizer cache ('' = a fresh temp dir)")
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

    for workers in [int(w) for w in args.workers.split(",")]:
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
