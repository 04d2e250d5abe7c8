"""Arithmetic problems as text, in the representations of Shen et al. 2023
("Positional description matters for transformers arithmetic").

A document is one problem, ``a+b=c`` or ``a*b=c``; the pipeline ends it with
``<|endoftext|>``, which is also where greedy decoding of the answer stops. Formats:

- ``plain``: ``123+45=168``.
- ``reversed``: every number's digits reversed, least significant first
  (``321+54=861``): the model then writes the answer in the order it is computed.
- ``padded``: operands zero-padded to ``width`` digits and the answer to its widest
  (``width + 1`` for ``+``, ``2 * width`` for ``*``): every digit sits at a fixed place.
- ``spaces``: a space between two operand digits with probability 1/2
  (``1 23+4 5=168``): absolute positions no longer tell a digit's place value. The
  answer stays plain, so it has one correct spelling.

Problems are seeded: ``Spec.document(split, i)`` is a pure function of the spec's
seed, the split and ``i`` (numpy ``default_rng([seed, split, i])``), so the source is
an indexable list (shuffled and resumed by the grain pipeline like any other), the
held-out split is a disjoint seed stream, and ``Spec.stream`` is an endless
generator of the same documents. A seed gives the same problems in every format.
Operands of ``n`` digits are uniform over the
``n``-digit numbers (0-9 for one digit); each operand's length is uniform in
``[min_digits, max_digits]``. Numbers are Python ints, so any length works.

Held-out problems: with ``heldout_share`` > 0 the problem space itself is split. A
problem ``(a, op, b)`` is held out when a stable hash of ``f"{a}{op}{b}"`` falls below
the share (``in_heldout``; the same split for every seed, format and length range), the
training split redraws until it gets a problem that is not held out, the held-out split
until it gets one that is, and ``phijax.evals.arithmetic`` tests held-out problems
only. So in-range test problems are unseen even where the space is small (1-2 digit
operands: 100 and 8,100 problems, all seen by any long run without the split). The
hash is of the ordered problem: with ``3+5`` held out, ``5+3`` (the same answer) may
still be trained on.

Tokens are one per character (``char_ids``): a BPE tokenizer would merge digit runs
into pieces whose boundaries move with the number, hiding place value; the paper's
models see digits one by one.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import re
from typing import Iterator

import numpy as np

from phijax.data import kinds
from phijax.data.corpus import heldout_score
from phijax.data.errors import DataError
from phijax.data.kinds import Source

OPS = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}
FORMATS = ("plain", "reversed", "padded", "spaces")
TRAIN, HELDOUT = 0, 1  # the seed streams of the two splits


@dataclasses.dataclass(frozen=True)
class Problem:
  a: int
  b: int
  op: str

  @property
  def answer(self) -> int:
    return OPS[self.op](self.a, self.b)

  @property
  def digits(self) -> int:
    """The operand length this problem counts under: the longer operand's."""
    return max(len(str(self.a)), len(str(self.b)))


def number(rng: np.random.Generator, digits: int) -> int:
  """Uniform over the ``digits``-digit numbers (one digit: 0-9)."""
  if digits == 1:
    return int(rng.integers(0, 10))
  rest = rng.integers(0, 10, size=digits - 1)
  return int(str(int(rng.integers(1, 10))) + "".join(map(str, rest)))


def draw(rng: np.random.Generator, ops: str, min_digits: int, max_digits: int) -> Problem:
  """One problem: an op from ``ops``, each operand's length uniform in the range."""
  op = ops[int(rng.integers(0, len(ops)))]
  la, lb = rng.integers(min_digits, max_digits + 1, size=2)
  return Problem(number(rng, int(la)), number(rng, int(lb)), op)


def in_heldout(p: Problem, share: float) -> bool:
  """Whether ``p`` is on the held-out side of a ``share`` split of the problem space:
  a stable hash of the problem (not of its spelling), below ``share``."""
  return share > 0 and heldout_score(f"{p.a}{p.op}{p.b}") < share


MAX_DRAWS = 10_000  # redraws for one problem on the wanted side of the split


def draw_in_split(rng: np.random.Generator, ops: str, min_digits: int, max_digits: int,
                  heldout: bool, share: float) -> Problem:
  """``draw`` until the problem is on the wanted side (held out or not) of the split
  (``share`` 0: no split, the first draw)."""
  for _ in range(MAX_DRAWS):
    p = draw(rng, ops, min_digits, max_digits)
    if share <= 0 or in_heldout(p, share) == heldout:
      return p
  raise ValueError(f"no {'held-out' if heldout else 'training'} problem of {min_digits}-"
                   f"{max_digits} digits in {MAX_DRAWS} draws with heldout_share={share}")


def draw_of_length(rng: np.random.Generator, op: str, digits: int) -> Problem:
  """One problem whose operands both have exactly ``digits`` digits (evaluation)."""
  return Problem(number(rng, digits), number(rng, digits), op)


