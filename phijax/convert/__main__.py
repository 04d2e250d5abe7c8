"""Convert checkpoints between Hugging Face and phijax.

    python -m phijax.convert --hf_dir=path/to/phi-2 --out=ckpt/phi2          # HF -> phijax
    python -m phijax.convert --phijax_dir=ckpt/phi2 --out=hf/phi2 --to_hf    # phijax -> HF
"""

from __future__ import annotations

import sys

from absl import app, flags

from phijax import convert, params_io

flags.DEFINE_string("hf_dir", None, "local Hugging Face checkpoint directory")
flags.DEFINE_string("phijax_dir", None, "phijax parameter checkpoint directory")
flags.DEFINE_string("out", None, "output directory", required=True)
flags.DEFINE_bool("to_hf", False, "write a Hugging Face directory from --phijax_dir")


def main(argv):
  del argv
  F = flags.FLAGS
  if F.to_hf:
    if not F.phijax_dir:
      sys.exit("error: --to_hf needs --phijax_dir (a directory written by this command)")
    cfg, params = params_io.load_params(F.phijax_dir)
    convert.to_hf(cfg, params, F.out)
    print(f"wrote Hugging Face checkpoint to {F.out}")
    return
  if not F.hf_dir:
    sys.exit("error: give --hf_dir (HF -> phijax) or --phijax_dir with --to_hf")
  cfg, params = convert.from_hf(F.hf_dir)
  params_io.save_params(F.out, cfg, params)
  from phijax import model
  print(f"wrote phijax checkpoint to {F.out}: arch={cfg.arch} "
        f"{model.count_params(cfg):,} parameters")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
