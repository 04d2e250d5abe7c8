"""Defaults for ``config.data`` (owned by the data pipeline).

Every field is a str/int/float/bool so it can be overridden from the command line
(``--config.data.seq_len=512``, ``--config.data.sources.stdlib.weight=0.5``). New
sources are added in a config file with ``source(...)``::

    c.data.sources.docs = data_config.source("jsonl", "/data/docs.jsonl", weight=0.2)

and generated arithmetic problems with ``arithmetic(...)``::

    c.data.sources = dict(add=data_config.arithmetic("+", max_digits=8, format="reversed"))
"""

from ml_collections import ConfigDict

from phijax.data import sources


def source(kind: str = "text", path: str = "", *, text_field: str = "text",
           weight: float = 1.0, glob: str = "", exclude: str = "",
           max_tokens: int = 0, template: str = "plain", dedup: str = "",
           dedup_threshold: float = 0.8, decontaminate: str = "",
           decontaminate_n: int = 13, quality_scores: str = "",
           quality_keep: float = 0.0, quality_min: float = 0.0,
           quality_keep_by: str = "documents") -> ConfigDict:
  """One data source.

  Args:
    kind: ``stdlib`` (the running interpreter's standard library; ``path`` may point
      at another stdlib root), ``text`` (a file or a directory: one document per
      file), ``jsonl`` (one document per line, text in ``text_field``), ``sft``
      (JSON Lines of ``{"prompt", "response"}`` or ``{"messages": [{"role",
      "content"}]}`` records), ``preferences`` (JSON Lines of ``{"prompt", "chosen",
      "rejected"}`` for ``train.objective="dpo"``), ``chosen`` (a ``preferences`` file's
      chosen responses as ``sft`` conversations, with the same train / held-out split:
      the SFT baseline of a DPO run), ``array_record`` (pre-tokenized: one record per
      document, little-endian int32 token ids; see ``phijax.data.write_array_record``),
      ``auto`` (``jsonl`` if every file the path names ends in ``.jsonl``, else
      ``text``; decided when the source is built).
    path: a file, a directory (its files, read in sorted order) or a glob such as
      ``src/**/*.py`` (the files it matches; document keys, and so the held-out
      split, are relative to the directory before the first wildcard).
    text_field: ``jsonl`` only: the field of each record that holds its text.
    weight: share of training *tokens* (rows) drawn from this source.
    glob: which files of a directory are documents ("": all files for ``text`` and
      ``auto``, ``*.jsonl`` for ``jsonl``/``sft``, ``*.array_record*`` for
      ``array_record``). For ``stdlib``: comma-separated ``fnmatch`` patterns over
      paths relative to the stdlib root, the files kept (``"email/*,json/*"``).
    exclude: comma-separated ``fnmatch`` patterns over paths relative to the
      source's root (``*`` crosses ``/``): files left out, e.g. ``"email/*,json/*"``
      to hold whole packages back for a fine-tuning run. A pattern (here or in a
      ``stdlib`` glob) that matches no file is an error.
    max_tokens: ``sft``, ``preferences`` and ``chosen``: truncate a rendered
      conversation to this many tokens (0: ``seq_len + 1``, one full row).
    template: ``sft``, ``preferences`` and ``chosen``: the chat template, ``plain``
      (turns and end-of-turn tokens), ``phi3`` (``<|user|>``/``<|assistant|>``/
      ``<|end|>``) or ``phi15`` (``Instruct:``/``Output:``); see ``phijax.data.sft``.
    dedup: drop duplicate training documents, one kept per cluster: ``exact`` (same
      text once whitespace runs are collapsed), ``near`` (also a MinHash-LSH Jaccard
      of at least ``dedup_threshold``), "" off; training copies of a held-out document
      are all dropped (``python -m phijax.data.quality dedup`` reports them).
    dedup_threshold: ``dedup="near"``: the Jaccard similarity of two documents' sets of
      5-word shingles (MinHash estimate) at which they are duplicates.
    decontaminate: drop training documents that share a ``decontaminate_n``-gram of
      lowercased words with an evaluation set (comma-separated ``humaneval``,
      ``heldout`` = this source's held-out documents, or HumanEval/MBPP ``.jsonl``
      files); "" off.
    decontaminate_n: the n-gram length ``decontaminate`` matches (GPT-3 used 13).
    quality_scores: a scores file of this source's documents (``python -m
      phijax.curate score --out=PATH``: a classifier's probability that a document is
      "textbook quality", as phi-1 filtered The Stack), or ``random:SEED`` (uniform
      scores from a hash: the random subset of the same size, a quality filter's
      control); "" off. Needs ``quality_keep`` or ``quality_min``.
    quality_keep: keep the top fraction of training documents by score (0.5: the
      better half), ranked among those the other filters keep.
    quality_keep_by: what ``quality_keep`` is a fraction of: ``documents`` or ``bytes``
      (the best documents until they hold that share of the training bytes: two
      filters then keep subsets of the same size, whatever lengths they favour).
    quality_min: keep the training documents scoring at least this.
  """
  read_kinds = sources.kind_names(generated=False)
  if kind not in read_kinds:
    raise ValueError(f"unknown data source kind {kind!r}; choose one of {read_kinds}")
  return ConfigDict(dict(kind=kind, path=path, text_field=text_field,
                         weight=float(weight), glob=glob, exclude=exclude,
                         max_tokens=int(max_tokens), dedup=dedup,
                         dedup_threshold=float(dedup_threshold),
                         decontaminate=decontaminate, decontaminate_n=int(decontaminate_n),
                         quality_scores=quality_scores, quality_keep=float(quality_keep),
                         quality_min=float(quality_min), quality_keep_by=quality_keep_by,
                         template=template))


