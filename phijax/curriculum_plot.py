"""Plots a config's planned curriculum without training.

    python -m phijax.curriculum_plot --config=configs/tiny.py --out=plan.png
        [--config.curriculum.seq_warmup.enabled=true ...]

(also the console script ``phijax-plot-curriculum``). Writes a PNG with the learning
rate, training sequence length, tokens consumed and data-mixture stage over the run's
steps, and prints ``Curriculum.describe()``: the same plan the train loop follows.
"""

from __future__ import annotations

import os

from phijax.train import curriculum

MAX_POINTS = 4000  # plotted positions; longer runs are sampled evenly


def plot_plan(config, path: str) -> curriculum.Curriculum:
  """Writes the plot of ``config``'s curriculum to ``path`` (PNG); returns the
  validated ``Curriculum``."""
  from matplotlib.figure import Figure  # no pyplot: no global backend state

  cur = curriculum.Curriculum(config)
  every = max(1, -(-cur.total_steps // MAX_POINTS))
  plan = cur.plan(every=every)
  step = plan["step"]
  fig = Figure(figsize=(9, 9), layout="constrained")
  ax_lr, ax_len, ax_tok, ax_stage = fig.subplots(4, 1, sharex=True)

  ax_lr.plot(step, plan["lr"])
  ax_lr.set_ylabel("learning rate")
  ax_lr.set_title(f"{cur.lr_schedule} (peak {cur.peak_lr:g}, warmup {cur.warmup_steps} "
                  f"steps, decay over {cur.decay_unit})", fontsize=9)
  ax_len.step(step, plan["seq_len"], where="post")
  ax_len.set_ylabel("sequence length")
  if cur.buckets()[-1] >= 4 * cur.buckets()[0]:  # doubling lengths: evenly spaced
    ax_len.set_yscale("log", base=2)
  ax_len.set_yticks(cur.buckets(), [str(b) for b in cur.buckets()])
  ax_len.minorticks_off()
  ax_len.set_title(f"{len(cur.buckets())} lengths ({cur.seq_mode}); eval at "
                   f"{cur.eval_seq_len}", fontsize=9)
  ax_tok.plot(step, plan["tokens"])
  ax_tok.set_ylabel("tokens seen")
  ax_stage.step(step, plan["stage"], where="post")
  ax_stage.set_yticks(range(len(cur.stages)), [s.name for s in cur.stages])
  ax_stage.set_ylabel("stage")
  ax_stage.set_xlabel("step")
  for st in cur.stages[1:]:
    for ax in (ax_lr, ax_len, ax_tok, ax_stage):
      ax.axvline(st.start_step, color="gray", linestyle="--", linewidth=0.8)
  for ax in (ax_lr, ax_len, ax_tok, ax_stage):
    ax.grid(alpha=0.3)
  fig.suptitle(f"{cur.total_steps:,} steps, {cur.total_tokens:,} tokens, batch "
               f"{cur.batch_size}")
  fig.savefig(path, dpi=100)
  return cur


def run(argv=None):
  """Console script ``phijax-plot-curriculum``."""
  from phijax import cli

  parser = cli.ArgumentParser(prog=cli.prog("phijax.curriculum_plot", "phijax-plot-curriculum"),
                              description=__doc__)
  cli.add_config(parser)
  parser.add_argument("--out", default="curriculum.png", help="PNG file to write")

  def main(args):
    if os.path.isdir(args.out):
      raise cli.UsageError(f"--out {args.out!r} is a directory; name a .png file")
    cur = plot_plan(args.config, args.out)  # CurriculumError is a ValueError: one line
    print(cur.describe())
    print(f"wrote {args.out}")

  cli.main(parser, main, argv)


if __name__ == "__main__":
  run()
