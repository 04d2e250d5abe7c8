"""Data sources: where documents come from, validated up front.

Every source is an indexable list of documents with a fixed train / held-out split
(a stable hash of each document's key: relative path, ``file:line`` or
``file:record``; a source of two or more documents keeps at least one on each side).
A path may be a file, a directory or a glob (``src/**/*.py``). Sources are checked
when they are built: missing paths, empty directories, JSON lines without the text
field and out-of-vocabulary token ids give a ``DataError`` naming the file, line and
config field, instead of an exception from inside a grain worker. Non-UTF-8 and
empty files are skipped, counted and named in a ``DataWarning``.
Generated sources (``arithmetic``: ``phijax.data.arithmetic``) read no files; their
held-out documents come from a seed stream of their own.

Kinds: each registers itself with ``phijax.data.kinds`` where it is defined (the
file kinds at the end of this module); ``build_source`` builds whichever one a
source's ``kind`` names, and this module imports every module that defines kinds.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from phijax.data import corpus, kinds, sft
# The other modules that define kinds: imported so that build_source finds them.
from phijax.data import arithmetic  # noqa: F401  (registers "arithmetic")
from phijax.data.errors import DataError, DataWarning
from phijax.data.kinds import Source
from phijax.data.paths import detect_kind, resolve_files, select_files


def _warn_skipped(name: str, what: str, items: list[str]) -> None:
  shown = ", ".join(items[:10]) + (f" (and {len(items) - 10} more)" if len(items) > 10 else "")
  warnings.warn(f"data source {name!r}: skipped {len(items)} {what}: {shown}",
                DataWarning, stacklevel=4)


def _split(keys, heldout_fraction: float) -> np.ndarray:
  """Held-out mask: documents whose key hashes below ``heldout_fraction``.

  A small source can hash to no held-out document (nothing to evaluate on) or to all
  of them (nothing to train on). So with a fraction > 0 a source of >= 2 documents
  keeps at least one of each: the lowest-hashing document is held out (as if the
  fraction were raised just enough), the highest-hashing one is trained on. A single
  document is trained on. Sources with both already (the stdlib) are untouched.
  """
  scores = np.fromiter((corpus.heldout_score(k) for k in keys), float, count=len(keys))
  heldout = scores < heldout_fraction
  if heldout_fraction > 0 and len(keys):
    if not heldout.any() and len(keys) >= 2:
      heldout[np.argmin(scores)] = True
    elif heldout.all():
      heldout[np.argmax(scores)] = False
  return heldout


class TextFiles(Source):
  """One document per UTF-8 file."""

  kind = "text"

  def __init__(self, name: str, root, files, heldout_fraction: float):
    super().__init__(name)
    paths, keys, not_utf8, empty = [], [], [], []
    for f in files:
      key = pathlib.Path(f).relative_to(root).as_posix()
      raw = pathlib.Path(f).read_bytes()
      try:
        raw.decode("utf-8")
      except UnicodeDecodeError:
        not_utf8.append(str(f))
        continue
      if not raw:
        empty.append(str(f))
        continue
      paths.append(str(f))
      keys.append(key)
    # Empty files are counted but not warned about: they hold no tokens to lose
    # (the stdlib has several empty __init__.py).
    self.skipped = {"not_utf8": not_utf8, "empty": empty}
    if not_utf8:
      _warn_skipped(name, "files that are not UTF-8 text", not_utf8)
    if not paths:
      raise DataError(f"data source {name!r}: none of its {len(files)} files is a "
                      f"non-empty UTF-8 text file (first: {str(files[0])!r})")
    self.paths = paths
    self.keys = keys
    self.heldout = _split(keys, heldout_fraction)

  def paths_of(self, indices) -> list[str]:
    return [self.paths[i] for i in indices]

  def key(self, i: int) -> str:
    return self.keys[i]

  def text(self, i: int, tok=None) -> str:
    with open(self.paths[i], "rb") as f:  # bytes: no newline translation
      return f.read().decode("utf-8")


def _stdlib_root(name: str, path: str) -> pathlib.Path:
  root = pathlib.Path(path).expanduser() if path else corpus.stdlib_root()
  if not root.is_dir():
    raise DataError(f"data source {name!r} (stdlib): {str(root)!r} is not a directory; "
                    f"set config.data.sources.{name}.path to a Python stdlib "
                    "directory or '' for the running interpreter's")
  return root


def stdlib_source(name: str, path: str, heldout_fraction: float, include: str = "",
                  exclude: str = "") -> TextFiles:
  """The stdlib's ``.py`` files under ``path`` ("": the running interpreter's), less
  tests and generated files; ``include``/``exclude`` as ``select_files``. Held-out
  documents are chosen by relative path, so a subset keeps the full corpus's split."""
  root = _stdlib_root(name, path)
  files = corpus.stdlib_files(root)
  if not files:
    raise DataError(f"data source {name!r} (stdlib): no .py files under {str(root)!r}")
  files = select_files(name, root, [root / f for f in files], include, exclude)
  src = TextFiles(name, root, files, heldout_fraction)
  src.kind = "stdlib"
  return src


