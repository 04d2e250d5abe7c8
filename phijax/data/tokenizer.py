"""Sentencepiece tokenizer for code: exact round trip, special tokens, training, cache.

Sentencepiece's defaults do not round-trip code (NFKC normalisation, collapsed
whitespace, a dummy leading space). Models trained here use identity normalisation,
keep every space, allow whitespace-only pieces (indentation), and fall back to bytes
for anything outside the vocabulary, so ``decode(encode(x)) == x`` for any text.

Id layout of trained models: 0 ``<pad>``, 1 ``<unk>`` (never produced: byte
fallback), 2 ``<|endoftext|>`` (between documents, phi-1 style), 3
``<|endofturn|>`` (end of a chat turn, LIMA), then the 256 byte pieces, then merges.

Train one on your own corpus (its train split; the report is on its held-out split)::

    python -m phijax.data.tokenizer --input='src/**/*.py' --vocab_size=8192 --out=code.model

``--input`` is a file, a directory or a quoted glob; ``.jsonl`` input is one document
per line (``--text_field``). Then train with ``--config.data.tokenizer.path=code.model``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import pathlib
from typing import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm

from phijax import files
from phijax.data import config as data_config, fingerprint, sources
from phijax.data.errors import DataError
from phijax.data.paths import split_glob

EOS_PIECE = "<|endoftext|>"
EOT_PIECE = "<|endofturn|>"
# phi-3's chat pieces (phijax.data.sft's "phi3" template), reserved in every tokenizer
# trained here so that a run can fine-tune on that format without retraining.
CHAT_PIECES = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
PAD_PIECE = "<pad>"
# Sentencepiece writes spaces as U+2581 inside pieces; a literal U+2581 in the text
# would decode as a space, so encode() spells it with byte pieces instead.
_SPACE_META = "\u2581"
# Bump when the training recipe changes, so cached models are not reused.
_RECIPE_VERSION = 2  # 2: the chat pieces are reserved
# Training "sentences" are runs of whole lines up to this many UTF-8 bytes: pieces
# may then contain newlines (":\n", ")\n\n"), which a line-per-sentence split forbids.
_CHUNK_BYTES = 4096

log = logging.getLogger(__name__)


class Tokenizer:
  """A sentencepiece model with the ids and byte counts training needs.

  Picklable (grain worker processes get a copy): the state is the serialized model.
  """

  def __init__(self, model_proto: bytes, *, name: str = ""):
    self.model_proto = bytes(model_proto)
    self.name = name
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    self.vocab_size = self._sp.get_piece_size()
    self.eos_id = self._special_id(EOS_PIECE, self._sp.eos_id())
    if self.eos_id is None:
      raise DataError(f"tokenizer {name or '(in memory)'} has no end-of-text token "
                      f"({EOS_PIECE!r} or an eos piece); train one with "
                      "phijax.data.train_tokenizer")
    # None when the model has no end-of-turn piece: only SFT data needs it.
    self.eot_id = self._special_id(EOT_PIECE, -1)
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
    # Byte pieces <0x00>..<0xFF>, for spelling a literal U+2581 (see encode).
    self._byte_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)]
    self._has_byte_fallback = all(self._sp.is_byte(i) for i in self._byte_ids)

  def special_id(self, piece: str) -> int | None:
    """The id of a reserved piece (``<|end|>``), None when this model lacks it."""
    return self._special_id(piece, -1)

  def _special_id(self, piece: str, fallback: int) -> int | None:
    i = self._sp.piece_to_id(piece)
    if self._sp.id_to_piece(i) == piece:  # piece_to_id maps unknown pieces to <unk>
      return i
    return fallback if fallback >= 0 else None

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tokenizer":
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise DataError(f"tokenizer model {str(path)!r} does not exist; set "
                      "config.data.tokenizer.path to a sentencepiece .model file, "
                      "or to '' to train one on the configured data sources")
    if path.stat().st_size == 0:  # sentencepiece would log "not initialized" lines
      raise DataError(f"{path} is empty: it is not a sentencepiece model; replace it "
                      "with an intact copy")
    try:
      with files.reading(path, "a sentencepiece model"):  # sentencepiece's parse errors
        return cls(path.read_bytes(), name=str(path))
    except files.CorruptFile as e:
      raise DataError(str(e)) from e

  def save(self, path: str | os.PathLike) -> None:
    _atomic_write(pathlib.Path(path), self.model_proto)

  def __getstate__(self):
    return {"model_proto": self.model_proto, "name": self.name}

  def __setstate__(self, state):
    self.__init__(state["model_proto"], name=state["name"])

  def __repr__(self):
    return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"

  def encode_batch(self, texts, num_threads: int = 1) -> list[list[int]]:
    """``[encode(t) for t in texts]``, the plain texts encoded by sentencepiece in
    ``num_threads`` threads of its own (it holds the GIL on one text at a time)."""
    texts = list(texts)
    out = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if not (_SPACE_META in t and self._has_byte_fallback)]
    for i, ids in zip(plain, self._sp.encode([texts[i] for i in plain],
                                             num_threads=max(1, num_threads))):
      out[i] = ids
    return [ids if ids is not None else self.encode(t) for ids, t in zip(out, texts)]

  def encode(self, text: str) -> list[int]:
    if _SPACE_META in text and self._has_byte_fallback:
      meta_bytes = [self._byte_ids[b] for b in _SPACE_META.encode("utf-8")]
      ids = []
      for i, part in enumerate(text.split(_SPACE_META)):
        if i:
          ids.extend(meta_bytes)
        ids.extend(self._sp.encode(part))
      return ids
    return self._sp.encode(text)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ``ids``; special tokens (eos, eot, pad) decode to nothing."""
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  @functools.cached_property
  def piece_bytes(self) -> tuple[bytes, ...]:
    """The bytes each id stands for, as bits per byte counts them: a byte-fallback
    piece its one byte, control/unknown pieces none, a normal piece the UTF-8 of its
    text with U+2581 read as one space."""
    sp = self._sp
    out = []
    for i in range(self.vocab_size):
      if sp.is_byte(i):
        out.append(bytes([int(sp.id_to_piece(i)[3:-1], 16)]))  # "<0xNN>"
      elif sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        out.append(b"")
      else:
        out.append(sp.id_to_piece(i).replace(_SPACE_META, " ").encode("utf-8"))
    return tuple(out)

  @functools.cached_property
  def token_bytes(self) -> np.ndarray:
    """``[vocab_size]`` int32: how many bytes each id stands for (``piece_bytes``):
    the denominator of bits per byte."""
    out = np.array([len(b) for b in self.piece_bytes], np.int32)
    out.flags.writeable = False
    return out


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
  """Write-then-rename, so a concurrent reader (another host, another test worker)
  never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _training_chunks(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
  """Whole lines grouped into chunks of at most ``_CHUNK_BYTES`` bytes, until
  ``max_bytes`` of text (0: no cap)."""
  seen = 0
  for text in texts:
    buf, buf_bytes = [], 0
    for line in text.splitlines(keepends=True):
      n = len(line.encode("utf-8"))
      if buf and buf_bytes + n > _CHUNK_BYTES:
        yield "".join(buf)
        buf, buf_bytes = [], 0
      if n > _CHUNK_BYTES:  # one very long line: cut it (4 bytes/char at most)
        step = _CHUNK_BYTES // 4
        for i in range(0, len(line), step):
          yield line[i:i + step]
      else:
        buf.append(line)
        buf_bytes += n
      seen += n
      if max_bytes and seen >= max_bytes:
        break
    if buf:
      yield "".join(buf)
    if max_bytes and seen >= max_bytes:
      return


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 8192,
                    model_type: str = "bpe", max_bytes: int = 0,
                    name: str = "") -> Tokenizer:
  """Trains a code-safe sentencepiece model on ``texts`` (one string per document).

  ``max_bytes`` caps the training text (0: all of it). Deterministic: the trainer
  runs single-threaded, since its result depends on the thread count (2 s for the
  12 MB stdlib at 8k BPE).
  """
  if model_type not in ("bpe", "unigram"):
    raise DataError(f"tokenizer model_type {model_type!r} is not supported; use "
                    "'bpe' or 'unigram'")
  if vocab_size < 300:
    raise DataError(f"tokenizer vocab_size {vocab_size} is too small: 8 special "
                    "tokens and 256 byte pieces come first; use at least 300")
  model = io.BytesIO()
  chunks = _training_chunks(texts, max_bytes)
  first = next(chunks, None)
  if first is None:
    raise DataError("no text to train the tokenizer on")

  def all_chunks():
    yield first
    yield from chunks

  spm.SentencePieceTrainer.train(
      sentence_iterator=all_chunks(), model_writer=model,
      vocab_size=vocab_size, model_type=model_type,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False, allow_whitespace_only_pieces=True,
      byte_fallback=True, character_coverage=0.9995, split_digits=False,
      max_sentence_length=4 * _CHUNK_BYTES, hard_vocab_limit=False,
      pad_id=0, unk_id=1, eos_id=2, bos_id=-1,
      pad_piece=PAD_PIECE, eos_piece=EOS_PIECE, control_symbols=[EOT_PIECE, *CHAT_PIECES],
      num_threads=1, minloglevel=2)
  return Tokenizer(model.getvalue(), name=name)


def _cache_key(settings: dict) -> str:
  blob = json.dumps({"recipe": _RECIPE_VERSION, **settings}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_tokenizer(cfg_data) -> Tokenizer:
  """The tokenizer ``config.data.tokenizer`` names.

  ``path`` set: load that sentencepiece model. ``path`` empty: the model trained on
  the train split of the configured sources (those with weight > 0; the default is
  the built-in stdlib corpus), from ``cache_dir`` if an identical one was trained
  before (keyed by the settings and the sources' files and sizes), else trained now
  (seconds) and cached.
  """
  tcfg = cfg_data.tokenizer
  if tcfg.path:
    tok = Tokenizer.load(tcfg.path)
    if tok.vocab_size > tcfg.vocab_size:
      raise DataError(
          f"tokenizer {tcfg.path!r} has {tok.vocab_size} pieces but "
          f"config.data.tokenizer.vocab_size is {tcfg.vocab_size}; set it to "
          f"{tok.vocab_size} (the model's embedding must cover every id)")
    return tok
  return _cached_corpus_tokenizer(cfg_data)


def _cached_corpus_tokenizer(cfg_data) -> Tokenizer:
  from phijax.data import pipeline  # local: loads grain (seconds), which tokenizing never needs
  tcfg = cfg_data.tokenizer
  names = list(pipeline.source_weights(cfg_data))
  label, corpus_settings = fingerprint.corpus_key(cfg_data, names)
  settings = dict(**corpus_settings, vocab_size=tcfg.vocab_size,
                  model_type=tcfg.model_type, train_bytes=tcfg.train_bytes,
                  heldout_fraction=cfg_data.heldout_fraction)
  name = f"{label}-{tcfg.model_type}{tcfg.vocab_size}-{_cache_key(settings)}.model"
  # cache_dir "" = no cache: trained (and the text tokenized) by every run, as a
  # from-nothing timing needs (experiments/cpu_speedrun.py); never a ./tokenizers.
  path = (pathlib.Path(tcfg.cache_dir).expanduser() / "tokenizers" / name
          if tcfg.cache_dir else None)
  if path is not None and path.is_file():
    return Tokenizer.load(path)
  srcs = pipeline.build_sources(cfg_data, names)
  log.info("training a %d-piece %s tokenizer on the train split of %s (%d documents); %s",
           tcfg.vocab_size, tcfg.model_type, ", ".join(srcs),
           sum(len(s.train_indices()) for s in srcs.values()),
           f"caching it at {path}" if path else "not cached (data.tokenizer.cache_dir='')")
  tok, _ = train_on_sources(srcs.values(), vocab_size=tcfg.vocab_size,
                            model_type=tcfg.model_type, max_bytes=tcfg.train_bytes,
                            name=str(path or name))
  if path is None:
    return tok
  try:
    tok.save(path)
    with open(path.with_suffix(".json"), "w") as f:
      json.dump(settings, f, indent=1)
  except OSError as e:  # a read-only home still trains, just every time
    log.warning("could not cache the tokenizer at %s (%s)", path, e)
  return tok


def _train_texts(srcs) -> Iterator[str]:
  """The sources' train-split documents, one from each source in turn, so a
  ``train_bytes`` cap takes text from all of them (one source: its documents in
  order). Pre-tokenized sources hold ids, not text, and are left out."""
  text_srcs = [s for s in srcs if s.kind != "array_record"]
  if not text_srcs:
    raise DataError("the data sources are pre-tokenized (array_record): set "
                    "config.data.tokenizer.path to the tokenizer their records were "
                    "written with")
  streams = [(s.text(int(i)) for i in s.train_indices()) for s in text_srcs]
  while streams:
    for stream in list(streams):
      text = next(stream, None)
      if text is None:
        streams.remove(stream)
      else:
        yield text


def train_on_sources(srcs, *, vocab_size: int, model_type: str = "bpe",
                     max_bytes: int = 0, name: str = "") -> tuple[Tokenizer, dict]:
  """``train_tokenizer`` on the train split of ``srcs`` (``phijax.data.sources``
  objects); also returns ``{"documents", "bytes"}`` of the text it read."""
  used = {"documents": 0, "bytes": 0}

  def counted(texts):
    for text in texts:
      used["documents"] += 1
      used["bytes"] += len(text.encode("utf-8"))
      yield text

  tok = train_tokenizer(counted(_train_texts(srcs)), vocab_size=vocab_size,
                        model_type=model_type, max_bytes=max_bytes, name=name)
  if max_bytes:  # the last document read may have been cut at the cap
    used["bytes"] = min(used["bytes"], max_bytes)
  return tok, used


def check_roundtrip(tok: Tokenizer, documents: Sequence[tuple[str, str]]) -> dict:
  """Encodes and decodes every ``(name, text)``; returns counts and tokens/byte.

  ``{"documents", "failed" (names), "tokens", "bytes", "tokens_per_byte",
  "bytes_per_token", "byte_count_mismatch" (names whose token_bytes sum differs
  from their UTF-8 length)}``.
  """
  failed, mismatched = [], []
  n_tokens = n_bytes = 0
  token_bytes = tok.token_bytes
  for name, text in documents:
    ids = tok.encode(text)
    if tok.decode(ids) != text:
      failed.append(name)
    size = len(text.encode("utf-8"))
    if int(token_bytes[ids].sum()) != size:
      mismatched.append(name)
    n_tokens += len(ids)
    n_bytes += size
  return dict(documents=len(documents), failed=failed, tokens=n_tokens, bytes=n_bytes,
              tokens_per_byte=n_tokens / max(n_bytes, 1),
              bytes_per_token=n_bytes / max(n_tokens, 1),
              byte_count_mismatch=mismatched)


# ------------------------------------------------------------------ command line


def _parser():
  from phijax import cli
  defaults = data_config.defaults()
  p = cli.ArgumentParser(prog="python -m phijax.data.tokenizer", description=__doc__)
  p.add_argument("--input", required=True, type=_input_path, metavar="PATH_OR_GLOB",
                 help="a file, a directory (all its files) or a quoted glob such as "
                      "'src/**/*.py'; one document per file, or per line for .jsonl")
  p.add_argument("--out", required=True, type=_out_file, metavar="FILE.model",
                 help="where to write the sentencepiece model")
  p.add_argument("--vocab_size", type=cli.positive_int,
                 default=defaults.tokenizer.vocab_size,
                 help="pieces (at most: a small corpus may give fewer)")
  p.add_argument("--model_type", choices=("bpe", "unigram"),
                 default=defaults.tokenizer.model_type)
  p.add_argument("--kind", choices=("auto", "text", "jsonl"), default="auto",
                 help="auto: jsonl if every input file ends in .jsonl, else text")
  p.add_argument("--text_field", default="text", help="jsonl: the field with the text")
  p.add_argument("--heldout_fraction", type=float, default=defaults.heldout_fraction,
                 help="documents held out (by a hash of their path or file:line), as "
                      "config.data.heldout_fraction: keep the two equal so training "
                      "holds out the documents reported on here")
  p.add_argument("--train_bytes", type=int, default=defaults.tokenizer.train_bytes,
                 help="cap on training text (0: all of it)")
  return p


def _input_path(value: str) -> str:
  import argparse
  from phijax import cli
  root, pattern = split_glob(value)
  if not pattern:
    return cli.existing_path(value)
  if not os.path.isdir(root):
    raise argparse.ArgumentTypeError(
        f"{root!r}, the directory of the glob {value!r}, does not exist")
  return os.path.expanduser(value)


def _out_file(value: str) -> str:
  import argparse
  path = os.path.expanduser(value)
  if os.path.isdir(path):
    raise argparse.ArgumentTypeError(f"{value!r} is a directory; give a file name "
                                     "such as tokenizer.model")
  return path


def main(args) -> int:
  from phijax import cli
  if not 0.0 <= args.heldout_fraction < 1.0:
    raise cli.UsageError(f"--heldout_fraction must be in [0, 1), got {args.heldout_fraction}")
  if args.train_bytes < 0:
    raise cli.UsageError(f"--train_bytes must be >= 0 (0: no cap), got {args.train_bytes}")
  scfg = data_config.source(args.kind, args.input, text_field=args.text_field)
  try:
    src = sources.build_source("input", scfg, args.heldout_fraction)
  except DataError as e:
    # The source's messages name config fields; here they are flags.
    msg = str(e).replace("config.data.sources.input.path", "--input")
    raise cli.UsageError(msg.replace("config.data.sources.input.text_field",
                                     "--text_field")) from None
  tok, used = train_on_sources([src], vocab_size=args.vocab_size,
                               model_type=args.model_type, max_bytes=args.train_bytes,
                               name=args.out)
  tok.save(args.out)
  n_train, n_held = len(src.train_indices()), len(src.heldout_indices())
  print(f"trained a {tok.vocab_size}-piece {args.model_type} tokenizer on "
        f"{used['documents']:,} of {n_train:,} train documents ({used['bytes']:,} bytes) "
        f"of {args.input}; wrote {args.out}")
  keys = getattr(src, "keys", None)
  if n_held:
    split, indices = "held-out split", src.heldout_indices()
  else:  # a single document: nothing is held out, so report on what was trained on
    split, indices = "train split (no held-out documents)", src.train_indices()
  docs = [(keys[i] if keys else f"{args.input}[{i}]", src.text(int(i))) for i in indices]
  report = check_roundtrip(tok, docs)
  print(f"{split}: {report['documents']:,} documents, {report['bytes']:,} bytes, "
        f"{report['tokens']:,} tokens: {report['bytes_per_token']:.3f} bytes/token")
  bad = sorted(set(report["failed"]) | set(report["byte_count_mismatch"]))
  if bad:
    print(f"round trip: NOT exact on {len(bad)} of {report['documents']} documents: "
          f"{', '.join(bad[:5])}")
    return 1
  print(f"round trip: exact on all {report['documents']:,} documents")
  # Both sizes: a config's model embedding must cover every id (configs/text.py ties
  # the two together, so there either flag alone is enough).
  print(f"train with it: --config.data.tokenizer.path={args.out} "
        f"--config.data.tokenizer.vocab_size={tok.vocab_size} "
        f"--config.model.vocab_size={tok.vocab_size}")
  return 0


if __name__ == "__main__":
  from phijax import cli
  cli.main(_parser(), main)
