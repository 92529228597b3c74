"""Exact resumption from end-of-epoch checkpoints (a Lightning 2.6 loop-progress workaround) and an
epoch-seeded shuffle whose order a resumed run can reproduce.

The Lightning bug
-----------------
``ModelCheckpoint`` writes its end-of-epoch checkpoint (``every_n_epochs``; also when validation runs
at the end of the epoch, with ``val_check_interval=1.0`` and ``check_val_every_n_epoch=1``) from
``on_train_epoch_end``. ``FitLoop.on_advance_end`` calls that hook after
``epoch_progress.increment_processed()`` and before ``epoch_progress.increment_completed()``, so the
checkpoint's ``fit_loop.epoch_progress`` reads ``ready == started == processed == completed + 1``: the
epoch looks unfinished although every batch of it is done (its batch progress reads ``ready ==
completed == batches per epoch``, ``is_last_batch``). How Lightning 2.6 restores that state:

* ``max_epochs`` training: the fit loop is not "restarting" (``ready == processed``), its
  ``RESUMED_ON_EPOCH_END`` stage increments ``completed`` and the next epoch starts at batch 0: correct.
* ``max_steps`` training: ``FitLoop.restarting`` is forced to True (``_iteration_based_training``),
  the stage is ``RESTARTED_ON_EPOCH_END`` and the finished epoch is re-entered. Without validation the
  epoch loop is not done (``_is_validation_done`` is False while restarting and no validation ran),
  so it trains one more step as batch ``n`` of the finished epoch, on the first batch of a fresh
  iterator, and every later step is one batch off. With validation that step is skipped. Either way
  the finished epoch ends a second time: its ``on_train_epoch_end`` hooks (checkpoints, epoch logs)
  run again and ``epoch_progress.processed`` stays one ahead for the rest of the run, and that is the
  epoch Lightning passes to the sampler's ``set_epoch``: an epoch-seeded shuffle (``DistributedSampler``
  or :class:`EpochShuffleSampler`) gives every later epoch the next epoch's order.

:func:`fix_loop_progress` rewrites such a checkpoint into the state the loops hold once that epoch has
fully ended and the next is about to start (``completed = processed``; the per-epoch ``current``
counters zeroed as ``reset_on_run`` does at an epoch start), which both modes resume correctly: the
next epoch, at batch 0, with ``set_epoch(next epoch)``, each epoch's end hooks run once. It also makes
``trainer.current_epoch`` right while the train loader is built and iterated for the first resumed
epoch (unpatched it still reads the finished epoch then, even with ``max_epochs``), which loaders that
read it, like the DataModule's sharded ``_EpochLoader``, rely on. Left over, as without the patch: with
``max_steps`` and validation, the first resumed iteration still takes Lightning's "validation already
ran" branch, which advances the logging step (``_batches_that_stepped``, the x axis of logged metrics)
by one; ``global_step``, batch indices, data and losses are exact.

Mid-epoch checkpoints (``every_n_train_steps``) are left as they are. Written from
``on_train_batch_end`` before ``batch_progress.increment_completed()`` (Lightning issue #19815), they
read ``completed == processed - 1`` for the batch, which Lightning 2.6 itself compensates
(``RESTARTED_ON_TRAIN_BATCH_END``): the counters, ``batch_idx``, ``global_step`` and the learning-rate
schedule resume correctly. The data does not by itself: a plain DataLoader starts its epoch again from
the first batch while Lightning counts on from batch ``k``. The DataModule's train loader
(``mmemb.data.datamodule._EpochLoader``) skips ahead instead: the DataModule saves ``(epoch, batches
trained)`` in every checkpoint (``state_dict``) and the resumed epoch's first pass leaves out that many
batches of the epoch's order (:meth:`EpochShuffleSampler.skip`), so a run killed mid-epoch and resumed
from its last step checkpoint ends with the same weights as an uninterrupted one
(``tests/test_resume_crash.py``). Lightning still warns that the loader "is not resumable": it only
recognises loaders with their own ``state_dict``, which it restores too late for a loader it built
before the checkpoint was read. Streamed shards resume exactly too: each worker reads past what it had
given (:meth:`mmemb.data.shards.ShardedVideoDataset.resume_after`).

The data order
--------------
``DataLoader(shuffle=True)`` on one device uses a ``RandomSampler`` without a generator: each pass draws
its seed from the global torch RNG, which ``seed_everything`` seeds once and checkpoints do not hold, so
a resumed run shuffles differently from the uninterrupted one. :class:`EpochShuffleSampler` shuffles
with ``seed + epoch`` (as ``DistributedSampler`` does, which Lightning injects under DDP, also with the
``seed_everything`` seed) and Lightning calls its ``set_epoch`` before every epoch. Remaining caveat:
on resume Lightning creates the first epoch's iterator (in ``FitLoop.setup_data``) before it calls
``set_epoch``; with ``num_workers=0`` the permutation is drawn lazily at the first batch, after
``set_epoch``, but worker processes prefetch indices at once, so the first resumed epoch is shuffled
with the sampler's initial epoch. The DataModule's train loader therefore starts each pass (sets the
epoch, draws the permutation, starts the workers) at its first ``next()``, after the checkpoint is
restored. :class:`EpochShuffleSampler` is a ``DistributedSampler``, so Lightning keeps it under DDP
instead of substituting its own. Every sample's random choices (clip segment, jitter) come from
``mmemb.data.dataset.sample_generator(seed, epoch, index, id)``, not from the worker's RNG.
"""

