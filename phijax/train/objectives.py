"""What a run trains for (``train.objective``): the data its steps and evaluations read,
the extra inputs of its step, and how its held-out score is read out. The training
loop calls these pieces and knows no objective by name.

- ``lm`` (default): next-token prediction on the data mixture; held-out loss,
  perplexity and bits per byte beside gzip -9.
- ``dpo`` (Rafailov et al. 2023): preference pairs from one ``preferences`` source, a
  frozen reference model (``train.reference``, default the warm start
  ``train.init_from``); held-out DPO loss, reward accuracy and margin.
- ``lm`` with ``train.token_selection`` > 0 (Rho-1, Lin et al. 2024, selective language
  modelling): the same data, the loss over only that fraction of the tokens, those
  whose loss most exceeds a reference model's (``train.reference``: a model trained on
  clean data, same architecture and tokenizer; there is no default). The log adds the
  loss over all tokens (``lm_loss``), ``selected_fraction`` and ``excess_loss``;
  held-out evaluation stays plain language modelling, so it compares with ``lm`` runs.
  ``train.token_selection_by="random"`` is the control: the same fraction drawn at
  random each step, no reference model (``train.reference`` is not read).
"""

from __future__ import annotations

import math
import os

import jax

from phijax import data
from phijax.convert import weights
from phijax.config_files import ConfigError
from phijax.train import perplexity
from phijax.train.step import BATCH_KEYS, PAIR_KEYS, SELECTIONS, device_batch

# Every process reads the global stream (process_index=0 of 1): N processes train on
# exactly the rows, in the order, one process would. A language-modelling process
# materialises only its rows of each batch (``rows``: phijax.data.hosts); evaluation
# batches (small, fixed) are built whole, and device_batch puts each process's shards
# on its devices.
WHOLE = dict(process_index=0, process_count=1)


def check(config) -> None:
  """The objective's settings, before the run directory is written to."""
  t = config.train
  ratio = t.token_selection
  if not 0.0 <= ratio <= 1.0:  # NaN fails too
    raise ConfigError(f"train.token_selection={ratio} is the fraction of tokens kept: 0 "
                      "(off) or a value in (0, 1]")
  if t.token_selection_by not in SELECTIONS:
    raise ConfigError(f"train.token_selection_by={t.token_selection_by!r}; choose one of "
                      f"{SELECTIONS}")
  if not ratio:
    return
  if t.objective != "lm":
    raise ConfigError(f"train.token_selection (Rho-1) selects tokens of the language-"
                      f"modelling loss; it does not take train.objective={t.objective!r}: "
                      "set train.token_selection=0 or train.objective='lm'")
  if not t.reference and t.token_selection_by == "excess":
    raise ConfigError("train.token_selection needs a reference model: set "
                      "train.reference to a run, params or HF directory of a model trained "
                      "on the data you want to emphasise (same architecture and tokenizer)")


def load_reference(path, fns, what="init_from", vocab_size=None):
  """A frozen model's parameters, loaded once and sharded like the run's. With the
  run's ``vocab_size``, a reference with another vocabulary is an error naming both
  (before the shape check, which would name the embedding)."""
  # A LoRA reference is the model it computes (adapters merged); a LoRA run's own
  # adapter slots then hold zeros (fit_params), which add nothing.
  ref_cfg, params = weights.read_params(path, what, merged=True)
  if vocab_size is not None and ref_cfg.vocab_size != vocab_size:
    raise ConfigError(
        f"{what}: {path} has a vocabulary of {ref_cfg.vocab_size} tokens but this run's "
        f"model has {vocab_size} (model.vocab_size); use a reference trained with this "
        "run's tokenizer and vocabulary size")
  abstract = jax.eval_shape(fns.init.jitted, jax.random.key(0)).params
  params = weights.fit_params(params, abstract, path, what)
  return jax.device_put(params, fns.state_shardings.params)


def data_seed(t) -> int:
  """The seed of the data order: ``train.data_seed``, or ``train.seed`` when unset."""
  return t.seed if t.get("data_seed") is None else t.data_seed


