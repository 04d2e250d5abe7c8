"""The config tree every run is driven by (ml-collections).

``configs/*.py`` start from ``default()`` and change what they need. The tree:

- ``model``: architecture (see ``phijax.model.config.ModelConfig`` for every field),
  ``attention_impl``, ``dtype`` (compute), ``remat``; ``model.lora``: LoRA adapters
  (``rank``, ``alpha``, ``dropout``, ``targets``, ``quantize``: QLoRA's NF4 base;
  ``phijax.model.lora``, ``phijax.model.quant``).
- ``data``: sources, tokenizer, max ``seq_len``, ``workers`` (``phijax.data.config``).
- ``train``: ``steps`` (or ``tokens``), ``batch_size``, ``seed``, ``log_every``,
  ``eval_every``, ``save_every``, ...; ``train.wandb``: optional Weights & Biases
  logging (``project``, ``entity``, ``group``, ``name``, ``tags``, ``mode``; off while
  ``project`` is empty, see ``phijax.train.wandb_log``).
- ``optim``: ``name`` (adamw | adam | sgd | lion | muon | galore), ``lr``, ``b1``,
  ``b2``, ``eps``, ``weight_decay``, ``clip``; ``muon_beta``, ``muon_rms``;
  ``galore_rank``, ``galore_update_every``, ``galore_scale``; ``block_scale``,
  ``mu_dtype``, ``freeze`` (``phijax.train.optim``).
- ``curriculum``: sequence-length warmup, LR schedule, stages (``phijax.train.curriculum``).
- ``mesh``: ``data``, ``fsdp``, ``tensor`` sizes (-1 takes the remaining devices).

Fields are type-locked by ml-collections, so ``--config.train.steps=abc`` and
unknown keys are errors. Every field carries a comment saying what it does: ``--help
--config=NAME`` prints them beside the values (``describe``), and a
test fails for a field without one.
"""

from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict, config_dict

from phijax.config_files import ConfigError, check_arg  # noqa: F401  (re-exported)
from phijax.model.config import ModelConfig


def model_defaults() -> ConfigDict:
  """ModelConfig's fields as a ConfigDict (placeholders keep None overridable)."""
  c = ConfigDict()
  for f in dataclasses.fields(ModelConfig):
    value = f.default
    if value is None:
      value = config_dict.placeholder(_PLACEHOLDER_TYPES.get(f.name, int))
    elif isinstance(value, tuple):
      value = list(value)
    elif dataclasses.is_dataclass(value):  # model.lora: a group of its own
      value = ConfigDict(dataclasses.asdict(value))
    c[f.name] = value
  return c


_PLACEHOLDER_TYPES = {
    "sliding_window": int,
    "rope_scaling": dict,
    "head_dim": int,
    "intermediate_size": int,
}


