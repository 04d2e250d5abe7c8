"""phi-1.5 (1.3B, "Textbooks Are All You Need II", arXiv 2309.05463): the phi-1
architecture with the phi-1.5 recipe (constant LR 2e-4, no warmup, wd 0.1,
Adam (0.9, 0.98) eps 1e-7, batch 2048, 150B tokens).

    python -m phijax.train --config=configs/phi1_5.py --workdir=runs/phi1_5
    python -m phijax.train --config=configs/phi1_5.py:runlocal --workdir=runs/phi1_5_smoke

Expect: 1,418,270,720 parameters.
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi", vocab_size=51200, hidden_size=2048, num_layers=24, num_heads=32,
      intermediate_size=8192, max_position_embeddings=2048, rope_theta=10000.0,
      partial_rotary_factor=0.5, layer_norm_eps=1e-5, dtype="bfloat16")
  c.data.seq_len = 2048
  c.train.update(batch_size=2048, tokens=150_000_000_000)
  c.optim.update(name="adamw", lr=2e-4, b1=0.9, b2=0.98, eps=1e-7, weight_decay=0.1)
  c.curriculum.lr.update(schedule="constant", warmup_steps=0)
  return base.finish(c, arg)
