"""lima_sft: supervised fine-tuning with the LIMA recipe (Zhou et al. 2023, "LIMA: Less
Is More for Alignment"): a pretrained model, a small set of prompt / response pairs,
several epochs, the best epoch kept.

    python -m phijax.data.exercises --split=train --out=data/exercises.jsonl
    python -m phijax.train --config=configs/lima_sft.py --workdir=runs/lima \\
        --config.train.init_from=runs/tiny --config.data.sources.sft.path=data/exercises.jsonl

The first command writes phi-1-style exercises from the standard library's training
files (signature + docstring -> body) as ``{"prompt", "response"}`` records; any JSONL
of such records or of ``{"messages": [...]}`` conversations works. ``init_from`` is a
run, a phijax parameter directory or a Hugging Face directory of the same architecture
(tiny's here; change ``model.*`` for another), whose tokenizer is used.

The paper (LLaMa 65B, 1,000 examples): AdamW b1 0.9, b2 0.95, weight decay 0.1, no
warmup, LR 1e-5 decaying linearly to 1e-6, batch 32, 15 epochs, text cut at 2048
tokens, residual dropout rising linearly from 0 at the bottom layer to 0.3 at the top
(0.2 for the smaller models), an end-of-turn token distinct from end-of-text, and a
checkpoint picked between epochs 5 and 10 on a 50-example development set.

Kept as is: the optimizer and its betas and decay, no warmup, the linear decay to a
tenth of the peak, the dropout rule (the smaller models' 0.2), the end-of-turn token
(the ``plain`` chat template), loss on responses only. Scaled for the default tiny
model (configs/tiny.py, 2.9M parameters): LR 1e-4 -> 1e-5 (tiny pretrains at 2e-2;
1e-5 barely moves it), batch 16 of 256 tokens (tiny pretrains on 128), 10 epochs, and
the development set is the source's held-out 5% (by a hash of each record), evaluated
after every epoch; the best checkpoint by held-out loss on the responses is kept in
``runs/lima/best/`` (``train.keep_best``).
``configs/lima_sft.py:runlocal`` is a smoke run. Expect about a minute per epoch of
the 3,363 exercises on a 2-core CPU.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config, exercises as data_exercises


def get_config(arg=None):
  c = tiny.get_config()  # the default run's shape: train.init_from=runs/tiny loads into it
  c.data.sources = {"sft": data_config.source("sft", "", template="plain")}
  c.data.seq_len = 256  # exercises are longer than tiny's pretraining rows
  recipe(c, lr=1e-4)
  c.train.update(epochs=10, batch_size=16, keep_best=1, best_metric="eval_loss",
                 eval_batches=0, final_eval_batches=0, save_every=0, samples=0, log_every=5)
  c = base.finish(c, arg)
  if "runlocal" in base.check_arg(arg, base.RUN_ARGS):
    c.train.epochs = 1  # epochs set the steps: one pass is the smoke run
  return c


def recipe(c, *, lr: float):
  """LIMA's optimisation on config ``c``: residual dropout rising to 0.2 at the top
  layer, AdamW (0.9, 0.95, weight decay 0.1, clip 1), no warmup, linear decay to a
  tenth of ``lr``. experiments/exercise_sft.py and lora_vs_full.py fine-tune with it."""
  c.model.update(resid_pdrop=0.2, resid_pdrop_schedule="linear")
  c.optim.update(name="adamw", lr=lr, b1=0.9, b2=0.95, weight_decay=0.1, clip=1.0)
  c.curriculum.lr.update(schedule="linear", warmup_steps=0, min_ratio=0.1)
  return c


def exercise_pretrain(*, steps: int, lr: float, exercises: int):
  """The start experiments/exercise_sft.py and lora_vs_full.py fine-tune from: the
  ablations' small phi on the stdlib for ``steps`` of 8 x 256 tokens (Muon at ``lr``,
  cosine, checkpoints only at the end), with ``exercises`` training-file exercises as an
  SFT source ``exercises`` at weight 0 (a recipe turns it on); every run is scored on
  the stdlib."""
  c = base.small_ablation(tiny.small_phi(), tokens=steps * 8 * 256, batch_size=8,
                          eval_every=0, final_eval_batches=16, log_every=5)
  c.train.save_every_minutes = 0.0  # checkpoints only at the end: the arms are short
  c.optim.lr = lr
  c.curriculum.lr.update(schedule="cosine", warmup_steps=10, min_ratio=0.1,
                         token_based_decay=True)
  path = data_exercises.cached_jsonl("train", "sft", count=exercises)
  c.data.sources.exercises = data_config.source("sft", path, weight=0.0)
  c.data.eval_sources = "stdlib"
  return c