def default() -> ConfigDict:
  """The full default tree; ``configs/tiny.py`` is the run users start from."""
  from phijax.data import config as data_config  # local: keeps import order simple
  from phijax.train import curriculum

  c = ConfigDict()
  c.model = model_defaults()
  c.data = data_config.defaults()
  c.train = ConfigDict(dict(
      steps=1000,  # optimizer steps (unless tokens or epochs is set)
      tokens=0,  # > 0: train until this many tokens instead of `steps`
      # > 0: a wall-clock budget (seconds from the start, tokenizer and compilation
      # included): after timing a few steps the run fixes its number of steps so that it
      # ends, LR decayed, within the budget; steps/tokens above are the plan until then
      # (phijax/train/pieces/time_budget.py). A resume keeps the steps fixed.
      time_budget_s=0.0,
      # > 0: train this many passes over the sources' train split instead (sets steps
      # from the packed rows of one pass) and evaluate once per epoch (eval_every).
      epochs=0,
      batch_size=32,  # rows per optimizer step, over every device and micro-batch
      microbatches=1,  # gradient accumulation
      seed=0,  # initialisation, dropout and the samples (and data order: data_seed)
      # The data order (which rows each step sees): None = seed. Set it to vary the
      # initialisation and the data order separately (h.seeds(n, vary="init"/"data")).
      data_seed=config_dict.placeholder(int),
      log_every=10,  # a train-loss row every this many steps
      eval_every=250,  # a held-out evaluation every this many steps; 0 = the final only
      eval_batches=16,  # periodic evaluation; 0 = the whole held-out split
      final_eval_batches=0,  # the final evaluation; 0 = the whole held-out split
      # Also evaluate before the first step (logged at step 0): None = only on a warm
      # start (init_from), where the starting loss is what a fine-tune is compared to.
      eval_at_start=config_dict.placeholder(bool),
      save_every=250,  # a checkpoint every this many steps (0 = off), and the last one
      save_every_minutes=0.0,  # also one every this many minutes of wall time (0 = off)
      keep_last=2,  # checkpoints kept (the newest); keep_best ones come on top
      keep_best=0,  # > 0: also keep this many checkpoints with the best eval metric
      best_metric="eval_loss",  # what keep_best ranks by (lowest first)
      # "lm" (next-token prediction) or "dpo" (preference pairs from one "preferences"
      # source against a frozen reference model; phijax.train.objectives).
      objective="lm",
      dpo_beta=0.1,  # DPO's beta: the strength of the pull toward the reference
      # The frozen reference model (a run, params or HF dir) of dpo ("" = init_from) and
      # of token_selection (required: a model trained on the data to emphasise).
      reference="",
      # Rho-1 (Lin et al. 2024), objective "lm": > 0 trains on this fraction (0, 1] of
      # each batch's tokens, those whose loss most exceeds the reference model's (per
      # micro-batch with microbatches > 1); 0 = off, every token.
      token_selection=0.0,
      # What token_selection keeps: "excess" (Rho-1: the highest loss minus the
      # reference's) or "random" (its control: the same fraction drawn uniformly each
      # step, seeded by train.seed; no reference model is read).
      token_selection_by="excess",
      # Warm start params: a run dir, a phijax params dir or an HF dir; its
      # tokenizer.model, if it has one, is the run's tokenizer (data.tokenizer.path "").
      init_from="",
      max_nonfinite=5,  # stop after this many non-finite steps in a row
      # > 0: every this many steps, log the top Hessian eigenvalue of the training loss
      # on a fixed batch (power iteration, sharpness_iters Hessian-vector products)
      # beside 2/lr, and Adam's preconditioned one (phijax.train.probes).
      sharpness_every=0,
      sharpness_iters=20,  # power-iteration steps of each sharpness probe
      peak_flops=0.0,  # per-device peak FLOP/s for MFU; 0 = data sheet / measured
      z_loss=0.0,  # PaLM's auxiliary loss on log Z squared (1e-4 in PaLM); 0 = off
      samples=4,  # samples written to samples.txt at the end (seeded by train.seed)
      # Their prompts: "auto" (code prompts for a code corpus, else the first words of
      # held-out documents), "code", "heldout", or your own separated by "||".
      sample_prompts="auto",
      sample_tokens=96,  # new tokens per sample at most
      sample_temperature=0.8,  # 0 = greedy (a small model's greedy text loops)
      sample_top_k=0,  # > 0: draw from the k most likely tokens only
      sample_top_p=0.95,  # nucleus: the fewest tokens holding this probability
      progress=True,  # a bar on a terminal; false (or no tty): a plain line per log_every
      aot_compile=True,  # compile every sequence-length bucket's step at start-up
      compile_cache_dir="~/.cache/phijax/xla",  # JAX persistent compilation cache; "" = off
      # Weights & Biases (phijax.train.wandb_log; pip install 'phijax[wandb]'): off while
      # project is empty. name defaults to the run directory's name; tags are
      # comma-separated; mode is W&B's (online | offline | disabled), empty = WANDB_MODE
      # or W&B's default. A sweep fills in group (the sweep) and name (the arm).
      wandb=ConfigDict(dict(
          project="",  # the W&B project; "" = W&B logging off
          entity="",  # the W&B team or user; "" = your default
          group="",  # runs grouped together (a sweep sets its name)
          name="",  # the run's name; "" = the run directory's
          tags="",  # comma-separated
          mode="",  # online | offline | disabled; "" = WANDB_MODE or W&B's default
      )),
  ))
  c.optim = ConfigDict(dict(
      name="adamw",  # adamw | adam | sgd | lion | muon | galore
      lr=1e-3,  # peak learning rate; curriculum.lr shapes it over the run
      b1=0.9,  # Adam's first-moment decay (Lion: the update's mix; sgd: momentum, 0 = none)
      b2=0.95,  # Adam's second-moment decay (Lion: its momentum's decay)
      eps=1e-8,  # Adam's epsilon
      weight_decay=0.1,  # decoupled (AdamW's); not on norms and biases
      clip=1.0,  # global gradient-norm clip; 0 = off
      muon_beta=0.95, muon_rms=0.2,  # muon_*: optim.name="muon" only
      # galore_*: optim.name="galore" only. GaLore's paper pretrains LLaMA with rank
      # 128-512 of hidden 512-2048, update_every 200 and scale 0.25.
      galore_rank=128, galore_update_every=200, galore_scale=0.25,  # rank, refresh, scale
      # The block matrices' update (before weight decay) times this, for any optimizer:
      # galore_scale without GaLore's projection (adamw at block_scale=galore_scale has
      # GaLore's per-group learning rates). 1 = off.
      block_scale=1.0,
      # The first moment (momentum) in this dtype, e.g. "bfloat16": a quarter less
      # optimizer memory for Adam, half for Muon, Lion and SGD momentum. "" = float32
      # like the parameters. Adam's second moment stays float32 (bf16 loses small v).
      mu_dtype="",
      # Comma-separated regexes over parameter paths ("embed", "layers_0/attn/.*"):
      # matching parameters get no update and no optimizer state (Kumar et al. 2022
      # freeze the embedding when fine-tuning with SGD). A regex matching nothing is
      # an error.
      freeze=""))
  c.curriculum = curriculum.defaults()
  c.mesh = ConfigDict(dict(
      data=-1,  # devices on the data axis (batch rows); -1 = the ones left
      fsdp=1,  # devices sharding parameters and optimizer state (and batch rows)
      tensor=1,  # devices splitting heads and MLP columns (tensor parallelism)
      rules="default",  # logical-to-mesh axis rules: a preset or name=axis,... (sharding.py)
      # Multi-host: call jax.distributed.initialize(). Also on whenever JAX_NUM_PROCESSES
      # is set (launch/local.py sets it with JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID);
      # otherwise the cluster comes from the environment (SLURM, Cloud TPU, MPI).
      distributed=False,
      # A process that stops sending heartbeats for this long (it died, or its host
      # did) makes every other process abort with an error instead of waiting in a
      # collective forever: the bound on noticing a dead peer (JAX's default is 100).
      heartbeat_timeout_s=100,
      # How long process 0 waits for all the others to connect at start-up.
      initialization_timeout_s=300,
      # How long a finished process waits for the others at exit.
      shutdown_timeout_s=300,
  ))
  return c


