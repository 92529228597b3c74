"""Callbacks that the tests hand to training subprocesses (``class_path: run_callbacks.X``; the tests put
this folder on the subprocess's PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """Kills its own process with SIGKILL (no clean-up, like a crash) after global step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordBatches(pl.Callback):
    """Appends ``global_step id id ...`` of every training batch to ``<path>.<global rank>``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(f"{self.path}.{trainer.global_rank}", "a") as fh:
            fh.write(" ".join([str(trainer.global_step), *map(str, batch["ids"])]) + "\n")
