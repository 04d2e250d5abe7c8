"""phi-2 (2.7B): 32 layers, hidden 2560, 32 heads of 80, partial rotary 0.4
(32 of 80 dims), residual dropout 0.1.

    python -m phijax.train --config=configs/phi2.py --workdir=runs/phi2
    python -m phijax.train --config=configs/phi2.py:runlocal --workdir=runs/phi2_smoke

Expect: 2,779,683,840 parameters. Use bf16 (phi-2 overflows in fp16 attention).
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi", vocab_size=51200, hidden_size=2560, num_layers=32, num_heads=32,
      intermediate_size=10240, max_position_embeddings=2048, rope_theta=10000.0,
      partial_rotary_factor=0.4, layer_norm_eps=1e-5, resid_pdrop=0.1, dtype="bfloat16")
  c.data.seq_len = 2048
  c.train.update(batch_size=1024, steps=100000)
  c.optim.update(lr=2e-4, b2=0.95, weight_decay=0.1)
  return base.finish(c, arg)