from __future__ import annotations

from typing import Any

from ..data.sampler import EpochShuffleSampler

__all__ = ["fix_loop_progress", "EpochShuffleSampler"]

_TRACKER_KEYS = ("ready", "started", "processed", "completed")


def _zero(tracker: dict[str, int]) -> None:
    """Zero every counter of a serialized progress tracker (what ``reset()`` does)."""
    for key in tracker:
        tracker[key] = 0


def _all_equal(tracker: dict[str, int]) -> bool:
    """No event in flight: every counter of the tracker has the same value."""
    return len({tracker[k] for k in _TRACKER_KEYS if k in tracker}) == 1


def _ended_epoch_unmarked(epoch: dict[str, Any], batch: dict[str, Any]) -> bool:
    """The checkpoint was written in ``on_train_epoch_end``: the epoch is processed but not completed,
    and no batch is in flight."""
    return all(
        epoch[part]["ready"] == epoch[part]["started"] == epoch[part]["processed"] == epoch[part]["completed"] + 1
        for part in ("total", "current")
    ) and _all_equal(batch["total"]) and _all_equal(batch["current"])


def _start_next_epoch(fit: dict[str, Any]) -> None:
    """Mark the epoch completed and reset the per-epoch counters as the epoch loop does when an epoch
    starts (``TrainingEpochLoop.reset``, not restarting)."""
    for part in ("total", "current"):
        fit["epoch_progress"][part]["completed"] = fit["epoch_progress"][part]["processed"]
    batch = fit["epoch_loop.batch_progress"]
    _zero(batch["current"])
    batch["is_last_batch"] = False
    if "epoch_loop.scheduler_progress" in fit:
        _zero(fit["epoch_loop.scheduler_progress"]["current"])
    optim = fit.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {})
    for name in ("step", "zero_grad"):
        if name in optim:
            _zero(optim[name]["current"])
    if "epoch_loop.val_loop.batch_progress" in fit:
        _zero(fit["epoch_loop.val_loop.batch_progress"]["total"])


def fix_loop_progress(checkpoint: dict[str, Any]) -> bool:
    """Make an end-of-epoch checkpoint resume at batch 0 of the next epoch (see the module docstring).

    Call it from ``LightningModule.on_load_checkpoint``, which Lightning runs (``restore_model``) before
    it restores the loops from ``checkpoint["loops"]`` (``restore_training_state``); the dict is patched
    in place. Only the inconsistent state is touched (``epoch_progress`` one ``processed`` ahead of
    ``completed`` with no batch in flight): checkpoints written elsewhere (mid-epoch from
    ``on_train_batch_end``, from ``on_validation_end``, after ``fit`` by ``trainer.save_checkpoint``, or
    by a future Lightning that saves a consistent state) and already patched ones are left unchanged,
    so the call is idempotent.

    Returns:
        whether the checkpoint was patched.
    """
    fit = (checkpoint.get("loops") or {}).get("fit_loop")
    try:
        unmarked = _ended_epoch_unmarked(fit["epoch_progress"], fit["epoch_loop.batch_progress"])
    except (KeyError, TypeError):  # no fit loop, or a layout of another Lightning version: leave it
        return False
    if unmarked:
        _start_next_epoch(fit)
    return unmarked
