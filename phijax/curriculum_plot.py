"""Plots a config's planned curriculum without training.

    python -m phijax.curriculum_plot --config=configs/tiny.py --out=plan.png
        [--config.curriculum.seq_warmup.enabled=true ...]

(also the console script ``phijax-plot-curriculum``). Writes a PNG with the learning
rate, training sequence length, tokens consumed and data-mixture stage over the run's
steps, and prints ``Curriculum.describe()``: the same plan the train loop follows.
"""

from __future__ import annotations

from phijax import curriculum

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


def run():
  """Console script ``phijax-plot-curriculum``."""
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "config file (configs/*.py[:arg])",
                                  lock_config=True)
  flags.DEFINE_string("out", "curriculum.png", "PNG file to write")
  flags.mark_flags_as_required(["config"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    try:
      cur = plot_plan(flags.FLAGS.config, flags.FLAGS.out)
    except curriculum.CurriculumError as e:
      raise SystemExit(f"error: {e}") from None  # one line, no usage dump
    print(cur.describe())
    print(f"wrote {flags.FLAGS.out}")

  app.run(main)


if __name__ == "__main__":
  run()
