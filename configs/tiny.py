"""tiny: the default CPU run. A 4.9M-parameter phi-style model (4 layers, hidden 192)
trained on the Python standard library of the running interpreter (no download),
tokenized with an 8k sentencepiece BPE trained on first use.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny

Expect on a 2-core CPU: about 8 minutes (~3.3k tokens/s, 350 steps of 16 x 256
tokens); the final line prints held-out bits per byte over the whole held-out split
beside gzip -9 on the same text (measured: 1.722 vs 1.771 bits/byte, 8m06s).
Periodic evals use the first 8 held-out batches and read lower (~1.52).
``configs/tiny.py:runlocal`` is a seconds-long smoke run.
"""

from phijax import config as base


def get_config(arg=None):
  c = base.default()
  c.model.update(
      arch="phi", vocab_size=8192, hidden_size=192, num_layers=4, num_heads=6,
      intermediate_size=768, max_position_embeddings=2048, rope_theta=10000.0,
      partial_rotary_factor=0.5, dtype="float32")
  c.data.seq_len = 256
  c.train.update(batch_size=16, steps=350, log_every=10, eval_every=100, eval_batches=8,
                 save_every=100)
  c.optim.update(lr=5e-3, b1=0.9, b2=0.95, weight_decay=0.1, clip=1.0)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=40, min_ratio=0.1)
  if arg == "runlocal":
    base.shrink_for_cpu(c)
  return c
