"""The run's logger: CSV logs inside the run folder.

A run writes everything under ``trainer.default_root_dir`` (see :mod:`mmemb.lit.cli`)::

    <default_root_dir>/
        vocab/                      the vocabularies learned from the train split (the data module)
        version_N/                  one per run in that folder (N = 0, 1, ...)
            config.yaml             the resolved configuration (LightningCLI)
            hparams.yaml, metrics.csv
            checkpoints/            best-*.ckpt, last.ckpt (ModelCheckpoint follows the logger)
"""

from __future__ import annotations

import os

from pytorch_lightning.loggers import CSVLogger

__all__ = ["RunCSVLogger"]


class RunCSVLogger(CSVLogger):
    """Lightning's :class:`~pytorch_lightning.loggers.CSVLogger` whose folder defaults to the run folder.

    ``save_dir=None`` means the trainer's ``default_root_dir``: the command line fills it in before
    the trainer is built (:func:`mmemb.lit.cli.place_run_outputs`); built in Python without one, the
    current directory (Lightning's own default root). ``name=""`` puts the versions directly in the
    run folder (``<save_dir>/version_N``) rather than in a ``lightning_logs`` subfolder.
    """

    def __init__(self, save_dir: str | None = None, name: str = "", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100) -> None:
        super().__init__(save_dir if save_dir is not None else os.getcwd(), name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