# The ``:ARG`` words every config accepts, and what each does to the config.
RUN_ARGS = ("runlocal",)


def finish(c: ConfigDict, arg: str | None, accepted=RUN_ARGS) -> ConfigDict:
  """Applies a config file's ``:arg`` (``configs/tiny.py:runlocal``) and returns ``c``.

  Every ``get_config`` ends with ``return base.finish(c, arg)``, so an unknown argument
  is an error listing the accepted ones instead of being ignored. A config with
  arguments of its own handles them first and passes them in ``accepted``.
  """
  words = check_arg(arg, tuple(accepted))
  check_fields(c)
  if "runlocal" in words:
    shrink_for_cpu(c)
  return c


# Groups whose keys are the user's names (sources, stages) or free-form (rope_scaling).
OPEN_GROUPS = ("data.sources", "curriculum.stages", "model.rope_scaling")


def check_fields(c: ConfigDict, reference: ConfigDict | None = None, path: str = "") -> None:
  """Every field of ``c`` exists in ``default()``: ``c.train.stepz = 800`` in a config
  file is an error naming the nearest field, not a silently ignored setting."""
  import difflib

  reference = default() if reference is None else reference
  for key, value in c.items():
    where = f"{path}.{key}" if path else key
    if where in OPEN_GROUPS:
      continue
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference.keys()), n=2)
      hint = (f"did you mean {' or '.join(f'{path}.{k}' if path else k for k in close)}?"
              if close else f"{path or 'the config'} has: {', '.join(sorted(reference))}")
      raise ConfigError(f"config field {where!r} does not exist; {hint} (new fields go "
                        "into phijax/config.py's default(), with a comment)")
    if isinstance(value, ConfigDict) and isinstance(reference[key], ConfigDict):
      check_fields(value, reference[key], where)


