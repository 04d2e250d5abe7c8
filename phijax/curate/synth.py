"""Synthetic textbooks (phi-1.5's generated data): prompts built from topic x audience x
style lists, continued by a teacher model, deduplicated against themselves and a
corpus, written to a directory that resumes.

    settings = synth.Settings(teacher=m.source, topics=..., audiences=..., styles=...)
    state = synth.generate(out, settings, count=200, batch_size=16,
                           tokenizer=m.tokenizer, generator=Generator(m.cfg, m.params))

- Document ``i`` depends on ``(seed, i)`` only: its topic, audience and style are picked
  by sha256 of ``"seed/i/field"`` (no RNG state carried from one document to the next,
  stable across numpy versions), and it samples with ``Generator.complete``'s key
  ``fold_in(fold_in(key(seed), i), 0)``; the generator draws each row with its own key,
  so batch boundaries and resumes change nothing.
- A document is kept unless its text is shorter than ``min_chars`` or duplicates an
  earlier kept document or a corpus document: the same ``normalize.exact_key``, or, with
  ``dedup="near"``, an estimated Jaccard similarity >= ``dedup_threshold`` over
  ``phijax.data.quality.dedup``'s word shingles and MinHash settings (found with LSH).
  Earlier means a lower index, so what is kept is the same however the run was cut up.
- ``OUT/documents.jsonl``: one JSON object per kept document (``text`` first: a ``jsonl``
  source reads it); ``OUT/dropped.jsonl``: the dropped ones, with their reason;
  ``OUT/state.json``: the settings (lists by hash), the next index and the counts.
  A batch appends whole lines to both files (flushed and fsynced), then replaces
  the state atomically. On start, lines at or past the state's next index (a batch cut
  off before its state was saved) and a torn last line are cut off; the batch is
  generated again, identically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import string
import sys
import time

from phijax import cli, files
from phijax.data.quality.dedup_index import DuplicateIndex
from phijax.data.quality import dedup

FIELDS = ("topic", "audience", "style")
DEFAULT_TEMPLATE = ("A textbook section on {topic}, written for {audience}, in the style of "
                    "{style}.\n\n")
STATE, DOCUMENTS, DROPPED = "state.json", "documents.jsonl", "dropped.jsonl"
REASONS = ("too_short", "copy_of_earlier", "near_earlier", "copy_of_corpus", "near_corpus")
TOOL = "phijax.curate synth"
# How the error for a changed setting names it (others: by their flag, --name).
NAMES = {"teacher": "teacher (--workdir/--params_dir/--hf_dir, --step)",
         "corpus": "corpus (--config, --source, or their files changed)"}


def read_list(path: str | None, name: str) -> tuple[str, ...]:
  """The items of a list file (one per line; blank and ``#`` lines skipped); ``path``
  None reads the packaged ``lists/{name}.txt``."""
  if path is None:
    packaged = importlib.resources.files(__package__) / "lists" / f"{name}.txt"
    text = packaged.read_text("utf-8")
  else:
    with open(path, "rb") as f, files.reading(path, f"a {name} list (UTF-8 text, one "
                                               "item per line)"):
      text = f.read().decode("utf-8")
  items = tuple(s.strip() for s in text.splitlines()
                if s.strip() and not s.lstrip().startswith("#"))
  if not items:
    raise cli.UsageError(f"--{name}={path} has no items: write one {name[:-1]} per line")
  return items


def check_template(template: str) -> str:
  """``template`` if its only fields are ``{topic}``, ``{audience}``, ``{style}``."""
  try:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
  except ValueError as e:
    raise cli.UsageError(f"--template={template!r}: {e} (write {{{{ and }}}} for braces)") from None
  for f in fields:
    if f not in FIELDS:
      raise cli.UsageError(f"--template names an unknown field {{{f}}}: it may use "
                           f"{', '.join('{' + n + '}' for n in FIELDS)}")
  return template


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the documents depend on (the state keeps it; a resume must match it)."""
  teacher: str  # model_source.Loaded.source: "run DIR, step N", ...
  topics: tuple[str, ...]
  audiences: tuple[str, ...]
  styles: tuple[str, ...]
  seed: int = 0
  template: str = DEFAULT_TEMPLATE
  max_new_tokens: int = 512
  temperature: float = 0.8
  top_k: int = 0
  top_p: float = 0.95
  stop: tuple[str, ...] = ()
  include_prompt: bool = False  # text = prompt + completion (default: the completion)
  min_chars: int = 200
  dedup: str = "near"  # or "exact"
  dedup_threshold: float = 0.8
  corpus: dict | None = None  # what identifies the corpus (data.fingerprint.corpus_key)

  def identity(self) -> dict:
    """The settings as the state stores them (as JSON reads them back): the lists by
    sha256 of their items."""
    d = dataclasses.asdict(self)
    for name in ("topics", "audiences", "styles"):
      d[name] = hashlib.sha256("\n".join(d[name]).encode("utf-8")).hexdigest()
    return json.loads(json.dumps(d))

  def dedup_settings(self) -> dedup.Settings:
    return dedup.Settings(mode=self.dedup, threshold=self.dedup_threshold).check(
        {"mode": "--dedup", "threshold": "--dedup_threshold"})

  def pick(self, i: int) -> dict:
    """Document ``i``'s topic, audience and style: a function of ``(seed, i)`` only."""
    def one(field, items):
      h = hashlib.sha256(f"{self.seed}/{i}/{field}".encode()).digest()
      return items[int.from_bytes(h[:8], "big") % len(items)]
    return dict(topic=one("topic", self.topics), audience=one("audience", self.audiences),
                style=one("style", self.styles))

  def prompt(self, i: int) -> tuple[str, dict]:
    fields = self.pick(i)
    return self.template.format(**fields), fields


# --- the output directory ------------------------------------------------------------

def _fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_state(out: str, state: dict) -> None:
  """Replaces ``OUT/state.json`` atomically (a kill leaves the old one or the new one)."""
  path = os.path.join(out, STATE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(state, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)
  _fsync_dir(out)


def append_lines(path: str, records: list[dict]) -> None:
  """Whole JSON lines appended, flushed and fsynced before the state names them."""
  data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
  with open(path, "ab") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _scan(path: str, next_index: int) -> tuple[list[dict], int, int]:
  """``(records, keep_bytes, size)``: the records of ``path`` below ``next_index`` and the
  length of the file they fill; what follows (a torn line, a batch whose state was
  never saved) is to be cut off."""
  if not os.path.exists(path):
    return [], 0, 0
  with open(path, "rb") as f:
    raw = f.read()
  records, pos = [], 0
  while pos < len(raw):
    end = raw.find(b"\n", pos)
    if end < 0:
      break  # a torn last line: never counted in the state
    try:
      rec = json.loads(raw[pos:end])
      index = rec["index"]
    except (ValueError, TypeError, KeyError):
      break  # judged below: past the state's count it is a torn batch, else corruption
    if not isinstance(index, int) or index >= next_index or (
        records and index <= records[-1]["index"]):
      break
    records.append(rec)
    pos = end + 1
  return records, pos, len(raw)


def open_out(out: str, settings: Settings, count: int, log=None) -> tuple[dict, list[dict]]:
  """``(state, kept records)`` of ``out``: a new state, or the saved one after checking
  the settings match and cutting off what its last batch left unsaved."""
  log = log or _stderr
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, STATE)
  ident = settings.identity()
  if not os.path.exists(path):
    for name in (DOCUMENTS, DROPPED):
      if os.path.exists(os.path.join(out, name)):
        raise cli.UsageError(f"{out} has {name} but no {STATE}: it was not written by this "
                             "command (or its state was deleted); choose a new --out")
    state = dict(tool=TOOL, settings=ident, count=count, next_index=0, kept=0,
                 dropped={r: 0 for r in REASONS}, tokens=0, seconds=0.0)
    write_state(out, state)
    return state, []
  state = files.read_json_object(path, "a synth state file")
  fields = dict(settings=dict, next_index=int, kept=int, dropped=dict, tokens=int,
                seconds=(int, float))
  bad = [k for k, t in fields.items() if not isinstance(state.get(k), t)]
  if state.get("tool") != TOOL or bad:
    what = "tool" if state.get("tool") != TOOL else bad[0]
    raise files.BadFile(f"{path} is not a {TOOL} state file ({what!r} is missing or "
                        "wrong); choose a new --out")
  for key in ident:
    if state["settings"].get(key) != ident[key]:
      old, new = (_short(state["settings"].get(key)), _short(ident[key]))
      raise cli.UsageError(
          f"--out={out} was generated with another {NAMES.get(key, '--' + key)}: {old} "
          f"there, {new} now; rerun with its settings ({path}) to continue it, or choose a "
          "new --out")
  kept, keep_docs, size_docs = _scan(os.path.join(out, DOCUMENTS), state["next_index"])
  dropped, keep_drop, size_drop = _scan(os.path.join(out, DROPPED), state["next_index"])
  counted = sum(state["dropped"].values())
  if len(kept) != state["kept"] or len(dropped) != counted:
    raise files.BadFile(
        f"{out}: {DOCUMENTS} and {DROPPED} hold {len(kept)} kept and {len(dropped)} dropped "
        f"documents below index {state['next_index']}, but {STATE} counts {state['kept']} "
        f"and {counted}: a file was edited or damaged; choose a new --out")
  for name, keep, size in ((DOCUMENTS, keep_docs, size_docs), (DROPPED, keep_drop, size_drop)):
    if size > keep:
      log(f"synth: cut {size - keep} bytes off {name}: written after the last saved state "
          "(a run stopped mid-batch); that batch is generated again")
      with open(os.path.join(out, name), "r+b") as f:
        f.truncate(keep)
        os.fsync(f.fileno())
  state["count"] = count  # may change: document i does not depend on it
  return state, kept


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def describe_drops(dropped: dict) -> str:
  parts = [f"{n} {r}" for r, n in dropped.items() if n]
  return f" ({', '.join(parts)})" if parts else ""


# --- generation ------------------------------------------------------------------------

def generate(out: str, settings: Settings, *, count: int, batch_size: int, tokenizer,
             generator, corpus=None, log=None, opened=None) -> dict:
  """Documents ``state["next_index"] .. count - 1`` of ``out``, generated in batches of
  ``batch_size``; returns the final state. ``generator`` has ``Generator.complete``'s
  interface; ``corpus()`` yields ``(label, text)`` of the documents to dedup against
  (read only when there is something to generate); ``opened``: what ``open_out``
  returned, when the caller opened ``out`` itself."""
  log = log or _stderr
  state, kept = opened or open_out(out, settings, count, log)
  if state["next_index"] >= count:
    log(f"synth: {out} already holds documents 0..{state['next_index'] - 1}: nothing to "
        "generate (a larger --count generates more)")
    return state
  index = DuplicateIndex(settings.dedup_settings())
  if corpus is not None:
    start, n = time.monotonic(), 0
    for label, text in corpus():
      index.add(text, f"corpus:{label}")
      n += 1
    log(f"synth: indexed {n:,} corpus documents in {time.monotonic() - start:.1f}s")
  for rec in kept:
    index.add(rec["text"], f"document:{rec['index']}")
  while state["next_index"] < count:
    first = state["next_index"]
    ids = list(range(first, min(first + batch_size, count)))
    prompts, fields = zip(*(settings.prompt(i) for i in ids))
    start = time.monotonic()
    outs = generator.complete(
        tokenizer, list(prompts), n=1, max_new_tokens=settings.max_new_tokens,
        batch_size=len(ids), stop=list(settings.stop), seed=settings.seed, key_ids=ids,
        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    seconds = time.monotonic() - start
    new_kept, new_dropped, tokens = [], [], 0
    for i, prompt, f, (o,) in zip(ids, prompts, fields, outs):
      tokens += len(o.ids)
      completion = o.text.strip()
      text = (prompt + completion) if settings.include_prompt else completion
      rec = dict(text=text, prompt=prompt, **f, index=i, seed=settings.seed,
                 teacher=settings.teacher, finish=o.finish, tokens=len(o.ids))
      if len(completion) < settings.min_chars:
        reason, match, sig = "too_short", None, None
      else:
        match, sig = index.match(text)
        reason = None
        if match is not None:
          where = "corpus" if match[0].startswith("corpus:") else "earlier"
          reason = f"copy_of_{where}" if match[2] else f"near_{where}"
      if reason is None:
        index.add(text, f"document:{i}", sig)
        new_kept.append(rec)
      else:
        rec.update(reason=reason, duplicate_of=match[0] if match else None,
                   similarity=round(match[1], 4) if match else None)
        new_dropped.append(rec)
        state["dropped"][reason] = state["dropped"].get(reason, 0) + 1
    append_lines(os.path.join(out, DOCUMENTS), new_kept)
    append_lines(os.path.join(out, DROPPED), new_dropped)
    state["next_index"] = ids[-1] + 1
    state["kept"] += len(new_kept)
    state["tokens"] += tokens
    state["seconds"] = round(state["seconds"] + seconds, 3)
    write_state(out, state)
    n_dropped = sum(state["dropped"].values())
    log(f"synth: {state['next_index']}/{count} documents, {state['kept']} kept, {n_dropped} "
        f"dropped{describe_drops(state['dropped'])}, {tokens / max(seconds, 1e-9):,.0f} tokens/s")
  return state