class JsonLines(Source):
  """One document per JSON line, text in ``text_field``."""

  kind = "jsonl"

  def __init__(self, name: str, root, files, heldout_fraction: float,
               text_field: str = "text"):
    super().__init__(name)
    self.files = [str(f) for f in files]
    self.rel_files = [pathlib.Path(f).relative_to(root).as_posix() for f in files]
    self.text_field = text_field
    file_ids, offsets, lengths, linenos, keys, empty = [], [], [], [], [], []
    for fid, f in enumerate(files):
      rel = self.rel_files[fid]
      offset = 0
      with open(f, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
          n = len(line)
          if line.strip():
            where = f"{f}:{lineno}"
            record = self._parse(line, where)
            if self._is_empty(record):
              empty.append(where)
            else:
              file_ids.append(fid)
              offsets.append(offset)
              lengths.append(n)
              linenos.append(lineno)
              keys.append(f"{rel}:{lineno}")
          offset += n
    self.skipped = {"empty": empty}  # no tokens lost: counted, not warned about
    if not keys:
      raise DataError(f"data source {name!r} ({self.kind}): no records in "
                      f"{', '.join(self.files[:3])}")
    self.file_ids = np.asarray(file_ids, np.int32)
    self.offsets = np.asarray(offsets, np.int64)
    self.lengths = np.asarray(lengths, np.int64)
    self.linenos = np.asarray(linenos, np.int64)  # keys rebuilt on demand (key())
    self.heldout = _split(keys, heldout_fraction)

  def key(self, i: int) -> str:
    return f"{self.rel_files[self.file_ids[i]]}:{self.linenos[i]}"

  def _parse(self, line: bytes, where: str):
    """Validates one line; returns what ``_is_empty`` needs."""
    record = _load_json(line, where)
    if not isinstance(record, dict) or self.text_field not in record:
      keys = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"{where}: no {self.text_field!r} field (the line has {keys}); "
                      f"set config.data.sources.{self.name}.text_field")
    if not isinstance(record[self.text_field], str):
      raise DataError(f"{where}: field {self.text_field!r} is "
                      f"{type(record[self.text_field]).__name__}, not a string")
    return record[self.text_field]

  def _is_empty(self, parsed) -> bool:
    return not parsed

  def _record(self, i: int):
    with open(self.files[self.file_ids[i]], "rb") as f:
      f.seek(int(self.offsets[i]))
      return json.loads(f.read(int(self.lengths[i])))

  def text(self, i: int, tok=None) -> str:
    return self._record(i)[self.text_field]


def _load_json(line: bytes, where: str):
  try:
    return json.loads(line)
  except UnicodeDecodeError as e:
    raise DataError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None


class SftJsonLines(JsonLines):
  """Conversations (LIMA-style) from JSON Lines; see ``phijax.data.sft``."""

  kind = "sft"
  split_documents = False

  def __init__(self, name, root, files, heldout_fraction, max_tokens: int,
               template: str = "plain"):
    self.max_tokens = max_tokens
    sft.check_template(template, f"data source {name!r}: ")
    self.template = template
    super().__init__(name, root, files, heldout_fraction)

  def _parse(self, line: bytes, where: str):
    return sft.parse_conversation(_load_json(line, where), where)

  def _is_empty(self, turns) -> bool:
    return not any(text for role, text in turns if role == "assistant")

  def conversation(self, i: int):
    return sft.parse_conversation(self._record(i), f"{self.name}[{i}]")

  def text(self, i: int, tok=None) -> str:
    """The turns' texts joined by newlines (for text-only baselines such as gzip)."""
    return "\n".join(text for _, text in self.conversation(i))

  def tokens(self, i, tok):
    raise TypeError("SFT documents are rendered with phijax.data.sft.render")