def answer_width(op: str, width: int) -> int:
  """The most digits an answer of two ``width``-digit operands has."""
  return width + 1 if op == "+" else 2 * width


def _spell(n: int, fmt: str, width: int | None, rng, spaces: bool) -> str:
  s = str(n)
  if fmt == "reversed":
    return s[::-1]
  if fmt == "padded":
    if len(s) > width:
      raise ValueError(f"format 'padded': {n} has {len(s)} digits, more than the "
                       f"padded width {width}; raise the width")
    return s.zfill(width)
  if fmt == "spaces" and spaces:
    gaps = rng.random(len(s) - 1) < 0.5
    return "".join(d + (" " if g else "") for d, g in zip(s, [*gaps, False]))
  return s


def encode(a: int, b: int, op: str, fmt: str, rng: np.random.Generator | None = None, *,
           width: int | None = None) -> str:
  """The document ``a{op}b=answer`` in format ``fmt``. ``spaces`` draws its spaces
  from ``rng``; ``padded`` needs ``width`` (the operands' padded digit count)."""
  if op not in OPS:
    raise ValueError(f"op {op!r} is not one of {sorted(OPS)}")
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
  if a < 0 or b < 0:
    raise ValueError(f"operands must be non-negative, got {a} and {b}")
  if fmt == "padded" and not width:
    raise ValueError("format 'padded' needs width= (digits every operand is padded to)")
  if fmt == "spaces" and rng is None:
    raise ValueError("format 'spaces' needs rng= (a numpy Generator for the spaces)")
  c = OPS[op](a, b)
  w = width or 0
  return (f"{_spell(a, fmt, w, rng, True)}{op}{_spell(b, fmt, w, rng, True)}="
          f"{_spell(c, fmt, answer_width(op, w), rng, False)}")


_DOCUMENT = re.compile(r"([0-9 ]+)([+*])([0-9 ]+)=([0-9]*)")


def read_number(s: str, fmt: str) -> int:
  """The number a spelling in ``fmt`` stands for (``ValueError`` if it is none)."""
  digits = s.replace(" ", "") if fmt == "spaces" else s
  if not digits or not digits.isdigit() or not digits.isascii():
    raise ValueError(f"{s!r} is not a number in format {fmt!r}")
  return int(digits[::-1] if fmt == "reversed" else digits)


def decode(text: str, fmt: str) -> tuple[int, int, str, int]:
  """``(a, b, op, c)`` of a document ``encode`` wrote (``c`` as written, not
  recomputed). Spaces are read only in the ``spaces`` format."""
  m = _DOCUMENT.fullmatch(text)
  if m is None or (fmt != "spaces" and " " in text):
    raise ValueError(f"{text!r} is not an arithmetic document in format {fmt!r}")
  a, op, b, c = m.groups()
  return read_number(a, fmt), read_number(b, fmt), op, read_number(c, fmt)


def split_document(text: str) -> tuple[str, str]:
  """``(prompt, answer)``: the prompt ends with ``=``; the answer is the rest."""
  cut = text.index("=") + 1
  return text[:cut], text[cut:]


