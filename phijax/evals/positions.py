"""The ``positions`` evaluation: held-out loss by position bucket, to see where a model
breaks past the length it was trained at (context extension: ``rope_scaling``,
``configs/extend_context.py``).

    python -m phijax.evaluate --workdir=runs/tiny --task=positions --seq_len=1024

The held-out rows are the ``bpb`` task's (the run's data sources, or ``--config``;
``--source``, ``--eval_batches``), cut at ``--seq_len`` tokens (default: the run's
``data.seq_len``). Each target token's loss goes to the bucket of the position the
model reads its input at: ``[0, bucket)``, ``[bucket, 2 bucket)``, ... up to the row
length. Positions count from the token's document start (packed rows restart them at
each document, and at the row's start for a document continued from the row before),
so a bucket holds the tokens that far into their document, and short documents
fill only the early buckets: the ``tokens`` of each row say how much a bucket rests on.
A model that generalizes keeps its loss flat (or falling: more context) past the
trained length; one that breaks shows it rising there.

Scores: ``eval_loss`` over every token (the ``bpb`` task's number at the same length)
and ``loss_<start>_<end>`` per bucket; rows: one per bucket with ``tokens``, ``loss``,
``bpb`` and ``past_trained`` (the bucket starts at or past the config's
``data.seq_len``, the longest rows the run trained on).

Interface for ``phijax.evaluate``: ``add_args(group)`` and ``run(m, args) ->
(settings, scores, rows)``.
"""

from __future__ import annotations

import sys

from phijax import cli


def add_args(group) -> None:
  group.add_argument("--bucket", type=cli.positive_int, default=256, metavar="N",
                     help="positions per bucket (default 256)")
  group.add_argument("--seq_len", type=cli.positive_int, default=None, metavar="N",
                     help="row length scored (default: the config's data.seq_len); set "
                          "it past the trained length to see where the model breaks")


def run(m, args):
  from phijax import data
  from phijax.evals.evaluate import data_config
  from phijax.train import perplexity

  config, num_batches = data_config(m, args)
  trained = int(config.data.seq_len)
  seq_len = args.seq_len or trained
  if m.tokenizer.vocab_size > m.cfg.vocab_size:
    raise ValueError(f"the tokenizer has {m.tokenizer.vocab_size} tokens, the model only "
                     f"{m.cfg.vocab_size}")
  config.data.seq_len = seq_len
  names = list(args.source) if args.source else None
  unknown = [n for n in names or () if n not in config.data.sources]
  if unknown:
    raise ValueError(f"no data source {unknown[0]!r} in the config; sources there: "
                     f"{', '.join(config.data.sources)}")
  data.check_heldout(config.data, names or list(data.source_weights(config.data)))
  batch_size = int(config.train.batch_size)
  batches = data.make_eval_batches(config.data, m.tokenizer, batch_size=batch_size,
                                   num_batches=num_batches, process_index=0,
                                   process_count=1, sources=names)
  rows = perplexity.loss_by_position(m.cfg, m.params, batches, args.bucket)
  for r in rows:
    r["past_trained"] = r["start"] >= trained
  tokens = sum(r["tokens"] for r in rows)
  nll = sum(r["loss"] * r["tokens"] for r in rows if r["tokens"])
  scores = {"eval_loss": nll / max(tokens, 1), "eval_tokens": tokens}
  scores.update({f"loss_{r['start']}_{r['end']}": r["loss"] for r in rows})
  rs = m.cfg.rope_scaling
  settings = {"seq_len": seq_len, "bucket": args.bucket, "trained_seq_len": trained,
              "batch_size": batch_size, "eval_batches": num_batches or "all",
              "data_sources": names or list(data.source_weights(config.data)),
              "rope_scaling": rs["type"] if rs else None,
              "max_position_embeddings": m.cfg.max_position_embeddings}
  for r in rows:
    shown = "-" if r["loss"] is None else f"{r['loss']:.4f}"
    print(f"positions {r['start']:>6}-{r['end']:<6} {r['tokens']:>9} tokens  loss {shown}"
          + ("  (past trained length)" if r["past_trained"] else ""), file=sys.stderr)
  return settings, scores, rows
