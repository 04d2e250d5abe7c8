"""Prepare a corpus once: every document tokenized into sharded ArrayRecord files.

    python -m phijax.data.prepare --config=tiny --out=data/stdlib_prepared
    python -m phijax.train --config=tiny --workdir=runs/tiny \\
        --config.data.prepared=data/stdlib_prepared
    # several hosts, each its shards (resumable: finished shards are kept):
    python -m phijax.data.prepare --config=phi1_5 --out=DIR --process_index=I --process_count=N

For each text source of the config (weight > 0, or ``--sources``), documents
``[s M, (s + 1) M)`` of shard ``s`` (``--shard_documents`` M) go to
``OUT/NAME/shard-SSSSS.array_record`` (one record per document: its int32 token ids,
``<|endoftext|>`` included) with their lengths in ``shard-SSSSS.lengths.npy`` (written
last: a shard is finished when both exist). Shard ``s`` is written by process
``s mod N``. ``NAME/source.json`` says what the shards are made of (tokenizer, corpus,
shard size): a rerun keeps finished shards only if it matches. ``manifest.json``
(written once every shard is there) names per source the tokenizer (SHA-256 of its
model), documents, shards, tokens and what identifies its documents (their keys and
the files' sizes).

A run with ``data.prepared=DIR`` reads its text sources' tokens from there: nothing is
tokenized, and with ``data.shuffle="global"`` a row is packed from the stored lengths
(arithmetic) and only the documents it holds are read, so a host reads about its
share of the corpus (``phijax.data.hosts``). The batches are the ones on-the-fly
reading gives (the same documents, tokens and packing). Rows are not stored, so one
prepared corpus serves every ``seq_len``. A manifest of another tokenizer, a source
whose files changed, a missing or damaged shard: each is a one-line ``DataError``
naming it. Generated (``arithmetic``) and SFT / preference sources are read as before.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from phijax import cli
from phijax.data.errors import DataError

MANIFEST = "manifest.json"
FORMAT = 1


def tokenizer_hash(tok) -> str:
  return hashlib.sha256(tok.model_proto).hexdigest()


def identity(src, scfg) -> str:
  """What a source's documents are: their keys and its files' sizes (not their times:
  a corpus copied to each host is the same corpus)."""
  import pathlib

  from phijax.data import sources
  root, files = sources.source_files(src.name, scfg)
  h = hashlib.sha256("\n".join(src.key(i) for i in range(src.num_documents)).encode())
  for f in files:
    h.update(f"{pathlib.Path(f).relative_to(root).as_posix()}:{f.stat().st_size}\n".encode())
  return h.hexdigest()


def preparable(src) -> bool:
  """Text documents split into rows: what ``prepare`` stores (not SFT, not generated)."""
  from phijax.data import kinds
  return src.split_documents and not kinds.lookup(src.name, src.kind).generated


def _shard_path(out, name, s):
  return os.path.join(out, name, f"shard-{s:05d}.array_record")


def prepare(cfg_data, tok, out: str, *, names=None, shard_documents: int = 1024,
            process_index: int = 0, process_count: int = 1, threads: int = 1) -> dict:
  """Writes this process's shards of ``names`` (default: the sources with weight > 0
  that ``preparable`` accepts) and, when every shard exists, the manifest. Returns
  ``{"written": shards written now, "kept": finished shards found, "manifest": path
  or None}``."""
  from array_record.python import array_record_module

  from phijax.data import sources
  if shard_documents < 1:
    raise DataError(f"--shard_documents must be >= 1, got {shard_documents}")
  if names is None:
    names = [n for n in cfg_data.sources if cfg_data.sources[n].weight > 0]
  unknown = [n for n in names if n not in cfg_data.sources]
  if unknown:
    raise DataError(f"--sources names {unknown}, which the config does not have "
                    f"({sorted(cfg_data.sources)})")
  srcs = {n: sources.build_source(n, cfg_data.sources[n], cfg_data.heldout_fraction,
                                  cfg_data.seq_len) for n in names}
  skipped = [n for n, s in srcs.items() if not preparable(s)]
  srcs = {n: s for n, s in srcs.items() if n not in skipped}
  if not srcs:
    raise DataError(f"no text source to prepare among {names} (generated, SFT and "
                    "preference sources are read as they are)")
  if not 0 <= process_index < process_count:
    raise DataError(f"--process_index={process_index} is not in [0, {process_count})")
  written = kept = 0
  for name, src in srcs.items():
    n = src.num_documents
    shards = -(-n // shard_documents)
    _claim(out, name, {"tokenizer_sha256": tokenizer_hash(tok),
                       "identity": identity(src, cfg_data.sources[name]),
                       "documents": n, "shard_documents": shard_documents})
    mine = [s for s in range(shards) if s % process_count == process_index]
    progress = cli.Progress(f"prepare {name} (process {process_index} of {process_count})")
    for done, s in enumerate(mine):
      path = _shard_path(out, name, s)
      if os.path.exists(path) and os.path.exists(path[:-len(".array_record")] + ".lengths.npy"):
        kept += 1
        continue
      os.makedirs(os.path.dirname(path), exist_ok=True)
      docs = range(s * shard_documents, min(n, (s + 1) * shard_documents))
      tokens = src.tokens_of(np.asarray(docs, np.int64), tok, threads)
      tmp = f"{path}.{os.getpid()}.tmp"
      writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
      for t in tokens:
        writer.write(np.asarray(t, "<i4").tobytes())
      writer.close()
      os.replace(tmp, path)
      lengths = path[:-len(".array_record")] + ".lengths.npy"
      np.save(lengths + ".tmp.npy", np.asarray([len(t) for t in tokens], np.int64))
      os.replace(lengths + ".tmp.npy", lengths)  # last: the shard is finished
      written += 1
      progress(min((done + 1) * shard_documents, n), n)
  manifest = _write_manifest(cfg_data, tok, out, srcs, shard_documents)
  return {"written": written, "kept": kept, "manifest": manifest, "skipped": skipped}


def _claim(out, name, stamp: dict) -> None:
  """``OUT/NAME/source.json``: what the shards there are made of. Finished shards are
  kept only when it matches (another tokenizer, corpus or shard size is refused)."""
  path = os.path.join(out, name, "source.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.exists(path):
    with open(path) as f:
      have = json.load(f)
    if have != stamp:
      differ = sorted(k for k in stamp if have.get(k) != stamp[k])
      raise DataError(f"{os.path.dirname(path)} holds shards of {name!r} prepared with "
                      f"another {', '.join(differ)}; delete that directory or prepare "
                      "into another --out")
    return
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(stamp, f, indent=2)
  os.replace(tmp, path)


def _write_manifest(cfg_data, tok, out, srcs, shard_documents):
  entries = {}
  for name, src in srcs.items():
    shards = -(-src.num_documents // shard_documents)
    lengths = []
    for s in range(shards):
      path = _shard_path(out, name, s)[:-len(".array_record")] + ".lengths.npy"
      if not os.path.exists(path):
        return None  # other processes' shards are still to come
      lengths.append(np.load(path))
    entries[name] = {"documents": src.num_documents, "shards": shards,
                     "shard_documents": shard_documents,
                     "tokens": int(sum(int(x.sum()) for x in lengths)),
                     "identity": identity(src, cfg_data.sources[name]),
                     "tokenizer_sha256": tokenizer_hash(tok)}
  path = os.path.join(out, MANIFEST)
  old = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f).get("sources", {})
  manifest = {"format": FORMAT, "sources": {**old, **entries}}
  tmp = f"{path}.{os.getpid()}.tmp"  # processes finishing together each write whole
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, path)
  return path


class PreparedTokens:
  """One source's prepared documents: ``lengths`` (tokens of each, ``<|endoftext|>``
  included) and ``tokens(i)``."""

  def __init__(self, root: str, name: str, entry: dict, tokenizer_sha256: str):
    import grain
    self.name, self.tokenizer_sha256 = name, tokenizer_sha256
    self._checked = None
    files, lengths = [], []
    for s in range(entry["shards"]):
      path = _shard_path(root, name, s)
      lpath = path[:-len(".array_record")] + ".lengths.npy"
      if not (os.path.exists(path) and os.path.exists(lpath)):
        raise DataError(f"data.prepared: shard {path} is missing (the manifest lists "
                        f"{entry['shards']} for {name!r}); run python -m "
                        "phijax.data.prepare again to finish it")
      lengths.append(np.load(lpath))
      files.append(path)
    self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    if len(self.lengths) != entry["documents"]:
      raise DataError(f"data.prepared: {name!r} has {len(self.lengths)} documents in its "
                      f"shards but {entry['documents']} in the manifest; prepare it again")
    try:
      self._records = grain.sources.ArrayRecordDataSource(files)
      found = len(self._records)
    except Exception as e:  # the C++ reader's errors
      raise DataError(f"data.prepared: a shard of {name!r} under {root} is damaged "
                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                      "delete it and run python -m phijax.data.prepare again") from None
    if found != len(self.lengths):
      raise DataError(f"data.prepared: the shards of {name!r} hold {found} records for "
                      f"{len(self.lengths)} documents: damaged; prepare again")

  def check_tokenizer(self, tok) -> None:
    if self._checked is not tok:
      if tokenizer_hash(tok) != self.tokenizer_sha256:
        raise DataError(f"data.prepared: {self.name!r} was prepared with another tokenizer "
                        "(its SHA-256 differs from this run's): prepare the corpus again "
                        "with this tokenizer, or train with the one it was prepared with")
      self._checked = tok

  def tokens(self, i: int) -> np.ndarray:
    try:
      raw = self._records[int(i)]
    except Exception as e:
      raise DataError(f"data.prepared: document {i} of {self.name!r} is unreadable "
                      f"({type(e).__name__}): a damaged shard; prepare it again") from None
    ids = np.frombuffer(raw, "<i4").astype(np.int32)
    if len(ids) != self.lengths[int(i)]:
      raise DataError(f"data.prepared: document {i} of {self.name!r} has {len(ids)} "
                      f"tokens, its shard's lengths say {int(self.lengths[int(i)])}: "
                      "damaged; prepare it again")
    return ids


class PreparedSource:
  """A source whose tokens come from a prepared directory; everything else (split,
  texts, keys, filters) is the source's own."""

  def __init__(self, inner, store: PreparedTokens):
    self._inner, self.prepared = inner, store

  def __getattr__(self, name):
    if name.startswith("__") or name == "_inner":  # unpickling: no _inner yet
      raise AttributeError(name)
    return getattr(self._inner, name)

  def tokens(self, i: int, tok) -> np.ndarray:
    self.prepared.check_tokenizer(tok)
    return self.prepared.tokens(i)

  def tokens_of(self, indices, tok, threads: int = 1, chunk: int = 256):
    return [self.tokens(int(i), tok) for i in indices]

  def __repr__(self):
    return f"Prepared({self._inner!r})"


