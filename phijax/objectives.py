"""What a run trains for (``train.objective``): the data its steps and evaluations read,
the extra inputs of its step, and how its held-out score is read out. The training
loop calls these pieces and knows no objective by name.

- ``lm`` (default): next-token prediction on the data mixture; held-out loss,
  perplexity and bits per byte beside gzip -9.
- ``dpo`` (Rafailov et al. 2023): preference pairs from one ``preferences`` source, a
  frozen reference model (``train.reference``, default the warm start
  ``train.init_from``); held-out DPO loss, reward accuracy and margin.
"""

from __future__ import annotations

import math

import jax

from phijax import checkpoint, data
from phijax.config_files import ConfigError
from phijax.evals import perplexity
from phijax.train_step import BATCH_KEYS, PAIR_KEYS, device_batch

# Every process reads the global stream (process_index=0 of 1) and device_batch puts
# each process's shards on its devices: N processes train on exactly the rows, in the
# order, one process would. The cost: each host builds the whole global batch.
WHOLE = dict(process_index=0, process_count=1)


class LanguageModeling:
  step_args = ()  # the train step's inputs after (state, batch, lr)
  log_keys = ()  # the step's own metrics that go into metrics.jsonl
  batch_keys = BATCH_KEYS  # what of a batch goes to the devices

  def __init__(self, config, tok, fns):
    self.config, self.tok, self.fns = config, tok, fns

  def train_iterator(self, stage_plan, state=None):
    t = self.config.train
    it = data.make_train_iterator(self.config.data, self.tok, batch_size=t.batch_size,
                                  seed=t.seed, weights=stage_plan.weights,
                                  stage=stage_plan.stage, **WHOLE)
    if state is not None:
      it.set_state(state)
    return it

  def eval_batches(self, num_batches):
    return data.make_eval_batches(self.config.data, self.tok,
                                  batch_size=self.config.train.batch_size,
                                  num_batches=num_batches, **WHOLE)

  def evaluate(self, params, batches) -> dict:
    return perplexity.evaluate(self.fns, params, batches)

  def describe(self, ev) -> str:
    return f"{ev['eval_bpb']:.3f} bits/byte over {int(ev['eval_tokens']):,} held-out tokens"

  def baseline(self) -> tuple[dict, str]:
    gz = perplexity.gzip_bits_per_byte(data.heldout_documents(self.config.data))
    return {"gzip_bpb": gz}, f"gzip baseline: gzip -9 {gz:.3f} bits/byte on the same held-out text"

  def summary(self, ev, extra) -> str:
    return (f"held-out loss {ev['eval_loss']:.4f}, ppl {ev['eval_ppl']:.2f}, "
            f"{ev['eval_bpb']:.3f} bits/byte (gzip -9: {extra['gzip_bpb']:.3f} bits/byte) "
            f"over {int(ev['eval_tokens']):,} held-out tokens")


class DirectPreference(LanguageModeling):
  """DPO: the step takes the reference parameters, loaded once and sharded like the
  model's."""

  log_keys = ("reward_margin", "reward_accuracy")
  batch_keys = PAIR_KEYS

  def __init__(self, config, tok, fns):
    super().__init__(config, tok, fns)
    from phijax.data import preferences
    self.preferences = preferences
    self.source = preferences.preference_source(config.data)
    t = config.train
    reference = t.reference or t.init_from
    if not reference:
      raise ConfigError("train.objective='dpo' needs a reference model: set "
                        "train.init_from (the model to tune, also the reference) or "
                        "train.reference")
    abstract = jax.eval_shape(fns.init.jitted, jax.random.key(0)).params
    params = checkpoint.load_init_params(reference, abstract)
    self.reference = jax.device_put(params, fns.state_shardings.params)
    self.step_args = (self.reference,)

  def train_iterator(self, stage_plan, state=None):
    t = self.config.train
    it = self.preferences.PairIterator(self.source, self.tok, batch_size=t.batch_size,
                                       seq_len=self.config.data.seq_len, seed=t.seed)
    if state is not None:
      it.set_state(state)
    return it

  def eval_batches(self, num_batches):
    return self.preferences.eval_pair_batches(
        self.source, self.tok, batch_size=self.config.train.batch_size,
        seq_len=self.config.data.seq_len, num_batches=num_batches)

  def evaluate(self, params, batches) -> dict:
    sums = {}
    for b in batches:
      out = self.fns.eval_step(params, device_batch(b, self.fns.batch_sharding,
                                                    keys=PAIR_KEYS), self.reference)
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + float(v)
    n = max(sums["count"], 1.0)
    return {"eval_loss": sums["nll_sum"] / n,
            "eval_reward_accuracy": sums["reward_accuracy"] / n,
            "eval_reward_margin": sums["reward_margin"] / n, "eval_pairs": int(sums["count"])}

  def describe(self, ev) -> str:
    return (f"DPO loss {ev['eval_loss']:.4f}, reward accuracy "
            f"{ev['eval_reward_accuracy']:.3f}, margin {ev['eval_reward_margin']:.3f} over "
            f"{ev['eval_pairs']:,} held-out pairs")

  def baseline(self):
    return {}, f"a policy equal to its reference scores DPO loss ln 2 = {math.log(2):.4f}"

  def summary(self, ev, extra) -> str:
    return "held-out " + self.describe(ev)


def make(config, tok, fns):
  return {"lm": LanguageModeling, "dpo": DirectPreference}[config.train.objective](
      config, tok, fns)
