"""Where a model comes from, for the commands that use one (generate, evaluate): a run
directory, a phijax parameter directory or a Hugging Face directory, each with the
tokenizer that belongs to it.

    parser = cli.ArgumentParser(...)
    model_source.add_args(parser)          # --workdir | --params_dir | --hf_dir, --step
    m = model_source.load(args)            # Loaded(cfg, params, tokenizer, ...)

Tokenizers: a run keeps ``tokenizer.model`` (sentencepiece); ``phijax.convert`` copies
it into the directories it writes. A Hugging Face directory without it is read with
``transformers.AutoTokenizer`` (the ``hf`` extra). A model without a tokenizer is an
error naming the file that is missing: its ids would be meaningless text.
"""

from __future__ import annotations

import dataclasses
import os

from phijax import cli, files

TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json", "vocab.json", "generation_config.json")


@dataclasses.dataclass
class Loaded:
  cfg: object  # ModelConfig
  params: dict
  tokenizer: object  # .encode(text) -> ids, .decode(ids) -> text, .eos_id
  source: str  # "run DIR, step N", "phijax parameters DIR", "Hugging Face DIR"
  directory: str  # where evals/ goes by default
  step: int | None = None
  run_config: dict | None = None  # a run's config.json (its data sources, batch size)


def add_args(parser) -> None:
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--workdir", type=cli.existing_dir, metavar="RUN",
                     help="a run directory (python -m phijax.train --workdir=RUN)")
  group.add_argument("--params_dir", "--phijax_dir", dest="params_dir",
                     type=cli.existing_dir, metavar="DIR",
                     help="a phijax parameter directory (python -m phijax.convert --out)")
  group.add_argument("--hf_dir", type=cli.existing_dir, metavar="DIR",
                     help="a local Hugging Face Phi checkpoint (config.json + weights)")
  parser.add_argument("--step", type=cli.positive_int, default=None,
                      help="with --workdir: the checkpoint step (default: the newest)")


def load(args) -> Loaded:
  """The model (host numpy parameters) and tokenizer that ``args`` name."""
  if args.step is not None and not args.workdir:
    raise cli.UsageError("--step picks a checkpoint of --workdir; give --workdir=RUN")
  if args.workdir:
    return load_run(args.workdir, args.step)
  if args.params_dir:
    return load_params_dir(args.params_dir)
  return load_hf_dir(args.hf_dir)


def load_run(run: str, step: int | None = None) -> Loaded:
  from phijax.convert import weights
  run = os.path.abspath(run)
  tok = _sentencepiece(run, "the run writes it when training starts")
  cfg, params, step = weights.load_run_params(run, step)
  _check_vocab(tok, cfg, run)
  run_config = None
  config_path = os.path.join(run, "config.json")
  if os.path.isfile(config_path):
    run_config = files.read_json_object(config_path, "a phijax run config")
  _check_params(cfg, params, run)
  return Loaded(cfg, params, tok, f"run {run}, step {step}", run, step, run_config)


def load_params_dir(directory: str) -> Loaded:
  from phijax.convert import weights
  from phijax.model import params_io
  directory = os.path.abspath(directory)
  if weights.is_adapters_dir(directory):  # LoRA adapters alone: over the base they name
    cfg, params = weights.read_adapters(directory, "--params_dir")
  else:
    cfg, params = params_io.load_params(directory)
  tok = _sentencepiece(directory, "python -m phijax.convert --run=RUN copies the run's")
  _check_vocab(tok, cfg, directory)
  _check_params(cfg, params, directory)
  return Loaded(cfg, params, tok, f"phijax parameters {directory}", directory)


def load_hf_dir(directory: str) -> Loaded:
  from phijax import convert
  directory = os.path.abspath(directory)
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    raise cli.UsageError(f"{directory} is a phijax run directory; use --workdir={directory}")
  if os.path.isfile(os.path.join(directory, TOKENIZER_FILE)):
    tok = _sentencepiece(directory, "")
  else:
    tok = HFTokenizer.load(directory)
  cfg, params = convert.from_hf(directory)
  _check_vocab(tok, cfg, directory)
  _check_params(cfg, params, directory)
  return Loaded(cfg, params, tok, f"Hugging Face {directory}", directory)


def _sentencepiece(directory: str, how: str):
  from phijax.data.tokenizer import Tokenizer
  path = os.path.join(directory, TOKENIZER_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory} has no {TOKENIZER_FILE}: without its tokenizer "
                            f"the model's ids cannot be read as text ({how})")
  return Tokenizer.load(path)


def _check_vocab(tok, cfg, where: str) -> None:
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"the tokenizer in {where} has {tok.vocab_size} tokens but the model "
                     f"only {cfg.vocab_size}: not this model's tokenizer")


def _check_params(cfg, params, where: str) -> None:
  """Every parameter ``cfg`` needs, at its shape: a directory whose config and
  weights disagree is an error naming the parameter, not a failure inside a jit."""
  import jax

  from phijax import model
  from phijax.convert import weights
  abstract = jax.eval_shape(lambda: model.init_params(cfg, jax.random.key(0)))
  weights.check_shapes(params, abstract, where, what="the model")


class HFTokenizer:
  """A ``transformers`` tokenizer behind phijax's three-method interface.

  ``encode`` adds the special tokens the tokenizer is configured to add (phi-3's BOS),
  as ``tokenizer(text)`` does in transformers.
  """

  def __init__(self, tok, eos_id: int | None):
    self._tok = tok
    self.eos_id = eos_id
    self.vocab_size = len(tok)

  @classmethod
  def load(cls, directory: str) -> "HFTokenizer":
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    if not any(os.path.isfile(os.path.join(directory, n)) for n in names):
      raise FileNotFoundError(f"{directory} has no tokenizer ({TOKENIZER_FILE} or "
                              "tokenizer.json): without it the model's ids cannot be "
                              "read as text; copy the checkpoint's tokenizer files there")
    try:
      import transformers
    except ImportError:
      raise cli.UsageError(f"reading the Hugging Face tokenizer in {directory} needs "
                           "transformers: pip install 'phijax[hf]'") from None
    # transformers' errors do not name the file: each JSON file is checked first.
    for name in HF_TOKENIZER_JSON:
      if os.path.isfile(os.path.join(directory, name)):
        files.read_json(os.path.join(directory, name), "a Hugging Face tokenizer file")
    with files.reading(directory, "a Hugging Face tokenizer directory"):
      tok = transformers.AutoTokenizer.from_pretrained(directory)
    eos = tok.eos_token_id
    config_path = os.path.join(directory, "config.json")
    if eos is None and os.path.isfile(config_path):
      eos = files.read_json_object(config_path, "a Hugging Face model config").get(
          "eos_token_id")
      eos = eos[0] if isinstance(eos, list) else eos
    return cls(tok, eos)

  def encode(self, text: str) -> list[int]:
    return list(self._tok(text)["input_ids"])

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)