class PreferenceJsonLines(SftJsonLines):
  """Preference pairs for DPO from JSON Lines: ``{"prompt", "chosen", "rejected"}``
  (strings), rendered with the source's chat template (``phijax.data.preferences``)."""

  kind = "preferences"
  FIELDS = ("prompt", "chosen", "rejected")

  def _parse(self, line: bytes, where: str):
    record = _load_json(line, where)
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), str) for k in self.FIELDS):
      keys = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"{where}: a preference record needs string fields 'prompt', "
                      f"'chosen' and 'rejected'; the line has {keys}")
    return record

  def _is_empty(self, record) -> bool:
    return not record["chosen"] or not record["rejected"]

  def pair(self, i: int) -> dict:
    return self._record(i)

  def conversation(self, i: int):
    raise TypeError("preference pairs train with train.objective='dpo' "
                    "(phijax.data.preferences), not as SFT conversations")

  def text(self, i: int, tok=None) -> str:
    r = self.pair(i)
    return r["prompt"] + "\n" + r["chosen"]


class ChosenJsonLines(PreferenceJsonLines):
  """The chosen side of preference pairs as SFT conversations: the prompt, then the
  chosen response, loss on the response and its end-of-turn. It reads the same file
  with the same document keys as a ``preferences`` source of it, so it has the same
  train / held-out split: plain SFT on exactly the pairs DPO trains on, the baseline a
  DPO gain is measured against (``experiments/exercise_dpo.py``)."""

  kind = "chosen"

  def conversation(self, i: int):
    r = self.pair(i)
    return [("user", r["prompt"]), ("assistant", r["chosen"])]


class ArrayRecordTokens(Source):
  """Pre-tokenized documents: one ArrayRecord record per document, int32 ids."""

  kind = "array_record"

  def __init__(self, name: str, root, files, heldout_fraction: float):
    super().__init__(name)
    import grain  # local: only this source needs array_record
    from array_record.python import array_record_module
    self.files = [str(f) for f in files]
    keys = []
    for f in files:
      rel = pathlib.Path(f).relative_to(root).as_posix()
      try:
        reader = array_record_module.ArrayRecordReader(str(f))
        count = reader.num_records()
        reader.close()
      except Exception as e:  # the C++ reader's errors (RuntimeError, ValueError)
        raise DataError(f"data source {name!r}: {str(f)!r} is not an ArrayRecord file "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        ) from None
      keys.extend(f"{rel}:{k}" for k in range(count))
    if not keys:
      raise DataError(f"data source {name!r}: no records in {', '.join(self.files[:3])}")
    self._records = grain.sources.ArrayRecordDataSource(self.files)
    self.heldout = _split(keys, heldout_fraction)

  def tokens(self, i: int, tok) -> np.ndarray:
    ids = np.frombuffer(self._records[int(i)], "<i4")
    if ids.size and (ids.min() < 0 or ids.max() >= tok.vocab_size):
      raise DataError(
          f"data source {self.name!r}: record {i} has token id {int(ids.max())} "
          f"outside the tokenizer's vocabulary (size {tok.vocab_size}); the records "
          "were written with another tokenizer")
    return np.concatenate([ids.astype(np.int32), np.asarray([tok.eos_id], np.int32)])

  def text(self, i: int, tok=None) -> str:
    if tok is None:
      raise DataError(f"data source {self.name!r} is pre-tokenized: pass the tokenizer "
                      "to get its text")
    return tok.decode(self.tokens(i, tok)[:-1])


def write_array_record(path, documents) -> int:
  """Writes token-id documents (sequences of ints) as an ``array_record`` source
  file; returns the number of records."""
  from array_record.python import array_record_module
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  n = 0
  for doc in documents:
    writer.write(np.asarray(doc, "<i4").tobytes())
    n += 1
  writer.close()
  return n


