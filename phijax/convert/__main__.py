"""Convert checkpoints between Hugging Face and phijax, and take models out of runs.

    python -m phijax.convert --run=runs/tiny --to_hf --out=hf/tiny               # run -> HF
    python -m phijax.convert --run=runs/tiny --step=200 --out=ckpt/tiny200       # run -> phijax
    python -m phijax.convert --hf_dir=path/to/phi-2 --out=ckpt/phi2              # HF -> phijax
    python -m phijax.convert --phijax_dir=ckpt/phi2 --to_hf --out=hf/phi2        # phijax -> HF
    python -m phijax.convert --run=runs/lima_lora --adapters_only --out=ckpt/lima_ad  # LoRA

A run export reads only the parameters of the newest checkpoint (or --step) and
copies the run's tokenizer.model; with --to_hf it also writes a Hugging Face fast
tokenizer (tokenizer.json) that encodes text to the same ids as phijax, so
transformers' AutoModelForCausalLM and AutoTokenizer load the directory.
--adapters_only writes a LoRA run's adapters alone, naming the base they go over
(``phijax.convert.adapters``); every reader of a phijax directory puts them back on it.
"""

from __future__ import annotations

import os

from phijax import cli

parser = cli.ArgumentParser(prog=cli.prog("phijax.convert", "phijax-convert"), description=__doc__)
source = parser.add_mutually_exclusive_group(required=True)
source.add_argument("--run", type=cli.existing_dir, metavar="RUN",
                    help="a run directory (python -m phijax.train --workdir=RUN)")
source.add_argument("--hf_dir", type=cli.existing_dir, metavar="DIR",
                    help="a local Hugging Face Phi checkpoint (config.json + weights)")
source.add_argument("--phijax_dir", type=cli.existing_dir, metavar="DIR",
                    help="a phijax parameter directory written by this command")
parser.add_argument("--step", type=cli.positive_int, default=None,
                    help="with --run: the checkpoint step to export (default: the newest)")
parser.add_argument("--to_hf", action="store_true",
                    help="write a Hugging Face directory (from --run or --phijax_dir)")
parser.add_argument("--adapters_only", action="store_true",
                    help="with --run of a LoRA run: its adapters alone (kilobytes), with "
                         "the path and hash of the base they were trained over")
parser.add_argument("--out", type=cli.new_dir, required=True, metavar="DIR",
                    help="output directory (created; files in it are overwritten)")


def main(args):
  if args.step is not None and not args.run:
    raise cli.UsageError("--step picks a checkpoint of --run; give --run=RUN")
  if args.adapters_only:
    if not args.run or args.to_hf:
      raise cli.UsageError("--adapters_only exports a LoRA run's adapters: give --run=RUN "
                           "(and no --to_hf: Hugging Face Phi has no adapters)")
    from phijax.convert import adapters
    s = adapters.export(args.run, args.out, step=args.step)
    print(f"wrote LoRA adapters to {s['out']}: step {s['step']} of {s['run']}, "
          f"{s['num_params']:,} adapter parameters over the base {s['base']}")
    return
  if args.run:
    from phijax.convert import export
    s = export.export_run(args.run, args.out, step=args.step, to_hf=args.to_hf)
    kind = "Hugging Face model" if args.to_hf else "phijax parameters"
    print(f"wrote {kind} to {s['out']}: step {s['step']} of {s['run']}, arch={s['arch']}, "
          f"{s['num_params']:,} parameters")
    print(f"  files: {', '.join(s['files'])}")
    for note in s["notes"]:
      print(f"  note: {note}")
    return

  from phijax import convert
  from phijax.model import params_io, count_params
  if args.phijax_dir:
    if not args.to_hf:
      raise cli.UsageError("--phijax_dir is already phijax parameters; add --to_hf to "
                           "write a Hugging Face directory")
    from phijax.convert import weights
    if weights.is_adapters_dir(args.phijax_dir):  # LoRA adapters alone: over their base
      cfg, params = weights.read_adapters(args.phijax_dir, "--phijax_dir")
    else:
      cfg, params = params_io.load_params(args.phijax_dir)
    convert.to_hf(cfg, params, args.out)
    print(f"wrote Hugging Face model to {args.out}: arch={cfg.arch}, "
          f"{count_params(cfg):,} parameters")
    return
  if args.to_hf:
    raise cli.UsageError("--hf_dir is already a Hugging Face checkpoint; --to_hf writes "
                         "one from --run or --phijax_dir")
  if os.path.isdir(os.path.join(args.hf_dir, "checkpoints")):
    raise cli.UsageError(f"{args.hf_dir} is a phijax run directory; export it with "
                         f"--run={args.hf_dir}")
  cfg, params = convert.from_hf(args.hf_dir)
  params_io.save_params(args.out, cfg, params)
  print(f"wrote phijax parameters to {args.out}: arch={cfg.arch}, "
        f"{count_params(cfg):,} parameters")


def run():
  cli.main(parser, main)


if __name__ == "__main__":
  run()
