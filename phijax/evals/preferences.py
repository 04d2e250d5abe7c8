"""Preference pairs a run never trained on, scored by the model and by DPO's implicit
reward against a reference: what DPO (``train.objective="dpo"``) is meant to raise,
measured where it can be compared with any other model (``experiments/exercise_dpo.py``).

Each response is rendered as DPO trains on it (``phijax.data.preferences.render_pair``:
the prompt, then the response and its end-of-turn, which carry the loss), uncut; logp
is the summed log-probability of those response tokens given the prompt. ``scores``:

- ``pref_accuracy``: the share of pairs with logp(chosen) > logp(rejected), the
  model's own preference, defined for every model (the one DPO starts from too);
  ``logp_margin``: the mean logp(chosen) - logp(rejected) (nats); ``logp_chosen``: the
  mean logp(chosen);
- with a reference: DPO's implicit reward r = beta (logp - logp_reference),
  ``reward_accuracy`` (r_chosen > r_rejected, ties wrong, as the training log counts
  them), ``reward_margin`` (mean r_chosen - r_rejected) and ``dpo_loss`` (mean
  -log sigmoid of that margin: ln 2 for a policy equal to its reference).
"""

from __future__ import annotations

import json
import types

import numpy as np


def read_pairs(path: str) -> list[dict]:
  """The ``{"prompt", "chosen", "rejected"}`` records of a JSON Lines file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def pair_logps(m, pairs, template: str = "plain", batch_size: int = 16):
  """``(chosen [N], rejected [N])``: summed response log-probabilities (nats) of each
  pair under the loaded model ``m`` (``phijax.evals.model_source.Loaded``)."""
  from phijax.data import preferences
  from phijax.evals import exercises
  from phijax.model import decode
  cap = m.cfg.max_position_embeddings
  rendered = [preferences.render_pair(p, m.tokenizer, template, 1 << 30) for p in pairs]
  too_long = sum(len(ids) > cap for pair in rendered for ids, _ in pair)
  if too_long:  # cutting them would score a different response than the pair's
    raise ValueError(f"{too_long} responses of {len(pairs)} pairs are longer than the "
                     f"model's context ({cap} tokens)")
  gen = decode.Generator(m.cfg, m.params)
  return tuple(-exercises.response_nll(
      gen, [types.SimpleNamespace(ids=pair[side][0].tolist(), target_mask=pair[side][1][1:])
            for pair in rendered], batch_size) for side in (0, 1))


def scores(policy, reference=None, beta: float = 0.1) -> dict:
  """The module docstring's numbers from ``pair_logps`` of the policy (and of its
  reference, for the reward columns)."""
  c, r = (np.asarray(x, np.float64) for x in policy)
  out = {"pref_accuracy": float(np.mean(c > r)), "logp_margin": float(np.mean(c - r)),
         "logp_chosen": float(np.mean(c))}
  if reference is not None:
    c0, r0 = (np.asarray(x, np.float64) for x in reference)
    margin = beta * ((c - c0) - (r - r0))
    out.update(reward_accuracy=float(np.mean(margin > 0)),
               reward_margin=float(np.mean(margin)),
               dpo_loss=float(np.mean(np.logaddexp(0.0, -margin))))
  return out


def score_run(run_dir: str, pairs_path: str, *, reference_dir: str | None = None,
              beta: float = 0.1, template: str = "plain") -> dict:
  """``scores`` of a run directory's final model on the pairs of ``pairs_path``,
  against ``reference_dir``'s (a run directory) when given."""
  from phijax.evals import model_source
  pairs = read_pairs(pairs_path)
  logps = lambda d: pair_logps(model_source.load_run(d), pairs, template)
  return scores(logps(run_dir), logps(reference_dir) if reference_dir else None, beta)
