"""Training throughput of a config: steps/s and the share of step time spent waiting on data.

    python benchmarks/bench_train.py [--config configs/quickstart.yaml] [--steps 60] [-- extra CLI args]

Trains for ``--steps`` optimizer steps with the config's model, data and workers (no validation,
no checkpoints) and prints steps/s, clips/s and the data-wait share measured by
:class:`mmemb.lit.callbacks.DataWaitTimer` (the first step, which pays worker start-up, is excluded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from mmemb.lit.callbacks import DataWaitTimer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=60)
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        cli = train.main([
            "--config", args.config, f"--trainer.max_steps={args.steps}", "--trainer.max_epochs=1000",
            "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false", "--trainer.logger=false",
            "--trainer.callbacks=null", f"--trainer.default_root_dir={tmp}", "--trainer.enable_progress_bar=false",
            *[a for a in extra if a != "--"],
        ], run=False)
        timer = DataWaitTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
    batch = cli.datamodule.batch_size
    print(f"config: {args.config}  steps: {args.steps}  batch: {batch}  workers: {cli.datamodule.num_workers}")
    print("| steps/s | clips/s | data wait share |")
    print("|---|---|---|")
    print(f"| {timer.steps_per_second:.2f} | {timer.steps_per_second * batch:.1f} | {timer.wait_share:.1%} |")


if __name__ == "__main__":
    main()
