"""phi-3-mini-4k (3.8B): phi3 block (RMSNorm, SwiGLU, fused qkv in HF), 32 layers,
hidden 3072, 32 heads of 96, full rotary, sliding window 2047, vocab 32064.

    python -m phijax.train --config=configs/phi3_mini.py --workdir=runs/phi3_mini
    python -m phijax.train --config=configs/phi3_mini.py:runlocal --workdir=runs/phi3_smoke

Expect: 3,821,079,552 parameters.
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi3", vocab_size=32064, hidden_size=3072, num_layers=32, num_heads=32,
      num_kv_heads=32, intermediate_size=8192, max_position_embeddings=4096,
      rope_theta=10000.0, sliding_window=2047, layer_norm_eps=1e-5, dtype="bfloat16")
  c.data.seq_len = 4096
  c.train.update(batch_size=512, steps=100000)
  c.optim.update(lr=3e-4, weight_decay=0.1)
  return base.finish(c, arg)
