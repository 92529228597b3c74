"""Train a model from a YAML config with the Lightning CLI (the same as ``mmemb fit|validate|test|predict``).

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/quickstart.yaml --trainer.max_epochs 2 --model.lr 5e-4
    python train.py fit --config configs/quickstart.yaml --data.manifest M --trainer.default_root_dir runs/my_videos
    python train.py fit --help

Everything a run writes goes under ``trainer.default_root_dir``: ``vocab/`` and ``version_N/``
(``config.yaml``, ``metrics.csv``, ``checkpoints/``); see :mod:`mmemb.lit.cli`. Input errors (a
missing file, a malformed manifest, a bad config value) print one line; ``--traceback`` or
``MMEMB_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys

from mmemb.lit.cli import main  # noqa: F401  (train.main: the library's)

if __name__ == "__main__":
    from mmemb.cli import run_lightning

    sys.exit(run_lightning(sys.argv[1:], prog="train.py"))
