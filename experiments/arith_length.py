"""Arithmetic length generalization by format and position encoding (Shen et al. 2023,
"Positional Description Matters for Transformers Arithmetic", arXiv 2311.14737).

Question: a small phi trained on a+b with operands of 1 to 5 digits, tested on 6 and 7:
which format (plain, reversed, padded, spaces) and position encoding (RoPE, NoPE, RoPE
with a random position offset per training row) carries addition past the trained
lengths, and how much addition does each learn in range at equal tokens?

    python -m phijax.sweep experiments/arith_length.py \\
        --workdir=experiments/results/arith_length --parallel=2
    # smoke: 2 arms of 40 steps and their evaluations, ~2 min
    python -m phijax.sweep experiments/arith_length.py --workdir=runs/arith_quick \\
        --only='pe=rope,offset=off,format=(plain|padded),seed=0' --parallel=2 \\
        --config.train.tokens=40960 --config.train.final_eval_batches=2

Arms: encoding {rope, nope, rope + random offset} x format {plain `123+45=168`, reversed
`321+54=861`, padded to 7 digits `0000123+0000045=00000168`, spaces `1 23+4 5=168`
(random spaces between operand digits)} x seeds {0, 1, 2} (initialisation and data
order): 36 arms of TOKENS tokens each, batch 16 x 64 (a padded or spaced problem is
longer, so those arms see fewer problems). Model: the experiments' small phi (hidden 128,
2 layers, partial rotary 0.5), one token per character (300-piece vocabulary), 256
positions (random offsets span 0-192), Muon at 1e-2, cosine decay. Operand lengths are
uniform in 1-5; a tenth of all problems (a, op, b), by a stable hash, never enters
training (``heldout_share``), and every test problem comes from that tenth.

EVALS: ``phijax.evaluate --task=arithmetic`` on each final model: greedy, PER_LENGTH
held-out problems per operand length 1-7 (both operands of that length; 1 digit has only
8 held-out problems), the same in every arm. Columns: acc_in (exact match, mean over
lengths 1-5), acc_6, acc_7, and dig_in, dig_6, dig_7: the share of answer digits right
at their place value (chance ~0.1), a signal where exact match is zero.

RoPE + random offsets: rotary scores depend only on the distance between positions, so
one offset per row changes the model only by float rounding; the arm measures that
run-to-run noise. Shen et al.'s random embedding targets learned absolute embeddings.
"""

import statistics

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config
from phijax.sweeps.evals import ArmEval
from phijax.sweeps.stats import Comparison

ALIASES = {"model.position_encoding": "pe", "model.random_position_offset": "offset",
           "data.sources.add.format": "format"}
TRAIN_DIGITS, TEST_DIGITS = 5, 7  # padded: every operand padded to TEST_DIGITS
TOKENS = 1_572_864  # 1536 steps of 16 x 64
PER_LENGTH = 200
ENCODINGS = [{"model.position_encoding": pe, "model.random_position_offset": offset}
             for pe, offset in (("rope", False), ("nope", False), ("rope", True))]
FORMATS = ["plain", "reversed", "padded", "spaces"]


def get_config(arg=None):
  c = base.small_ablation(tiny.small_phi(), tokens=TOKENS, batch_size=16, eval_every=0,
                         final_eval_batches=8, log_every=8)
  c.model.update(vocab_size=300, max_position_embeddings=256)
  c.data.tokenizer.vocab_size = 300
  c.data.seq_len = 64
  c.data.sources = dict(add=data_config.arithmetic(
      "+", 1, TRAIN_DIGITS, "plain", width=TEST_DIGITS, size=200_000, heldout=1000,
      heldout_share=0.1))
  c.optim.lr = 1e-2
  c.curriculum.lr.update(schedule="cosine", warmup_steps=30, min_ratio=0.1)
  return base.finish(c, arg)


def get_sweep(h):
  return h.product(ENCODINGS, h.sweep("data.sources.add.format", FORMATS), h.seeds(3))


def _in_range(key):
  return lambda s: statistics.fmean(s[key][str(d)] for d in range(1, TRAIN_DIGITS + 1))


OUT = range(TRAIN_DIGITS + 1, TEST_DIGITS + 1)
EVALS = [ArmEval("arith", task="arithmetic", args=(
    f"--arith_digits=1-{TEST_DIGITS}", f"--arith_per_length={PER_LENGTH}",
    "--batch_size=200", "--seed=0"), columns={
        "acc_in": _in_range("accuracy_by_digits"),
        **{f"acc_{d}": f"accuracy_by_digits.{d}" for d in OUT},
        "dig_in": _in_range("digit_accuracy_by_digits"),
        **{f"dig_{d}": f"digit_accuracy_by_digits.{d}" for d in OUT}})]
PLOTS = ("curves",)  # final.png would plot loss against categorical fields only

ROPE, NOPE, OFFSET = ({"pe": "rope", "offset": False}, {"pe": "nope", "offset": False},
                      {"pe": "rope", "offset": True})
OUT_METRICS = [f"{k}_{d}" for k in ("acc", "dig") for d in OUT]
COMPARISONS = [
    # Shen et al.: plain digits do not extrapolate at all; a format that describes digit
    # places (reversed, padded, randomly spaced) extrapolates a little (10 -> 12 digits).
    *[Comparison(f"{fmt} beats plain past 5 digits (RoPE)", metric=m, claim="higher",
                 arm={**ROPE, "format": fmt}, control={**ROPE, "format": "plain"})
      for fmt in ("reversed", "padded", "spaces") for m in OUT_METRICS],
    # Position information that ties the model less to absolute places (their random
    # embedding; NoPE) extrapolates further, on the plain format that otherwise fails.
    *[Comparison(f"{name} beats RoPE past 5 digits (plain)", metric=m, claim="higher",
                 arm={**enc, "format": "plain"}, control={**ROPE, "format": "plain"})
      for name, enc in (("NoPE", NOPE), ("RoPE + offset", OFFSET)) for m in OUT_METRICS],
    # In range: writing the answer in the order it is computed is easier to learn.
    Comparison("reversed beats plain in range (RoPE)", metric="acc_in", claim="higher",
               arm={**ROPE, "format": "reversed"}, control={**ROPE, "format": "plain"}),
]