def attach(cfg_data, srcs: dict) -> dict:
  """``srcs`` with each preparable source reading ``data.prepared`` (unchanged when
  the setting is empty)."""
  root = str(cfg_data.get("prepared", "") or "")
  if not root:
    return srcs
  root = os.path.abspath(os.path.expanduser(root))
  path = os.path.join(root, MANIFEST)
  if not os.path.isfile(path):
    raise DataError(f"data.prepared={root}: no {MANIFEST} there (not prepared, or still "
                    "being prepared): run python -m phijax.data.prepare --out=" + root)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"data.prepared: {path} is unreadable ({e}); prepare again") from None
  if manifest.get("format") != FORMAT:
    raise DataError(f"data.prepared: {path} is format {manifest.get('format')!r}, this "
                    f"phijax reads {FORMAT}; prepare again")
  out = dict(srcs)
  for name, src in srcs.items():
    if not preparable(src):
      continue
    entry = manifest.get("sources", {}).get(name)
    if entry is None:
      raise DataError(f"data.prepared: {root} has no source {name!r} (it has "
                      f"{sorted(manifest.get('sources', {}))}); prepare it with "
                      f"--sources={name}")
    if entry["identity"] != identity(src, cfg_data.sources[name]):
      raise DataError(f"data.prepared: source {name!r} is not the corpus prepared in "
                      f"{root} (its documents or files changed); prepare it again")
    out[name] = PreparedSource(src, PreparedTokens(root, name, entry,
                                                   entry["tokenizer_sha256"]))
  return out


