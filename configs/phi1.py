"""phi-1 (1.3B, "Textbooks Are All You Need", arXiv 2306.11644): architecture and
pretraining recipe (batch 1024, peak LR 1e-3, 750 warmup steps, wd 0.1, 36k steps at
2048 tokens, attention/residual dropout 0.1).

    python -m phijax.train --config=configs/phi1.py --workdir=runs/phi1
    python -m phijax.train --config=configs/phi1.py:runlocal --workdir=runs/phi1_smoke

Expect: 1,418,270,720 parameters. The full recipe needs a multi-GPU/TPU mesh
(8 A100s for 4 days in the paper); ``:runlocal`` is a CPU smoke run of the same family.
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi", vocab_size=51200, hidden_size=2048, num_layers=24, num_heads=32,
      intermediate_size=8192, max_position_embeddings=2048, rope_theta=10000.0,
      partial_rotary_factor=0.5, layer_norm_eps=1e-5, attention_dropout=0.1,
      resid_pdrop=0.1, dtype="bfloat16")
  c.data.seq_len = 2048
  c.train.update(batch_size=1024, steps=36000)
  c.optim.update(name="adamw", lr=1e-3, b1=0.9, b2=0.95, weight_decay=0.1)
  c.curriculum.lr.update(schedule="linear", warmup_steps=750)
  return base.finish(c, arg)
