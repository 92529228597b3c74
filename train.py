"""Train a model from a YAML config with the Lightning CLI.

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/quickstart.yaml --trainer.max_epochs 2 --model.lr 5e-4
    python train.py fit --help

Runs write under ``trainer.default_root_dir`` (e.g. ``runs/quickstart/version_N/``): the resolved
``config.yaml``, CSV logs (``metrics.csv``), checkpoints (best by ``val/t2v_r1_category`` and
``last.ckpt``) and the data's vocabularies (``runs/quickstart/vocab``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pytorch_lightning.cli import LightningCLI  # noqa: E402

from mmemb.data.datamodule import VideoDataModule  # noqa: E402
from mmemb.lit.pretrain import PretrainModule  # noqa: E402


class MMEmbCLI(LightningCLI):
    """LightningCLI whose model takes its vocabulary size from the data module."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")


def main(args: list[str] | None = None, run: bool = True) -> MMEmbCLI:
    return MMEmbCLI(
        PretrainModule,
        VideoDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