def main(args):
  from phijax import data
  config = args.config
  tok = data.load_tokenizer(config.data)
  names = [n.strip() for n in args.sources.split(",") if n.strip()] or None
  s = prepare(config.data, tok, args.out, names=names, shard_documents=args.shard_documents,
              process_index=args.process_index, process_count=args.process_count,
              threads=config.data.read_threads)
  print(f"prepared {args.out}: {s['written']} shard(s) written, {s['kept']} kept"
        + (f"; skipped {s['skipped']} (read as they are)" if s["skipped"] else ""))
  print(f"manifest: {s['manifest']}" if s["manifest"] else
        "manifest: not yet (other processes' shards are still to come)")


parser = cli.ArgumentParser(prog="python -m phijax.data.prepare", description=__doc__)
cli.add_config(parser)  # the run config whose data sources and tokenizer to prepare
parser.add_argument("--out", required=True, metavar="DIR", help="the prepared directory")
parser.add_argument("--sources", default="", help="comma-separated source names "
                    "(default: those with weight > 0)")
parser.add_argument("--shard_documents", type=cli.positive_int, default=1024, metavar="M",
                    help="documents per shard (default 1024)")
parser.add_argument("--process_index", type=int, default=0, metavar="I")
parser.add_argument("--process_count", type=cli.positive_int, default=1, metavar="N")

if __name__ == "__main__":
  cli.main(parser, main)
