"""The ``arithmetic`` evaluation: exact-match accuracy by operand length, greedy.

For each operand length ``d`` in ``--arith_digits`` and each op, ``--arith_per_length``
problems whose operands both have ``d`` digits are written in the format the model
was trained on (``phijax.data.arithmetic``); the model continues ``a+b=`` greedily,
one token per character as in training, and a problem counts as solved when the
text it writes before ``<|endoftext|>`` is exactly the answer's spelling. Lengths
past the training range measure length generalization (Shen et al. 2023 train up
to N digits and test on N+1, N+2).

Defaults come from the run's config when it trained on an arithmetic source (its
ops, format, padding width; lengths 1 to max_digits + 2, or to the padded width if
that is less), else from the flags.
Problems are drawn from ``default_rng([--seed, d, op])``: the same problems for
every model, whatever the range or batch size. Short problems (1-2 digits) are so
few that training has seen them all; longer ones are new with near certainty.

Interface for ``phijax.evaluate``: ``add_args(group)`` and ``run(m, args) ->
(settings, scores, rows)``; ``args.batch_size`` and ``args.seed`` are the
evaluate parser's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from phijax import cli
from phijax.data import arithmetic

DEFAULT_DIGITS = (1, 8)


def digit_range(value: str) -> tuple[int, int]:
  """``"3"`` -> (3, 3); ``"1-8"`` -> (1, 8)."""
  lo, _, hi = value.partition("-")
  try:
    lo, hi = int(lo), int(hi or lo)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{value!r} is not a digit range such as 1-8") from None
  if not 1 <= lo <= hi:
    raise argparse.ArgumentTypeError(f"{value!r}: need 1 <= first <= last, e.g. 1-8")
  return lo, hi


def add_args(group) -> None:
  group.add_argument("--arith_ops", default=None, metavar="OPS",
                     help="'+', '*' or '+*' (default: the run's arithmetic source's, "
                          "else '+')")
  group.add_argument("--arith_digits", type=digit_range, default=None, metavar="LO-HI",
                     help="operand lengths to test (default: 1 to the run's max_digits "
                          f"+ 2, else {DEFAULT_DIGITS[0]}-{DEFAULT_DIGITS[1]})")
  group.add_argument("--arith_format", choices=arithmetic.FORMATS, default=None,
                     help="default: the run's, else plain")
  group.add_argument("--arith_width", type=cli.positive_int, default=None,
                     help="padded format: operand digits (default: the run's width, "
                          "else the longest tested length)")
  group.add_argument("--arith_per_length", type=cli.positive_int, default=100,
                     help="problems per operand length and op (default 100)")


def settings_of(args, run_config) -> dict:
  """The task's settings: flags first, then the run's arithmetic source, then defaults."""
  trained = arithmetic.spec_of_run(run_config)
  ops = args.arith_ops or (trained.ops if trained else "+")
  if set(ops) - set(arithmetic.OPS) or not ops:
    raise cli.UsageError(f"--arith_ops={ops!r}: use '+', '*' or '+*'")
  fmt = args.arith_format or (trained.format if trained else "plain")
  if args.arith_digits:
    lo, hi = args.arith_digits
  elif trained:  # up to 2 digits past training, as far as the run's padding reaches
    lo, hi = 1, trained.max_digits + 2
    if fmt == trained.format == "padded" and not args.arith_width:
      hi = min(hi, trained.pad_width)
  else:
    lo, hi = DEFAULT_DIGITS
  width = None
  if fmt == "padded":
    width = args.arith_width or (trained.pad_width if trained and trained.pad_width else hi)
    if width < hi:
      raise cli.UsageError(
          f"padded width {width} (--arith_width, or the run's) is below the longest "
          f"tested operands ({hi} digits, --arith_digits): they would not fit; raise "
          "--arith_width or lower --arith_digits")
  return {"ops": ops, "format": fmt, "digits": [lo, hi], "width": width,
          "per_length": args.arith_per_length, "seed": args.seed,
          "batch_size": args.batch_size, "decoding": "greedy",
          "from_run_config": trained is not None}


def problems(settings: dict) -> list[dict]:
  """The test problems: ``per_length`` per (length, op), as prompt/answer texts."""
  out = []
  lo, hi = settings["digits"]
  for d in range(lo, hi + 1):
    for op in settings["ops"]:
      rng = np.random.default_rng([settings["seed"], d, ord(op)])
      for _ in range(settings["per_length"]):
        p = arithmetic.draw_of_length(rng, op, d)
        doc = arithmetic.encode(p.a, p.b, op, settings["format"], rng,
                                width=settings["width"])
        prompt, answer = arithmetic.split_document(doc)
        out.append({"op": op, "digits": d, "a": p.a, "b": p.b, "prompt": prompt,
                    "expected": answer})
  return out


def check_fits(settings: dict, max_positions: int) -> None:
  """One clear error when the longest problem does not fit the model's positions."""
  lo, hi = settings["digits"]
  spec = arithmetic.Spec(ops=settings["ops"], min_digits=lo, max_digits=hi,
                         format=settings["format"], width=settings["width"] or 0)
  need = spec.max_chars(hi) + 1  # the characters, then end-of-text
  if need > max_positions:
    raise cli.UsageError(
        f"--arith_digits up to {hi}: a {hi}-digit problem in format "
        f"{settings['format']!r} takes up to {need} positions (one token per character "
        f"and end-of-text), more than the model's max_position_embeddings="
        f"{max_positions}; lower --arith_digits")


def run(m, args):
  """Greedy answers to the test problems; ``(settings, scores, rows)``."""
  from phijax.model import decode

  settings = settings_of(args, m.run_config)
  check_fits(settings, m.cfg.max_position_embeddings)
  tok = m.tokenizer
  rows = problems(settings)
  gen = decode.Generator(m.cfg, m.params)
  t0 = time.time()
  for start in range(0, len(rows), args.batch_size):
    chunk = rows[start:start + args.batch_size]
    answer_ids = [len(arithmetic.char_ids(tok, r["expected"])) for r in chunk]
    outs = gen.generate([arithmetic.char_ids(tok, r["prompt"]) for r in chunk],
                        max_new_tokens=max(answer_ids) + 1, eos_id=tok.eos_id,
                        tokenizer=tok)
    for r, o in zip(chunk, outs):
      r["output"], r["finish"] = o.text, o.finish
      # Solved: the answer's exact spelling, then end-of-text.
      r["correct"] = o.finish == "eos" and o.text == r["expected"]
  scores = {"accuracy": _mean(r["correct"] for r in rows),
            "accuracy_by_digits": {
                str(d): _mean(r["correct"] for r in rows if r["digits"] == d)
                for d in range(settings["digits"][0], settings["digits"][1] + 1)},
            "problems": len(rows), "generate_seconds": round(time.time() - t0, 1)}
  return settings, scores, rows


def _mean(flags) -> float:
  flags = list(flags)
  return sum(flags) / max(len(flags), 1)
