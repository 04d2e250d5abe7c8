"""Sentencepiece tokenizer for code: exact round trip, special tokens, training, cache.

Sentencepiece's defaults do not round-trip code (NFKC normalisation, collapsed
whitespace, a dummy leading space). Models trained here use identity normalisation,
keep every space, allow whitespace-only pieces (indentation), and fall back to bytes
for anything outside the vocabulary, so ``decode(encode(x)) == x`` for any text.

Id layout of trained models: 0 ``<pad>``, 1 ``<unk>`` (never produced: byte
fallback), 2 ``<|endoftext|>`` (between documents, phi-1 style), 3
``<|endofturn|>`` (end of a chat turn, LIMA), then the 256 byte pieces, then merges.
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

from phijax.data.errors import DataError

EOS_PIECE = "<|endoftext|>"
EOT_PIECE = "<|endofturn|>"
PAD_PIECE = "<pad>"
# Sentencepiece writes spaces as U+2581 inside pieces; a literal U+2581 in the text
# would decode as a space, so encode() spells it with byte pieces instead.
_SPACE_META = "\u2581"
# Bump when the training recipe changes, so cached models are not reused.
_RECIPE_VERSION = 1
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
                      "or to '' to train one on the built-in corpus")
    try:
      return cls(path.read_bytes(), name=str(path))
    except RuntimeError as e:  # sentencepiece's parse error
      raise DataError(f"{str(path)!r} is not a sentencepiece model ({e})") from None

  def save(self, path: str | os.PathLike) -> None:
    _atomic_write(pathlib.Path(path), self.model_proto)

  def __getstate__(self):
    return {"model_proto": self.model_proto, "name": self.name}

  def __setstate__(self, state):
    self.__init__(state["model_proto"], name=state["name"])

  def __repr__(self):
    return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"

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
  def token_bytes(self) -> np.ndarray:
    """``[vocab_size]`` int32: UTF-8 bytes each id decodes to (for bits per byte).

    Byte-fallback pieces count 1, control/unknown pieces 0, a normal piece the UTF-8
    length of its text with U+2581 read as one space.
    """
    sp = self._sp
    out = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      if sp.is_byte(i):
        out[i] = 1
      elif sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
        out[i] = 0
      else:
        out[i] = len(sp.id_to_piece(i).replace(_SPACE_META, " ").encode("utf-8"))
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
    raise DataError(f"tokenizer vocab_size {vocab_size} is too small: 4 special "
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
      pad_piece=PAD_PIECE, eos_piece=EOS_PIECE, control_symbols=[EOT_PIECE],
      num_threads=1, minloglevel=2)
  return Tokenizer(model.getvalue(), name=name)


def _cache_key(settings: dict) -> str:
  blob = json.dumps({"recipe": _RECIPE_VERSION, **settings}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_tokenizer(cfg_data) -> Tokenizer:
  """The tokenizer ``config.data.tokenizer`` names.

  ``path`` set: load that sentencepiece model. ``path`` empty: the model trained on
  the train split of the built-in stdlib corpus, from ``cache_dir`` if an identical
  one was trained before (keyed by the settings and the corpus), else trained now
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
  return _cached_stdlib_tokenizer(cfg_data)


def _cached_stdlib_tokenizer(cfg_data) -> Tokenizer:
  from phijax.data import corpus  # local: keeps the import graph one-way
  tcfg = cfg_data.tokenizer
  root = corpus.stdlib_root()
  # The same train split the "stdlib" source uses (empty files hold no text).
  train_files = [f for f in corpus.stdlib_files(root)
                 if not corpus.is_heldout(f.as_posix(), cfg_data.heldout_fraction)]
  # The corpus is identified by its files and their sizes: another Python version
  # (or a patched stdlib) gets its own model. A cache hit stats the files
  # and reads only the few header lines stdlib_files checks for generated-file markers.
  fingerprint = hashlib.sha256("\n".join(
      f"{f.as_posix()}:{(root / f).stat().st_size}" for f in train_files
  ).encode()).hexdigest()
  settings = dict(corpus="stdlib", files=fingerprint, vocab_size=tcfg.vocab_size,
                  model_type=tcfg.model_type, train_bytes=tcfg.train_bytes,
                  heldout_fraction=cfg_data.heldout_fraction)
  cache_dir = pathlib.Path(tcfg.cache_dir).expanduser() / "tokenizers"
  path = cache_dir / f"stdlib-{tcfg.model_type}{tcfg.vocab_size}-{_cache_key(settings)}.model"
  if path.is_file():
    return Tokenizer.load(path)
  log.info("training a %d-piece %s tokenizer on the stdlib train split (%d files); "
           "caching it at %s", tcfg.vocab_size, tcfg.model_type, len(train_files), path)
  # errors="replace": a stray non-UTF-8 file must not stop training (the stdlib
  # source skips such files with a warning when it reads documents).
  texts = ((root / f).read_bytes().decode("utf-8", errors="replace") for f in train_files)
  tok = train_tokenizer(texts, vocab_size=tcfg.vocab_size, model_type=tcfg.model_type,
                        max_bytes=tcfg.train_bytes, name=str(path))
  try:
    tok.save(path)
    with open(path.with_suffix(".json"), "w") as f:
      json.dump(settings, f, indent=1)
  except OSError as e:  # a read-only home still trains, just every time
    log.warning("could not cache the tokenizer at %s (%s)", path, e)
  return tok


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