def arithmetic(ops: str = "+", min_digits: int = 1, max_digits: int = 5,
               format: str = "plain", *, width: int = 0, seed: int = 0,
               size: int = 100_000, heldout: int = 1000, heldout_share: float = 0.1,
               weight: float = 1.0) -> ConfigDict:
  """An arithmetic source (``phijax.data.arithmetic``): one problem per document,
  tokenized one character per token.

  Args:
    ops: the operations problems draw from, uniformly: ``+``, ``*`` or ``+*``.
    min_digits, max_digits: each operand's digit count, uniform in this range.
    format: ``plain`` (``12+345=357``), ``reversed`` (every number's digits
      reversed), ``padded`` (zero-padded to ``width``), ``spaces`` (random spaces
      between operand digits); Shen et al. 2023's representations.
    width: ``padded`` only: operand digits (0: ``max_digits``); evaluating longer
      operands than seen in training needs a width that holds them.
    seed: the problems' seed (independent of ``train.seed``, which shuffles them).
    size: distinct training problems, reshuffled every epoch.
    heldout: held-out problems, from a disjoint seed stream
      (``data.heldout_fraction`` does not apply).
    heldout_share: share of all problems (a, op, b) held out of training by a stable
      hash; held-out loss and the arithmetic evaluation use only those (0: no split).
  """
  return ConfigDict(dict(kind="arithmetic", ops=ops, min_digits=int(min_digits),
                         max_digits=int(max_digits), format=format, width=int(width),
                         seed=int(seed), size=int(size), heldout=int(heldout),
                         heldout_share=float(heldout_share), weight=float(weight)))


def defaults() -> ConfigDict:
  return ConfigDict(dict(
      seq_len=256,  # tokens per training row (the final length under seq_warmup)
      workers=0,  # grain worker processes (0: everything in the calling process)
      read_threads=2,  # threads reading + tokenizing documents per process
      # "global": each epoch's packed rows in one random order over the whole train
      # split (tokenized into memory at the start, 8 bytes a token; with prepared, the
      # lengths only); each host reads only its rows (phijax.data.hosts). "documents":
      # documents shuffled and streamed, rows shuffled in windows of shuffle_rows.
      shuffle="global",
      shuffle_rows=1024,  # shuffle="documents": rows shuffled in windows of this many
      heldout_fraction=0.05,  # documents held out by a stable hash of their key
      # Sources the held-out evaluations (and the gzip baseline) read, comma-separated;
      # "" = every source with weight > 0, their rows shared by weight. Name one to
      # measure the target alone while training on a mix (experiments/rho1.py).
      eval_sources="",
      # True: every training step gets the same batch, the first one the pipeline
      # makes (full-batch gradient descent on train.batch_size x seq_len fixed tokens,
      # as in experiments/edge_of_stability.py); workers are then not used.
      fixed_batch=False,
      # A directory python -m phijax.data.prepare wrote: text sources read their tokens
      # from its shards (nothing tokenized; a host reads only the documents its rows
      # hold); "" = tokenize on the fly (phijax.data.prepare).
      prepared="",
      tokenizer=ConfigDict(dict(
          path="",  # a sentencepiece .model; "" trains one on the sources' train split
          vocab_size=8192,  # pieces of a trained tokenizer (a loaded one: at most)
          model_type="bpe",  # or "unigram"
          # trained tokenizers and tokenized text, keyed by settings and files; "" = no
          # cache (every run trains and tokenizes: a from-nothing timing)
          cache_dir="~/.cache/phijax",
          train_bytes=64_000_000,  # cap on tokenizer training text
      )),
      sources=ConfigDict(dict(stdlib=source("stdlib"))),
  ))
