"""Resuming from a checkpoint continues exactly like an uninterrupted run (mmemb/lit/resume.py): the
loop-progress repair of end-of-epoch checkpoints and the epoch-seeded shuffle, for the two-tower and the
full presets."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_models import synthetic_batch
from torch.utils.data import DataLoader

from mmemb.lit import module as lit_module
from mmemb.lit.module import EmbeddingModule
from mmemb.lit.resume import EpochShuffleSampler, fix_loop_progress

VOCAB = 300
H, Q = 10, 6  # hashtags, queries
N = 3  # batches per epoch; the straight run trains 2 epochs


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models only lose time to thread contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- fix_loop_progress on a dict


def _tracker(ready: int, completed: int | None = None, **counts: int) -> dict[str, int]:
    """A serialized progress tracker: every counter ``ready`` unless given."""
    done = ready if completed is None else completed
    return {"ready": ready, "started": counts.get("started", ready), "processed": counts.get("processed", ready),
            "completed": done}


def _end_of_epoch_checkpoint(epoch: int = 0, n: int = N) -> dict:
    """``checkpoint["loops"]`` as ``ModelCheckpoint.on_train_epoch_end`` writes it after epoch ``epoch``
    of ``n`` batches: the epoch processed but not completed, every batch completed."""
    steps = (epoch + 1) * n
    fit = {
        "state_dict": {},
        "epoch_progress": {"total": _tracker(epoch + 1, epoch), "current": _tracker(epoch + 1, epoch)},
        "epoch_loop.state_dict": {"_batches_that_stepped": steps},
        "epoch_loop.batch_progress": {"total": _tracker(steps), "current": _tracker(n), "is_last_batch": True},
        "epoch_loop.scheduler_progress": {"total": {"ready": steps, "completed": steps},
                                          "current": {"ready": n, "completed": n}},
        "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
            "step": {"total": {"ready": steps, "completed": steps}, "current": {"ready": n, "completed": n}},
            "zero_grad": {"total": _tracker(steps), "current": _tracker(n)}}},
        "epoch_loop.val_loop.batch_progress": {"total": _tracker(1), "current": _tracker(1), "is_last_batch": True},
    }
    return {"epoch": epoch, "global_step": steps, "loops": {"fit_loop": fit}}


def test_fix_loop_progress_patches_only_an_unfinished_epoch_end():
    ckpt = _end_of_epoch_checkpoint(epoch=1)
    assert fix_loop_progress(ckpt)
    fit = ckpt["loops"]["fit_loop"]
    assert fit["epoch_progress"]["total"] == _tracker(2) and fit["epoch_progress"]["current"] == _tracker(2)
    batch = fit["epoch_loop.batch_progress"]
    assert batch["total"] == _tracker(2 * N)  # across epochs: kept (global batch index)
    assert batch["current"] == _tracker(0) and batch["is_last_batch"] is False  # the next epoch, at batch 0
    assert fit["epoch_loop.scheduler_progress"]["current"] == {"ready": 0, "completed": 0}
    optim = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    assert optim["step"]["total"]["completed"] == 2 * N and optim["step"]["current"]["completed"] == 0
    assert fit["epoch_loop.val_loop.batch_progress"]["total"] == _tracker(0)
    assert fit["epoch_loop.state_dict"] == {"_batches_that_stepped": 2 * N} and ckpt["global_step"] == 2 * N

    patched = copy.deepcopy(ckpt)
    assert not fix_loop_progress(ckpt) and ckpt == patched  # idempotent

    consistent = _end_of_epoch_checkpoint()  # e.g. a future Lightning that saves after completing the epoch
    consistent["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"] = 1
    consistent["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] = 1
    mid_epoch = _end_of_epoch_checkpoint()  # on_train_batch_end: batch processed, not completed
    mid_epoch["loops"]["fit_loop"]["epoch_progress"] = {"total": _tracker(1, 0, processed=0),
                                                        "current": _tracker(1, 0, processed=0)}
    mid_epoch["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"] = _tracker(N, N - 1)
    for untouched in (consistent, mid_epoch, {"state_dict": {}}, {"loops": {}}, {"loops": None}):
        before = copy.deepcopy(untouched)
        assert not fix_loop_progress(untouched) and untouched == before


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochShuffleSampler(range(10), seed=3), EpochShuffleSampler(range(10), seed=3)
    first = list(a)
    assert sorted(first) == list(range(10)) and list(b) == first and list(a) == first
    a.set_epoch(1)
    assert list(a) != first and list(a) == list(EpochShuffleSampler(range(10), seed=3, epoch=1))
    assert list(EpochShuffleSampler(range(10), seed=4)) != first


# ----------------------------------------------------------------------------- real runs of both modules


def _pretrain_batch(seed: int) -> dict:
    return synthetic_batch(b=4, seed=seed)


def _teacher_batch(seed: int) -> dict:
    """The teacher's batch contract: 64-band log-mels, uint8 frames, hashtag and query labels."""
    batch = synthetic_batch(b=4, t=3, size=32, length=16, vocab=VOCAB, n_mels=64, mel_frames=40, num_hashtags=H,
                            seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    q = (torch.rand(4, Q, generator=g) < 0.3).float()  # (B, Q)
    batch["query_targets"], batch["query_weights"] = q, q * 2.0
    batch["frames"] = (torch.rand(batch["frames"].shape, generator=g) * 255).to(torch.uint8)  # (B, T, 3, S, S)
    return batch


def _pretrain_module() -> EmbeddingModule:
    pl.seed_everything(0)
    return EmbeddingModule(preset="two_tower_tiny", vocab_size=VOCAB, overrides={"embed_dim": 32}, lr=1e-3,
                           warmup_fraction=0.25, loss_weights={"clip_v2t": 0.5, "clip_t2v": 0.5})


def _teacher_module() -> EmbeddingModule:
    pl.seed_everything(0)
    return EmbeddingModule(preset="teacher_tiny", vocab_size=VOCAB, num_hashtags=H, num_queries=Q, lr=1e-3,
                           warmup_fraction=0.25)


KINDS = {"pretrain": (_pretrain_module, _pretrain_batch), "teacher": (_teacher_module, _teacher_batch)}


def _loader(make_batch, n: int = N, seed: int = 0, shuffle: bool = True) -> DataLoader:
    """``n`` different batches, in an epoch-seeded shuffle (a new order every epoch) or in order."""
    batches = [make_batch(seed + i) for i in range(n)]
    sampler = EpochShuffleSampler(batches, seed=seed) if shuffle else None
    return DataLoader(batches, batch_size=None, sampler=sampler)


class _Steps(pl.Callback):
    """(epoch, batch_idx, loss) of every training step."""

    def __init__(self):
        self.steps: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, batch_idx, float(outputs["loss"])))

    @property
    def positions(self) -> list[tuple[int, int]]:
        return [(epoch, idx) for epoch, idx, _ in self.steps]

    @property
    def losses(self) -> list[float]:
        return [loss for _, _, loss in self.steps]


