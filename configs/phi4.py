"""phi-4 (14B): phi3 block, 40 layers, hidden 5120, 40 query heads and 10 kv heads
(GQA 4:1) of 128, vocab 100352, 16k context, rope theta 250000.

    python -m phijax.train --config=configs/phi4.py --workdir=runs/phi4
    python -m phijax.train --config=configs/phi4.py:runlocal --workdir=runs/phi4_smoke

Expect: 14,659,507,200 parameters; needs FSDP over a pod-sized mesh
(--config.mesh.fsdp=-1).
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi3", vocab_size=100352, hidden_size=5120, num_layers=40, num_heads=40,
      num_kv_heads=10, intermediate_size=17920, max_position_embeddings=16384,
      rope_theta=250000.0, layer_norm_eps=1e-5, dtype="bfloat16", remat="full")
  c.data.seq_len = 16384
  c.train.update(batch_size=256, steps=100000)
  c.optim.update(lr=3e-4, weight_decay=0.1)
  c.mesh.update(data=1, fsdp=-1)
  return base.finish(c, arg)