def small_ablation(c: ConfigDict, *, tokens: int, batch_size: int, eval_every: int,
                   final_eval_batches: int = 32, log_every: int = 1) -> ConfigDict:
  """The small phi the ablations in experiments/ train (hidden 128, 2 layers, a
  2048-token vocabulary: ~0.9M parameters, so many arms fit minutes on 2 cores), on a
  token budget, every arm resumable and cheap (a checkpoint a minute, one kept, no
  samples) and finally evaluated on the same ``final_eval_batches`` held-out rows."""
  c.model.update(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
                 vocab_size=2048)
  c.data.tokenizer.vocab_size = 2048
  c.data.seq_len = 256
  c.train.update(
      steps=0, tokens=tokens, batch_size=batch_size,
      log_every=log_every,  # 1: every step's loss and grad norm (spikes are single steps)
      eval_every=eval_every, eval_batches=4, final_eval_batches=final_eval_batches,
      save_every=0, save_every_minutes=1.0, keep_last=1, samples=0, progress=False)
  return c


def shrink_for_cpu(c: ConfigDict) -> ConfigDict:
  """The ``runlocal`` argument of every config: same architecture family and
  features (rotary fraction, GQA ratio, window, linear / YaRN scaling), CPU smoke-test
  size."""
  m = c.model
  ratio = max(1, m.num_heads // (m.num_kv_heads or m.num_heads))
  m.num_heads = 4
  m.num_kv_heads = max(1, 4 // ratio) if ratio > 1 else 0
  m.hidden_size = 64
  m.head_dim = None
  m.intermediate_size = 128
  m.num_layers = 2
  m.vocab_size = c.data.tokenizer.vocab_size if "tokenizer" in c.data else 8192
  if m.sliding_window is not None:
    m.sliding_window = 32
  rs = m.rope_scaling
  if rs is not None and (rs.get("type") or rs.get("rope_type") or "longrope") == "longrope":
    raise ValueError("runlocal does not shrink LongRoPE configs (factor lists depend on "
                     "head_dim); drop rope_scaling first, or set it after shrinking")
  c.data.seq_len = 64
  c.train.steps = 20
  c.train.tokens = 0  # a token budget would override the 20 steps
  c.curriculum.lr.warmup_steps = min(c.curriculum.lr.warmup_steps, c.train.steps // 10)
  c.train.batch_size = 8
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.save_every = 10
  c.train.eval_batches = 2
  return c


# --- what each field means: read from the comments beside it (--help --config) ------

def describe(config: ConfigDict, spec: str = "") -> str:
  """``config``'s tree, one field a line: value, the default where it differs from
  ``default()``, and the field's meaning, read from the comment beside it in the code
  that defines it (this file, ``phijax/data/config.py``, ``phijax/train/curriculum.py``,
  ``ModelConfig``), so the help cannot disagree with the source."""
  from phijax import config_files
  return config_files.describe(config, spec, default(), field_meanings())


def field_meanings() -> dict[str, str]:
  """``{dotted field: one-line meaning}`` from the defining code's comments and the
  data source helpers' ``Args:`` docstrings."""
  import inspect

  from phijax.data import config as data_config
  from phijax.model.config import LoraConfig
  from phijax.train import curriculum
  out = {}
  out.update(_comments(inspect.getsource(ModelConfig), "model"))
  out.update(_comments(inspect.getsource(LoraConfig), "model.lora"))
  out.update(_comments(inspect.getsource(default), ""))
  out.update(_comments(inspect.getsource(data_config.defaults), "data"))
  out.update(_comments(inspect.getsource(curriculum.defaults), "curriculum"))
  for helper in (data_config.arithmetic, data_config.source):  # source() wins a tie
    for names, meaning in _args(inspect.getdoc(helper)).items():
      for name in names:
        out[f"data.sources.*.{name}"] = meaning
  return {k: v for k, v in out.items() if v}


def _comments(source: str, prefix: str) -> dict[str, str]:
  """Meanings of the fields ``source`` defines: ``name=value`` keywords (nested in
  ``ConfigDict(dict(...))``, under ``c.group = ...`` assignments) and ``name: type =
  value`` class fields; each takes the comment at the end of its line, else the
  comment lines right above it."""
  import ast
  import io
  import textwrap
  import tokenize

  source = textwrap.dedent(source)
  comments, code_lines, first_col = {}, set(), {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      comments[tok.start[0]] = (tok.string.lstrip("#").strip(), tok.start[1])
    elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                          tokenize.DEDENT, tokenize.ENDMARKER):
      code_lines.add(tok.start[0])
      first_col.setdefault(tok.start[0], tok.start[1])

  def meaning(first: int, last: int, col: int) -> str:
    if last in comments and last in code_lines:
      return _one_line(comments[last][0])
    if col != first_col.get(first):  # not the line's first field: the comment above
      return ""                      # is about that one
    above, line = [], first - 1
    while line in comments and line not in code_lines:
      above.insert(0, comments[line][0])
      line -= 1
    return _one_line(" ".join(above))

  out = {}

  def visit(node, path):
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      out[_join(path, node.target.id)] = meaning(node.lineno, node.end_lineno,
                                                 node.col_offset)
      return
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target = node.targets[0]
      if isinstance(target, ast.Attribute):  # c.train = ConfigDict(dict(...))
        visit(node.value, _join(path, target.attr))
        return
    if isinstance(node, ast.keyword) and node.arg:
      where = _join(path, node.arg)
      out[where] = meaning(node.lineno, node.end_lineno, node.col_offset)
      visit(node.value, where)
      return
    for child in ast.iter_child_nodes(node):
      visit(child, path)

  visit(ast.parse(source), prefix)
  return out


def _args(doc: str) -> dict[tuple[str, ...], str]:
  """A Google-style ``Args:`` section: ``{(name, ...): one-line meaning}``."""
  import re
  out, names, text, inside = {}, None, [], False
  for line in (doc or "").splitlines():
    if line.strip() == "Args:":
      inside = True
      continue
    if not inside:
      continue
    m = re.match(r"^  ([\w, ]+):\s*(.*)$", line)
    if m:
      if names:
        out[names] = _one_line(" ".join(text))
      names, text = tuple(n.strip() for n in m.group(1).split(",")), [m.group(2)]
    elif line.startswith("    ") and names:
      text.append(line.strip())
    elif line.strip():
      break
  if names:
    out[names] = _one_line(" ".join(text))
  return out


def _join(path: str, name: str) -> str:
  return f"{path}.{name}" if path else name


def _one_line(text: str, limit: int = 110) -> str:
  """The first sentence of ``text``, cut to ``limit`` characters at a word."""
  import re
  text = " ".join(text.replace("``", "").split())
  # A sentence ends at ". " before a capital, not after "et al." or "e.g.".
  first = re.split(r"(?<!\bal\.)(?<!\be\.g\.)(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
  if len(first) <= limit:
    return first
  return first[:limit].rsplit(" ", 1)[0] + " ..."