def _fit(root, kind: str, validate: bool, callbacks: list, ckpt_path=None) -> pl.Trainer:
    """2N steps (or what is left of them after ``ckpt_path``) on a fresh module and trainer."""
    make_module, make_batch = KINDS[kind]
    module = make_module()
    torch.manual_seed(123)  # the run must not depend on the global RNG state
    saving = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    trainer = pl.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=2 * N, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, callbacks=callbacks, enable_checkpointing=saving,
                         limit_val_batches=1 if validate else 0)
    val = _loader(make_batch, n=1, seed=50, shuffle=False) if validate else None
    trainer.fit(module, train_dataloaders=_loader(make_batch), val_dataloaders=val, ckpt_path=ckpt_path)
    return trainer


@dataclass(frozen=True)
class _Straight:
    """An uninterrupted run and the checkpoints it wrote."""

    kind: str
    validate: bool
    steps: _Steps
    epoch_end: Path  # after epoch 0 (step N), from on_train_epoch_end
    mid_epoch: Path  # after batch 0 of epoch 1 (step N + 1), from on_train_batch_end


# pretrain without validation, teacher with validation at every epoch end
@pytest.fixture(scope="module", params=[("pretrain", False), ("teacher", True)],
                ids=["pretrain", "teacher-validating"])
