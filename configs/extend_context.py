"""extend_context: continue a trained run at 4x its sequence length, with its rotary
embeddings stretched by a ``rope_scaling`` type, for a short continued training.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny
    python -m phijax.train --config=configs/extend_context.py:yarn --workdir=runs/tiny_yarn \\
        --config.train.init_from=runs/tiny
    python -m phijax.evaluate --workdir=runs/tiny_yarn --task=positions --seq_len=512
    python -m phijax.evaluate --workdir=runs/tiny --task=positions --seq_len=512

The argument picks the scaling (``phijax/model/rope_scaling.py``), all with factor 4
over the trained length L (tiny's 128) and ``max_position_embeddings`` = 4 L:

- ``linear``: position interpolation (Chen et al. 2023, arXiv 2306.15595);
- ``yarn`` (the default): NTK-by-parts + attention factor (Peng et al. 2023,
  arXiv 2309.00071), betas 32 / 1;
- ``longrope``: LongRoPE's short / long factors (Ding et al. 2024, arXiv 2402.13753).
  No evolutionary search here: short factors 1 (plain RoPE up to L, where the trained
  model is right) and long factors set to YaRN's per-dimension stretch, one of the
  starting points the paper's search begins from;
- ``none``: plain RoPE, trained at 4 L all the same: the baseline the others must beat.

``train.init_from`` is a run (or a parameter / Hugging Face directory) of tiny's
architecture (change ``model.*`` for another); its tokenizer is used, and it is
evaluated before the first step (at 4 L, with the new scaling). Training: 150 steps of
8 rows of 4 L tokens (tiny's 4,096 tokens a step at full length), sequence-length
warmup from L to 4 L over the first 30% (pow2 buckets: L, 2 L, 4 L; rows truncated,
Li et al. 2022), Muon at a peak LR of 3e-3 (tiny pretrains at 2e-2) after 10 warmup
steps, cosine to a tenth. The positions evaluation (the last two commands) shows the
held-out loss by position bucket before and after: the warm-started model's loss
rising past L (128) is what the continued training should flatten. LRs and lengths are
chosen, not tuned; no timing was measured. ``configs/extend_context.py:yarn,runlocal``
is a smoke run (L = 64 after tiny's runlocal shrink).
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.model import rope_scaling as scaling

TYPES = ("linear", "yarn", "longrope", "none")
STRETCH = 4  # the new length over the trained one


def get_config(arg=None):
  words = base.check_arg(arg, TYPES + base.RUN_ARGS)
  kinds = sorted(words & set(TYPES))
  if len(kinds) > 1:
    raise base.ConfigError(f"config argument {arg!r} names {len(kinds)} scaling types "
                           f"({', '.join(kinds)}); pick one of {', '.join(TYPES)}")
  kind = kinds[0] if kinds else "yarn"
  c = tiny.get_config()  # the default run's shape: train.init_from=runs/tiny loads into it
  c = base.finish(c, ",".join(sorted(words & set(base.RUN_ARGS))) or None)
  # After runlocal's shrink: the extension follows the (possibly shrunk) trained length
  # and head dims; runlocal keeps its own short schedule.
  if "runlocal" in words:
    return extend(c, kind, steps=c.train.steps, eval_every=c.train.eval_every,
                  save_every=c.train.save_every)
  return extend(c, kind)


def extend(c, kind: str, *, steps: int = 150, lr: float = 3e-3, eval_every: int = 75,
           save_every: int = 75):
  """Config ``c`` (a run's, trained at ``c.data.seq_len``) turned into its continuation
  at STRETCH times the length with the ``kind`` scaling: the recipe of this file's
  docstring (experiments/context_extension.py uses it on the ablations' small phi)."""
  trained = int(c.data.seq_len)
  length = STRETCH * trained
  c.data.seq_len = length
  c.model.max_position_embeddings = length
  c.model.rope_scaling = rope_scaling_for(kind, c.model, trained)
  c.train.update(steps=steps, tokens=0, batch_size=max(1, c.train.batch_size // STRETCH),
                 eval_every=eval_every, save_every=save_every)
  c.optim.update(lr=lr)
  c.curriculum.lr.update(schedule="cosine", warmup_steps=min(10, steps // 10),
                         min_ratio=0.1)
  c.curriculum.seq_warmup.update(enabled=True, start=trained, max=0, duration=0.3,
                                 duration_unit="fraction", buckets="pow2", mode="truncate")
  return c


def rope_scaling_for(kind: str, model, trained: int):
  """The ``model.rope_scaling`` dict of ``kind`` stretching ``trained`` positions by
  STRETCH (None for ``none``)."""
  if kind == "none":
    return None
  if kind == "linear":
    return {"type": "linear", "factor": float(STRETCH),
            "original_max_position_embeddings": trained}
  yarn = {"type": "yarn", "factor": float(STRETCH), "original_max_position_embeddings": trained}
  if kind == "yarn":
    return yarn
  head_dim = model.head_dim or model.hidden_size // model.num_heads
  rotary_dim = int(head_dim * model.partial_rotary_factor)
  canonical = scaling.canonical(yarn, rotary_dim=rotary_dim, bad=_never,
                                max_positions=model.max_position_embeddings)
  stretch = (scaling.inv_frequencies(rotary_dim, model.rope_theta)
             / scaling.yarn_inv_frequencies(rotary_dim, model.rope_theta, canonical))
  return {"type": "longrope", "short_factor": [1.0] * (rotary_dim // 2),
          "long_factor": [round(float(s), 6) for s in stretch], "factor": float(STRETCH),
          "original_max_position_embeddings": trained}


def _never(field, message):
  raise AssertionError(f"{field}: {message}")