# ------------------------------------------------------------------------- the kinds
# Registered in the order errors list them (``phijax.data.config.source``'s too).

def _stdlib_files(name: str, scfg):
  root = _stdlib_root(name, scfg.path)
  return root, select_files(name, root, [root / f for f in corpus.stdlib_files(root)],
                            scfg.get("glob", ""), scfg.get("exclude", ""))


@kinds.register("stdlib", files=_stdlib_files)
def _stdlib(name, scfg, heldout_fraction, seq_len=None):
  return stdlib_source(name, scfg.path, heldout_fraction, scfg.get("glob", ""),
                       scfg.get("exclude", ""))


def _reads_files(kind: str, default_glob: str):
  """Registers ``read(name, scfg, root, files, heldout_fraction)`` as kind ``kind``:
  a source of the files its ``path`` names (``glob`` defaults to ``default_glob``)."""
  def files(name, scfg):
    return resolve_files(name, kind, scfg.path, scfg.get("glob", ""),
                         scfg.get("exclude", ""), default_glob=default_glob)

  def add(read):
    def build(name, scfg, heldout_fraction, seq_len=None):
      root, paths = files(name, scfg)
      return read(name, scfg, root, paths, heldout_fraction)
    kinds.register(kind, files=files)(build)
    return read
  return add


@_reads_files("auto", "**/*")
def _auto(name, scfg, root, files, heldout_fraction):
  read = _jsonl if detect_kind(files) == "jsonl" else _text
  return read(name, scfg, root, files, heldout_fraction)


@_reads_files("text", "**/*")
def _text(name, scfg, root, files, heldout_fraction):
  return TextFiles(name, root, files, heldout_fraction)


@_reads_files("jsonl", "**/*.jsonl")
def _jsonl(name, scfg, root, files, heldout_fraction):
  return JsonLines(name, root, files, heldout_fraction, scfg.get("text_field", "text"))


@_reads_files("sft", "**/*.jsonl")
def _sft(name, scfg, root, files, heldout_fraction):
  return SftJsonLines(name, root, files, heldout_fraction, scfg.get("max_tokens", 0),
                      scfg.get("template", "plain"))


@_reads_files("preferences", "**/*.jsonl")
def _preferences(name, scfg, root, files, heldout_fraction):
  return PreferenceJsonLines(name, root, files, heldout_fraction,
                             scfg.get("max_tokens", 0), scfg.get("template", "plain"))


@_reads_files("chosen", "**/*.jsonl")
def _chosen(name, scfg, root, files, heldout_fraction):
  return ChosenJsonLines(name, root, files, heldout_fraction, scfg.get("max_tokens", 0),
                         scfg.get("template", "plain"))


@_reads_files("array_record", "**/*.array_record*")
def _array_record(name, scfg, root, files, heldout_fraction):
  return ArrayRecordTokens(name, root, files, heldout_fraction)


def kind_names(generated: bool | None = None) -> tuple[str, ...]:
  """Every kind (this module imports every module that defines one); ``generated``:
  only the generated ones, or only those read from files (``config.source``'s)."""
  return kinds.registered(generated)


def build_source(name: str, scfg, heldout_fraction: float,
                 seq_len: int | None = None) -> Source:
  """The source ``config.data.sources[name]`` describes. ``seq_len`` (the rows it
  feeds) lets a generated source refuse documents longer than a row. With ``dedup``,
  ``decontaminate`` or ``quality_scores`` set, its training documents are filtered
  (``src.dropped``)."""
  src = kinds.lookup(name, scfg.kind).build(name, scfg, heldout_fraction, seq_len)
  if (scfg.get("dedup", "") or scfg.get("decontaminate", "")
      or scfg.get("quality_scores", "") or scfg.get("quality_keep", 0.0)
      or scfg.get("quality_min", 0.0)):
    # Local: the filters (and datasketch) load only for a source that asks for them.
    from phijax.data.quality import filters
    filters.apply(src, scfg, heldout_fraction)
  return src


def source_files(name: str, scfg):
  """``(root, files)`` a source reads, found without reading them (stdlib: its first
  lines, for generated-file markers): what a tokenizer cache key fingerprints."""
  return kinds.lookup(name, scfg.kind).files(name, scfg)