def straight(request, tmp_path_factory) -> _Straight:
    kind, validate = request.param
    root = tmp_path_factory.mktemp(f"straight_{kind}")
    savers = [pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", filename="step{step}", save_top_k=-1,
                                           auto_insert_metric_name=False, **every)
              for every in ({"every_n_epochs": 1}, {"every_n_train_steps": N + 1})]
    steps = _Steps()
    _fit(root, kind, validate, [steps, *savers])
    assert steps.positions == [(e, i) for e in range(2) for i in range(N)]
    return _Straight(kind, validate, steps, root / "ckpt" / f"step{N}.ckpt", root / "ckpt" / f"step{N + 1}.ckpt")


def test_the_shuffles_let_an_unrepaired_resume_show():
    """Precondition of the resume test: the orders of epochs 1 and 2 differ, and not by a rotation
    (else Lightning's extra step in the finished epoch would still train on the same batches)."""
    orders = [list(EpochShuffleSampler(range(N), seed=0, epoch=e)) for e in (1, 2)]
    assert orders[1] != orders[0] and orders[1][:-1] != orders[0][1:]


def test_resume_from_an_epoch_end_matches_an_uninterrupted_run(straight, tmp_path, monkeypatch):
    """2N steps straight (a checkpoint after every epoch of N different batches, shuffled anew each
    epoch) vs. resuming from the first epoch's checkpoint: the same batches in the same order, the same
    losses. Without the repair, Lightning re-enters the finished epoch (``max_steps`` training): with
    no validation it trains one more step in it, with validation it shuffles the next epoch as epoch 2;
    either way the losses differ."""
    assert torch.load(straight.epoch_end, map_location="cpu", weights_only=True)["global_step"] == N
    resumed = _Steps()
    trainer = _fit(tmp_path / "fixed", straight.kind, straight.validate, [resumed], ckpt_path=straight.epoch_end)
    assert trainer.global_step == 2 * N and trainer.current_epoch == 2
    assert resumed.positions == [(1, i) for i in range(N)]
    assert resumed.losses == pytest.approx(straight.steps.losses[N:], rel=1e-5)

    monkeypatch.setattr(lit_module, "fix_loop_progress", lambda checkpoint: False)  # Lightning as it is
    unrepaired = _Steps()
    _fit(tmp_path / "raw", straight.kind, straight.validate, [unrepaired], ckpt_path=straight.epoch_end)
    assert unrepaired.losses != pytest.approx(straight.steps.losses[N:], rel=1e-5)
    first = (1, 0) if straight.validate else (0, N)  # without validation: a step past the end of epoch 0
    assert unrepaired.positions[0] == first


def test_mid_epoch_checkpoints_are_left_to_lightning(straight, tmp_path):
    """A checkpoint written mid-epoch (``every_n_train_steps``) is not patched. Lightning resumes its
    counters (batch index, global step) but a plain DataLoader restarts the epoch at its first batch,
    so the resumed steps see the wrong batches: no exact resume mid-epoch (see mmemb/lit/resume.py)."""
    raw = torch.load(straight.mid_epoch, map_location="cpu", weights_only=True)
    assert raw["global_step"] == N + 1 and not fix_loop_progress(copy.deepcopy(raw))
    resumed = _Steps()
    trainer = _fit(tmp_path / "mid", straight.kind, straight.validate, [resumed], ckpt_path=straight.mid_epoch)
    assert trainer.global_step == 2 * N
    assert resumed.positions == [(1, i) for i in range(1, N)]
    assert resumed.losses != pytest.approx(straight.steps.losses[N + 1:], rel=1e-5)