def char_ids(tok, text: str) -> list[int]:
  """Token ids, one per character (see the module docstring). With sentencepiece's
  byte fallback every character has an id, a piece of its own or its byte."""
  ids = []
  for ch in text:
    ids.extend(tok.encode(ch))
  return ids


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a source generates; ``from_config`` reads ``config.data.sources.NAME``."""
  ops: str = "+"
  min_digits: int = 1
  max_digits: int = 5
  format: str = "plain"
  width: int = 0  # padded: operand digits (0: max_digits)
  seed: int = 0
  heldout_share: float = 0.1  # problems held out of training (see the module docstring)
  where: str = "arithmetic"  # how errors name the config (a source's field prefix)

  def __post_init__(self):
    def bad(field, msg):
      raise ValueError(f"{self.where}.{field}: {msg}")
    if not self.ops or set(self.ops) - set(OPS):
      bad("ops", f"{self.ops!r} must be made of {''.join(OPS)!r} (e.g. '+' or '+*')")
    if self.min_digits < 1:
      bad("min_digits", f"must be >= 1, got {self.min_digits}")
    if self.max_digits < self.min_digits:
      bad("max_digits", f"{self.max_digits} is below min_digits={self.min_digits}")
    if self.format not in FORMATS:
      bad("format", f"{self.format!r} is not one of {FORMATS}")
    if self.width and self.width < self.max_digits:
      bad("width", f"{self.width} is below max_digits={self.max_digits}: the longest "
          "operands would not fit the padding; raise it or set 0 (= max_digits)")
    if not 0 <= self.heldout_share < 1:
      bad("heldout_share", f"must be in [0, 1), got {self.heldout_share}")

  @property
  def pad_width(self) -> int | None:
    return (self.width or self.max_digits) if self.format == "padded" else None

  def max_chars(self, digits: int | None = None) -> int:
    """The longest document with operands of at most ``digits`` (default max_digits)."""
    d = self.max_digits if digits is None else digits
    operand = {"spaces": 2 * d - 1, "padded": max(d, self.pad_width or 0)}.get(self.format, d)
    width = max(d, self.pad_width or 0)
    return 2 * operand + 2 + max(answer_width(op, width) for op in self.ops)

  def document(self, split: int, i: int) -> str:
    """Problem ``i`` of ``split`` (TRAIN or HELDOUT): a pure function of the seed."""
    rng = np.random.default_rng([self.seed, split, i])
    p = draw_in_split(rng, self.ops, self.min_digits, self.max_digits, split == HELDOUT,
                      self.heldout_share)
    return encode(p.a, p.b, p.op, self.format, rng, width=self.pad_width)

  def stream(self, split: int = TRAIN) -> Iterator[str]:
    """The endless sequence ``document(split, 0), document(split, 1), ...``."""
    return (self.document(split, i) for i in itertools.count())

  @classmethod
  def from_config(cls, name: str, scfg) -> "Spec":
    return cls(ops=scfg.ops, min_digits=int(scfg.min_digits),
               max_digits=int(scfg.max_digits), format=scfg.format,
               width=int(scfg.width), seed=int(scfg.seed),
               # A run config from before the split (its config.json, read by
               # phijax.evaluate --task=bpb) has no field: it trained on every problem.
               heldout_share=float(scfg.get("heldout_share", 0.0)),
               where=f"config.data.sources.{name}")


def spec_of_run(run_config) -> Spec | None:
  """The spec of the first arithmetic source with weight > 0 in a run's config
  (``config.json`` as a dict), or None."""
  sources = ((run_config or {}).get("data") or {}).get("sources") or {}
  for name, scfg in sources.items():
    if scfg.get("kind") == "arithmetic" and scfg.get("weight", 1.0) > 0:
      return Spec(ops=scfg["ops"], min_digits=scfg["min_digits"],
                  max_digits=scfg["max_digits"], format=scfg["format"],
                  width=scfg.get("width", 0), seed=scfg.get("seed", 0),
                  # runs from before the split trained on every problem
                  heldout_share=scfg.get("heldout_share", 0.0),
                  where=f"config.data.sources.{name}")
  return None


class ArithmeticSource(Source):
  """``size`` training problems and ``heldout`` held-out ones (a disjoint seed
  stream, and with ``heldout_share`` > 0 the held-out side of the problem split),
  generated on demand: document ``i < size`` is ``document(TRAIN, i)``, the rest
  ``document(HELDOUT, i - size)``. Epochs reshuffle the same ``size`` problems (the
  paper trains on 120k-300k). ``data.heldout_fraction`` does not apply."""

  kind = "arithmetic"

  def __init__(self, name: str, scfg, seq_len: int | None = None):
    super().__init__(name)
    field = f"config.data.sources.{name}"
    try:
      self.spec = Spec.from_config(name, scfg)
    except ValueError as e:
      raise DataError(f"data source {name!r} (arithmetic): {e}") from None
    self.size, n_heldout = int(scfg.size), int(scfg.heldout)
    if self.size < 1 or n_heldout < 0:
      raise DataError(f"data source {name!r} (arithmetic): {field}.size must be >= 1 "
                      f"and .heldout >= 0, got {self.size} and {n_heldout}")
    longest = self.spec.max_chars()
    if seq_len is not None and longest > seq_len:
      raise DataError(
          f"data source {name!r} (arithmetic): a problem of up to max_digits="
          f"{self.spec.max_digits} digits in format {self.spec.format!r} takes up to "
          f"{longest} tokens (one per character), more than config.data.seq_len="
          f"{seq_len}; lower {field}.max_digits or raise config.data.seq_len")
    self.heldout = np.zeros(self.size + n_heldout, bool)
    self.heldout[self.size:] = True

  def text(self, i: int, tok=None) -> str:
    i = int(i)
    if i >= self.size:
      return self.spec.document(HELDOUT, i - self.size)
    return self.spec.document(TRAIN, i)

  def tokens(self, i: int, tok) -> np.ndarray:
    return np.asarray(char_ids(tok, self.text(i)) + [tok.eos_id], np.int32)


def source_files(name: str, scfg):
  """``(root, files)`` for the tokenizer's cache key: the generator itself, so a
  change to it retrains. The key does not see the spec; that is harmless because
  documents are tokenized one character at a time (every character has an id in any
  tokenizer trained here, through byte fallback)."""
  path = pathlib.Path(__file__)
  return path.parent, [path]


@kinds.register("arithmetic", files=source_files, generated=True)
def _build(name: str, scfg, heldout_fraction: float,
           seq_len: int | None = None) -> ArithmeticSource:
  """``config.data.arithmetic(...)``'s source (``heldout_fraction`` does not apply)."""
  return ArithmeticSource(name, scfg, seq_len)
