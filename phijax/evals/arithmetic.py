"""The ``arithmetic`` evaluation: exact-match accuracy by operand length, greedy.

For each operand length ``d`` in ``--arith_digits`` and each op, ``--arith_per_length``
problems whose operands both have ``d`` digits are written in the format the model
was trained on (``phijax.data.arithmetic``); the model continues ``a+b=`` greedily,
one token per character as in training, and a problem counts as solved when the
text it writes before ``<|endoftext|>`` is exactly the answer's spelling. Lengths
past the training range measure length generalization (Shen et al. 2023 train up
to N digits and test on N+1, N+2). ``digit_accuracy_by_digits`` is the softer share of
answer digits right at their place value (``digits_right``; chance is about 0.1).

Defaults come from the run's config when it trained on an arithmetic source (its
ops, format, padding width; lengths 1 to max_digits + 2, or to the padded width if
that is less), else from the flags.
Problems are drawn from ``default_rng([--seed, d, op])``, distinct within a length:
the same problems for every model, whatever the range or batch size. When the run's
source holds problems out of training (its ``heldout_share`` > 0, see
``phijax.data.arithmetic``), only held-out problems are drawn, at every length, so
in-range accuracy is measured on problems training never showed; a length with fewer
held-out problems than ``--arith_per_length`` (1 digit: about 100 x the share) tests
those it has (``problems_by_digits``). Without the split, short problems (1-2 digits)
are so few that training has seen them all.

Interface for ``phijax.evaluate``: ``add_args(group)`` and ``run(m, args) ->
(settings, scores, rows)``; ``args.batch_size`` and ``args.seed`` are the
evaluate parser's.
"""

from __future__ import annotations

import argparse
import math
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
          "heldout_share": trained.heldout_share if trained else 0.0,
          "per_length": args.arith_per_length, "seed": args.seed,
          "batch_size": args.batch_size, "decoding": "greedy",
          "from_run_config": trained is not None}


def problems(settings: dict) -> list[dict]:
  """The test problems: up to ``per_length`` distinct ones per (length, op), on the
  held-out side of the run's split, as prompt/answer texts."""
  out = []
  lo, hi = settings["digits"]
  share, n = settings.get("heldout_share", 0.0), settings["per_length"]
  for d in range(lo, hi + 1):
    for op in settings["ops"]:
      rng = np.random.default_rng([settings["seed"], d, ord(op)])
      seen = set()
      for _ in range(100 * n):  # 1 digit: enough draws to find every held-out problem
        if len(seen) == n:
          break
        p = arithmetic.draw_of_length(rng, op, d)
        if p in seen or (share > 0 and not arithmetic.in_heldout(p, share)):
          continue
        seen.add(p)
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
      r["digits_right"], r["answer_digits"] = digits_right(
          o.text, arithmetic.OPS[r["op"]](r["a"], r["b"]), settings["format"])
  lengths = range(settings["digits"][0], settings["digits"][1] + 1)
  scores = {"accuracy": _mean(r["correct"] for r in rows),
            "accuracy_by_digits": {
                str(d): _mean(r["correct"] for r in rows if r["digits"] == d)
                for d in lengths},
            "digit_accuracy_by_digits": {
                str(d): _ratio([r for r in rows if r["digits"] == d]) for d in lengths},
            "problems_by_digits": {
                str(d): sum(r["digits"] == d for r in rows) for d in lengths},
            "problems": len(rows), "generate_seconds": round(time.time() - t0, 1)}
  return settings, scores, rows


def digits_right(output: str, answer: int, fmt: str) -> tuple[int, int]:
  """``(right, digits)``: how many of the answer's digits ``output``, read as a number
  in ``fmt``, has at their place value (units first; a longer or shorter number keeps
  its places aligned), and how many digits the answer has. Not a number: none right.
  A softer signal than exact match where that is zero past the trained lengths."""
  want = str(answer)[::-1]
  try:
    got = str(arithmetic.read_number(output, fmt))[::-1]
  except ValueError:
    got = ""
  return sum(a == b for a, b in zip(want, got)), len(want)


def _ratio(rows) -> float:
  total = sum(r["answer_digits"] for r in rows)
  return sum(r["digits_right"] for r in rows) / total if total else math.nan


def _mean(flags) -> float:
  flags = list(flags)
  return sum(flags) / len(flags) if flags else math.nan  # no problem: no accuracy
