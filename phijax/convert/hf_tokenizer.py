"""A phijax sentencepiece tokenizer as a Hugging Face fast tokenizer directory.

    write_hf_tokenizer(tok, "out/dir", model_max_length=2048)
    transformers.AutoTokenizer.from_pretrained("out/dir").encode(text) == tok.encode(text)

Writes ``tokenizer.json`` (built with the ``tokenizers`` library, which transformers
depends on), ``tokenizer_config.json`` and ``special_tokens_map.json``. The
sentencepiece model is turned into the byte-fallback BPE it is, not run through
transformers' slow->fast converters (whose whitespace handling changes between
versions):

- vocabulary: every piece under its id, with sentencepiece's U+2581 written back as the
  space it stands for. A literal U+2581 in the text is then no piece at all and falls
  back to its three bytes, which is how ``phijax.data.Tokenizer.encode`` spells it;
- merges: every split of a piece into two pieces, ranked by the piece's score, which is
  the order in which sentencepiece's BPE encoder merges;
- no normalizer and no pre-tokenizer (the models use identity normalisation, keep every
  space and add no dummy prefix), no bos/eos added;
- special pieces (``<pad>``, ``<unk>``, ``<|endoftext|>``, ``<|endofturn|>``) are special
  tokens for decoding, but ``split_special_tokens`` is on: as in phijax, their spelling
  in the text is ordinary text. Pass their ids (``tokenizer.eos_token_id``) instead.

Exactness: ids equal phijax's for any text, except when two different splits of one
piece become mergeable at overlapping places in the same step (e.g. ``ab|a|ba`` for a
piece ``aba``): sentencepiece merges the leftmost, Hugging Face's BPE the split ranked
first. ``check_hf_tokenizer`` measures it on real text (none found on the stdlib).
"""

from __future__ import annotations

import json
import os

from phijax.data.tokenizer import Tokenizer

_SPACE_META = "\u2581"  # sentencepiece's space inside pieces
UNK_PIECE = "<unk>"
# sentencepiece_model.proto: SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _pieces(tok: Tokenizer):
  """``[(piece, score, type)]`` of the model, in id order."""
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(tok.model_proto)
  if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
    raise ValueError("a Hugging Face tokenizer can be written for sentencepiece BPE "
                     "models only (this one is "
                     f"{sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)})")
  spec = proto.normalizer_spec
  if spec.add_dummy_prefix or spec.remove_extra_whitespaces or spec.precompiled_charsmap:
    raise ValueError("a Hugging Face tokenizer can be written only for models trained "
                     "with identity normalisation, no dummy prefix and every space kept "
                     "(phijax.data.train_tokenizer's settings)")
  return [(p.piece, p.score, p.type) for p in proto.pieces]


def _bpe_model(pieces):
  """``(vocab, merges, special pieces)`` of the BPE that encodes like the model."""
  vocab, scores = {}, {}
  for i, (piece, score, kind) in enumerate(pieces):
    text = piece if kind in (_CONTROL, _UNKNOWN, _BYTE) else piece.replace(_SPACE_META, " ")
    if text in vocab:
      raise ValueError(f"piece {piece!r} (id {i}) collides with id {vocab[text]} once "
                       "U+2581 is read as a space")
    vocab[text] = i
    if kind == _NORMAL:
      scores[text] = score
  ranked = []
  for text, score in scores.items():
    for cut in range(1, len(text)):
      left, right = text[:cut], text[cut:]
      if left in scores and right in scores:
        ranked.append((-score, vocab[text], cut, left, right))
  ranked.sort()
  return vocab, [(left, right) for *_, left, right in ranked]


def build_hf_tokenizer(tok: Tokenizer):
  """A ``tokenizers.Tokenizer`` that encodes like ``tok`` (see the module docstring)."""
  from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models
  if not tok._has_byte_fallback:
    raise ValueError(f"{tok.name or 'the tokenizer'} has no byte-fallback pieces "
                     "<0x00>..<0xFF>; Hugging Face export needs them")
  pieces = _pieces(tok)
  vocab, merges = _bpe_model(pieces)
  unk = UNK_PIECE if UNK_PIECE in vocab else None
  hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True,
                              byte_fallback=True, dropout=None))
  hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
  # Control pieces are special (never read from text: split_special_tokens); user-defined
  # ones are matched in the text before BPE, as sentencepiece does.
  hf.add_special_tokens([AddedToken(p, special=True, normalized=False)
                         for p, _, kind in pieces if kind in (_CONTROL, _UNKNOWN)])
  hf.add_tokens([AddedToken(p.replace(_SPACE_META, " "), special=False, normalized=False)
                 for p, _, kind in pieces if kind == _USER_DEFINED])
  return hf


def write_hf_tokenizer(tok: Tokenizer, directory: str, *, model_max_length: int) -> list[str]:
  """Writes the Hugging Face tokenizer files into ``directory``; returns their names."""
  hf = build_hf_tokenizer(tok)
  os.makedirs(directory, exist_ok=True)
  hf.save(os.path.join(directory, "tokenizer.json"))
  piece = tok.id_to_piece
  special = {"eos_token": piece(tok.eos_id), "pad_token": piece(tok.pad_id)}
  if hf.token_to_id(UNK_PIECE) is not None:
    special["unk_token"] = UNK_PIECE
  extra = [piece(tok.eot_id)] if tok.eot_id is not None else []
  config = {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "model_max_length": int(model_max_length),
      **special,
      "bos_token": None,
      "additional_special_tokens": extra,
      "split_special_tokens": True,
      "clean_up_tokenization_spaces": False,
      "add_prefix_space": False,
  }
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
    json.dump({**special, "additional_special_tokens": extra}, f, indent=2)
  return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def check_hf_tokenizer(tok: Tokenizer, texts) -> list[int]:
  """Indices of ``texts`` that the Hugging Face tokenizer encodes differently."""
  hf = build_hf_tokenizer(tok)
  hf.encode_special_tokens = True
  return [i for i, t in enumerate(texts)
          if hf.encode(t, add_special_tokens=False).ids != tok.encode(t)]


__all__ = ["write_hf_tokenizer", "build_hf_tokenizer", "check_hf_tokenizer"]