class LanguageModeling:
  step_args = ()  # the train step's inputs after (state, batch, lr)
  log_keys = ()  # the step's own metrics that go into metrics.jsonl
  batch_keys = BATCH_KEYS  # what of a batch goes to the devices

  def __init__(self, config, tok, fns):
    self.config, self.tok, self.fns = config, tok, fns
    # This process's rows of each global batch (None: all of them, one process).
    self.rows = None
    if jax.process_count() > 1:
      from phijax.data import hosts
      self.rows = hosts.sharding_rows(fns.batch_sharding, config.train.batch_size,
                                      config.data.seq_len)
    self.rows_read = 0

  def _count_row(self, source, j):
    self.rows_read += 1

  def train_iterator(self, stage_plan, state=None):
    t = self.config.train
    # Rows read on the random-access path, counted in this process (worker processes,
    # data.workers > 0, count their own).
    count = self._count_row if not self.config.data.workers else None
    if count is None:
      self.rows_read = None  # counted inside the workers: not reported
    it = data.make_train_iterator(self.config.data, self.tok, batch_size=t.batch_size,
                                  seed=data_seed(t), weights=stage_plan.weights,
                                  stage=stage_plan.stage, rows=self.rows, on_row=count,
                                  **WHOLE)
    if state is not None:
      try:
        it.set_state(state)
      except (KeyError, TypeError, IndexError) as e:  # grain's own, on another layout
        raise ValueError(f"the checkpoint's data state does not fit this stream "
                         f"({type(e).__name__}: {e}): resume with the data.workers it was "
                         "saved with") from None
    return it

  def eval_batches(self, num_batches):
    return data.make_eval_batches(self.config.data, self.tok,
                                  batch_size=self.config.train.batch_size,
                                  num_batches=num_batches, **WHOLE)

  def evaluate(self, params, batches) -> dict:
    return perplexity.evaluate(self.fns, params, batches)

  def describe(self, ev) -> str:
    return f"{ev['eval_bpb']:.3f} bits/byte over {int(ev['eval_tokens']):,} held-out tokens"

  def baseline(self, batches) -> tuple[dict, str]:
    """gzip -9 on exactly the bytes the evaluation over ``batches`` scored."""
    raw = perplexity.scored_bytes(batches, self.tok)
    gz = perplexity.gzip_bits_per_byte(raw)
    return {"gzip_bpb": gz}, (f"gzip baseline: gzip -9 {gz:.3f} bits/byte on the same "
                             f"{len(raw):,} held-out bytes")

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
    self.reference = load_reference(reference, fns)
    self.step_args = (self.reference,)
    self.rows = None  # preference pairs: every process builds the whole batch

  def train_iterator(self, stage_plan, state=None):
    t = self.config.train
    it = self.preferences.PairIterator(self.source, self.tok, batch_size=t.batch_size,
                                       seq_len=self.config.data.seq_len,
                                       seed=data_seed(t))
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

  def baseline(self, batches):
    return {}, f"a policy equal to its reference scores DPO loss ln 2 = {math.log(2):.4f}"

  def summary(self, ev, extra) -> str:
    return "held-out " + self.describe(ev)


class SelectiveLanguageModeling(LanguageModeling):
  """Rho-1: language modelling on the tokens whose loss most exceeds the reference
  model's. The step (``train_step.build(token_selection=...)``) takes the reference's
  parameters, loaded once and sharded like the model's; a resumed run loads them
  again (the selection keeps no state of its own). ``token_selection_by="random"``:
  no reference, and no excess loss to log."""

  log_keys = ("lm_loss", "selected_fraction", "excess_loss")

  def __init__(self, config, tok, fns):
    super().__init__(config, tok, fns)
    if config.train.token_selection_by == "random":
      self.log_keys = ("lm_loss", "selected_fraction")
      return
    path = os.path.abspath(os.path.expanduser(config.train.reference))
    check_reference_tokenizer(path, tok)  # the two losses must read the same token ids
    self.reference = load_reference(path, fns, "train.reference",
                                    vocab_size=config.model.vocab_size)
    self.step_args = (self.reference,)


def check_reference_tokenizer(path, tok) -> None:
  """A reference directory that keeps a ``tokenizer.model`` (a run's, or one
  ``python -m phijax.convert`` wrote) must hold the run's tokenizer, byte for byte:
  the same ids must mean the same text for the two losses to compare."""
  ref = os.path.join(path, "tokenizer.model")
  if not os.path.isfile(ref):
    return
  with open(ref, "rb") as f:
    same = f.read() == tok.model_proto
  if not same:
    ours = tok.name or "the run's tokenizer.model"
    raise ConfigError(
        f"train.reference: its tokenizer {ref} differs from this run's ({ours}): token "
        "selection compares the two models' losses on the same token ids; train with "
        f"--config.data.tokenizer.path={ref} (in a new run directory), or use a reference "
        "trained with this run's tokenizer")


def make(config, tok, fns):
  check(config)
  if config.train.objective == "lm" and config.train.token_selection:
    return SelectiveLanguageModeling(config, tok, fns)
  return {"lm": LanguageModeling, "dpo": DirectPreference}[config.train.objective](
      config, tok, fns)
