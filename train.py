"""Train a model from a YAML config with the Lightning CLI.

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/quickstart.yaml --trainer.max_epochs 2 --model.lr 5e-4
    python train.py fit --config configs/teacher.yaml      # the multimodal teacher (issue #3)
    python train.py fit --help

The LightningModule is :class:`~mmemb.lit.module.EmbeddingModule` for every preset; a teacher preset
(``teacher_*``, given in a ``--config`` file or as ``--model.preset``) also links ``data.num_queries`` and
``data.ngram_buckets`` to the model.

Runs write under ``trainer.default_root_dir`` (e.g. ``runs/quickstart/version_N/``): the resolved
``config.yaml``, CSV logs (``metrics.csv``), checkpoints (best by ``val/t2v_r1_category`` and
``last.ckpt``) and the data's vocabularies (``runs/quickstart/vocab``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pytorch_lightning.cli import LightningCLI  # noqa: E402

from mmemb.data.datamodule import VideoDataModule  # noqa: E402
from mmemb.lit.module import EmbeddingModule  # noqa: E402

TEACHER_PREFIX = "teacher_"


class MMEmbCLI(LightningCLI):
    """LightningCLI whose model takes the sizes of its text and hashtag vocabularies from the data
    module (the hashtag names are read from the data in ``setup``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_hashtags", "model.num_hashtags", apply_on="instantiate")


class TeacherCLI(MMEmbCLI):
    """The teacher also takes the size of the query vocabulary from the data module (the tag graph
    and the keyword IDF are read from the data in ``setup``)."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.num_queries", "model.num_queries", apply_on="instantiate")
        parser.link_arguments("data.ngram_buckets", "model.ngram_buckets", apply_on="instantiate")


def _preset(args: list[str]) -> str | None:
    """The model preset named by the arguments (the last ``--model.preset`` or ``--config`` that sets it)."""
    import yaml

    preset = None
    i = 0
    while i < len(args):
        arg = args[i]
        key, _, value = arg.partition("=")
        if key in ("--config", "-c", "--model.preset") and not value and i + 1 < len(args):
            value = args[i + 1]
            i += 1
        if key == "--model.preset" and value:
            preset = value
        elif key in ("--config", "-c") and value:
            try:
                with open(value, encoding="utf-8") as fh:
                    cfg = yaml.safe_load(fh) or {}
                found = (cfg.get("model") or {}).get("preset") if isinstance(cfg, dict) else None
            except OSError:
                found = None  # LightningCLI reports the missing file
            preset = found or preset
        i += 1
    return preset


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    argv = list(sys.argv[1:] if args is None else args)
    preset = _preset(argv)
    if preset is not None and str(preset).startswith(TEACHER_PREFIX):
        cli_class, module = TeacherCLI, EmbeddingModule
    else:
        cli_class, module = MMEmbCLI, EmbeddingModule
    return cli_class(
        module,
        VideoDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
