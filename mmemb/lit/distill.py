"""Distillation of a student preset from a frozen teacher: :class:`DistillModule`.

The student is trained as any :class:`~mmemb.lit.module.EmbeddingModule` (its task terms on the ground
truth, its validation and test metrics unchanged) plus the distillation terms of
:mod:`mmemb.objectives.distill`, each logged as ``train/<term>`` with its weight in ``loss_weights``:

* ``distill_embed``: ``1 - cos`` of the student's ``video``, ``text`` and ``multimodal`` embeddings
  against the teacher's (through a learned linear projection per embedding when the widths differ);
* ``distill_relation``: KL between the teacher's and the student's in-batch video-to-text and
  text-to-video similarity distributions (``relation_temperature``);
* ``distill_label``: the student's hashtag / query logits against the teacher's probabilities
  (``label_temperature``; binary KL per label under the BCE label weightings, softmax KL under
  ``softmax``).

Where the teacher's outputs come from:

* online (``teacher_ckpt``): the teacher checkpoint runs beside the student on the very batch the
  student sees (the first augmented view when SimCLR is on). It is loaded with
  ``torch.load(weights_only=True)`` and frozen: evaluation mode, ``requires_grad=False``, run under
  ``torch.no_grad``, and held outside the module tree, so it is in neither the optimizer, nor
  ``state_dict()``, nor the checkpoints, nor DDP's parameters;
* offline (``teacher_store``): the teacher's outputs are read by video id from a store written by
  ``mmemb eval extract --split train --logits`` (:class:`TeacherStore`). They were computed on the
  evaluation-mode decode (uniform frames, the centred audio window), which a training step cannot
  replay under augmentation: offline mode therefore requires the augmentations off (``simclr``
  weight 0, ``data.decode.train_jitter: 0``, ``data.decode.train_clip_seconds: null``) and says so
  when they are not. (Audio longer than ``data.decode.audio_seconds`` is still cropped at a random
  offset in training; the demo clips are exactly as long as the window.)

Vocabularies: the student reads the teacher's token ids and label logits, so the data must use the
teacher run's vocabularies (``data.vocab_dir: <teacher run>/vocab``). Sizes that differ (text
vocabulary, hashtags, queries, n-gram buckets) are refused when the module is built; in ``setup``
the data's vocabularies are compared with the teacher's (their fingerprint, and the label names the
teacher's heads were built on).

Checkpoints: a student checkpoint is an ``EmbeddingModule`` checkpoint (``mmemb eval --run`` and
:meth:`EmbeddingModule.from_checkpoint_weights` read it as any run): its hyper-parameters are the
student's (the distillation ones and weights are moved to ``checkpoint["distill"]``, with the
projections' weights, which a resumed distillation restores).
"""

from __future__ import annotations

import contextvars
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..objectives.distill import DISTILL_TERMS, embedding_alignment, label_distillation, relational_kl
from .module import DEFAULT_LOSS_WEIGHTS, EmbeddingModule
from .optim import configure_warmup_cosine

__all__ = ["DistillModule", "TeacherStore", "DEFAULT_DISTILL_WEIGHTS", "EMBEDDINGS", "HEADS"]

log = logging.getLogger(__name__)

DEFAULT_DISTILL_WEIGHTS = {"distill_embed": 1.0, "distill_relation": 1.0, "distill_label": 1.0}
EMBEDDINGS = ("video", "text", "multimodal")  # the aligned embeddings
HEADS = ("hashtag", "query")  # the distilled label heads
# hyper-parameters of DistillModule that EmbeddingModule does not take (kept out of the student checkpoint's)
DISTILL_HPARAMS = ("teacher_ckpt", "teacher_store", "teacher_init", "teacher_text", "relation_temperature",
                   "label_temperature")
STORE_HINT = "mmemb eval extract --run TEACHER_RUN --split train --logits --out DIR"


def _num_labels(cfg) -> dict[str, int]:
    """Label vocabulary sizes of a :class:`~mmemb.models.config.ModelConfig` by head."""
    return {"hashtag": cfg.heads.num_hashtags, "query": cfg.heads.num_queries}


class _Frozen:
    """Holds the teacher outside the module tree: a plain attribute that is not an ``nn.Module`` keeps
    it out of ``parameters()``, ``state_dict()``, ``train()``, ``.to()`` and DDP."""

    def __init__(self, module: EmbeddingModule):
        self.module = module


class TeacherStore:
    """The teacher's outputs by video id, read from an :class:`~mmemb.eval.store.EmbeddingStore`
    (``mmemb eval extract --logits``): ``video``, ``text``, ``multimodal`` embeddings (a zero row
    where the modality was missing) and ``hashtag_logits`` / ``query_logits``."""

    def __init__(self, directory: str | Path):
        from ..eval.store import MANIFEST, EmbeddingStore

        self.directory = Path(directory)
        if not (self.directory / MANIFEST).exists():
            raise InputError(f"{self.directory}: no teacher store here (no {MANIFEST}); write one with {STORE_HINT}")
        store = EmbeddingStore(self.directory)
        if not len(store):
            raise InputError(f"{self.directory}/{MANIFEST}: the teacher store is empty; write it with {STORE_HINT}")
        self.info = store.info
        self.dims = store.dims
        self.arrays: dict[str, np.ndarray] = {}
        ids: list[str] = []
        for name in sorted(self.dims):
            ids, self.arrays[name] = store.load(name)  # (N, D), the same id order for every name
        self.row = {key: i for i, key in enumerate(ids)}

    def missing(self, ids: list[str]) -> list[str]:
        """The ``ids`` the store lacks, in order."""
        return [i for i in ids if i not in self.row]

    def check_ids(self, ids: list[str], what: str) -> None:
        """Raise an :class:`InputError` naming how many of ``ids`` the store lacks and an example."""
        missing = self.missing(ids)
        if missing:
            raise InputError(f"{self.directory}: {len(missing)} of the {len(ids)} {what} are not in the teacher "
                             f"store (e.g. id {missing[0]!r}); extract the teacher's outputs of every training "
                             f"video: {STORE_HINT}")

    def lookup(self, ids: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """name -> ``(B, D)`` float32 rows of ``ids`` on ``device``."""
        self.check_ids(ids, "videos of this batch")
        rows = np.array([self.row[i] for i in ids], dtype=np.int64)  # (B,)
        return {name: torch.from_numpy(np.ascontiguousarray(a[rows])).to(device) for name, a in self.arrays.items()}


class DistillModule(EmbeddingModule):
    """An :class:`EmbeddingModule` (the student preset) trained with distillation terms from a frozen
    teacher, online (``teacher_ckpt``) or offline (``teacher_store``); see the module docstring.

    Args:
        preset: the student preset (``student_small``, ``student_tiny``; any preset works).
        teacher_ckpt: the teacher's Lightning checkpoint, or its run folder (the newest version's best
            checkpoint; online distillation).
        teacher_store: a store of the teacher's outputs on the train split (offline distillation;
            ``mmemb eval extract --split train --logits``). Exactly one of the two, unless every
            distillation weight is 0 (plain training of the student).
        loss_weights: the student's task terms (:data:`~mmemb.lit.module.DEFAULT_LOSS_WEIGHTS`) and the
            distillation terms (:data:`DEFAULT_DISTILL_WEIGHTS`); 0 or absent disables a term. None = all
            the defaults.
        teacher_init: start the student from the teacher: when training starts, every weight of
            ``teacher_ckpt`` whose name and shape match the student's is copied into it (with
            ``student_small`` from ``teacher_small``: the text tower, the n-gram bag, the hashtag head and
            its tag GCN, the text projection; the visual tower stays as initialised), as
            ``init_from`` does. Needs ``teacher_ckpt``; not with ``init_from``.
        teacher_text: the student's text tower (:meth:`~mmemb.models.model.EmbeddingModel.text_tower`:
            transformer, projection, n-gram bag and their channel attention) when the teacher's has the
            same shapes: ``"learn"`` trains it from its initialisation; ``"init"`` starts it from the
            teacher's weights when training starts; ``"frozen"`` copies the teacher's and keeps them
            (no gradient, evaluation mode), so the student's text embeddings are the teacher's and only the
            rest (visual tower, heads) learns to match them. Needs ``teacher_ckpt``.
        relation_temperature: temperature of the in-batch similarity distributions (``distill_relation``).
        label_temperature: temperature of the label logits (``distill_label``).
        **kwargs: the other :class:`EmbeddingModule` arguments.
    """

    def __init__(
        self,
        preset: str = "student_small",
        teacher_ckpt: str | None = None,
        teacher_store: str | None = None,
        teacher_init: bool = False,
        teacher_text: Literal["learn", "init", "frozen"] = "learn",
        loss_weights: dict[str, float] | None = None,
        relation_temperature: float = 0.1,
        label_temperature: float = 1.0,
        **kwargs: Any,
    ):
        weights = ({**DEFAULT_LOSS_WEIGHTS, **DEFAULT_DISTILL_WEIGHTS} if loss_weights is None else dict(loss_weights))
        distill_weights = {k: float(weights.pop(k)) for k in DISTILL_TERMS if k in weights}
        super().__init__(preset=preset, loss_weights=weights, **kwargs)  # the student, created first
        if relation_temperature <= 0 or label_temperature <= 0:
            raise ValueError(f"relation_temperature and label_temperature must be > 0, got {relation_temperature} "
                             f"and {label_temperature}")
        self.distill_weights = distill_weights
        self.loss_weights = {**self.loss_weights, **distill_weights}  # every weight, for total_loss
        active = any(w > 0 for w in distill_weights.values())
        if teacher_ckpt is not None and teacher_store is not None:
            raise ValueError("give one of model.teacher_ckpt (online) and model.teacher_store (offline), not both")
        if active and teacher_ckpt is None and teacher_store is None:
            raise ValueError(f"distillation weights {distill_weights} need a teacher: --model.teacher_ckpt CKPT "
                             f"(online) or --model.teacher_store DIR (offline, written by {STORE_HINT})")
        if teacher_init and teacher_ckpt is None:
            raise ValueError("model.teacher_init copies the teacher checkpoint's weights into the student: give "
                             "--model.teacher_ckpt CKPT, or --model.init_from CKPT with a teacher store, or set "
                             "--model.teacher_init false")
        if teacher_text not in ("learn", "init", "frozen"):
            raise ValueError(f"model.teacher_text must be 'learn', 'init' or 'frozen', got {teacher_text!r}")
        if teacher_text != "learn" and teacher_ckpt is None:
            store = (" (a teacher store holds the teacher's outputs, not its weights: distil online instead of "
                     "--model.teacher_store)" if teacher_store is not None else "")
            raise ValueError(f"model.teacher_text={teacher_text!r} copies the teacher checkpoint's text tower into "
                             f"the student: give --model.teacher_ckpt CKPT{store}, or set --model.teacher_text learn")
        if teacher_init and kwargs.get("init_from"):
            raise ValueError("give one of model.teacher_init (the teacher's weights) and model.init_from, not both")
        self._teacher: _Frozen | None = None
        self._teacher_path: str | None = None
        if teacher_ckpt is not None:
            from ..eval.loading import resolve_checkpoint

            teacher_ckpt = str(resolve_checkpoint(teacher_ckpt))  # a run folder: its newest best checkpoint
        self._teacher_init_path = teacher_ckpt if teacher_init else None
        self._teacher_text_path = teacher_ckpt if teacher_text != "learn" else None
        self._frozen_text = teacher_text == "frozen"
        if self._frozen_text:
            for module in self.model.text_tower().values():
                module.requires_grad_(False)  # out of the optimizer (configure_optimizers skips them)
        self._store: TeacherStore | None = None
        teacher_dims: dict[str, int] = {}
        if active and teacher_ckpt is not None:
            # a fresh contextvars.Context: while LightningCLI builds the student it hands the student's
            # hyper-parameters to every module created (a context variable); the teacher keeps its own
            teacher = contextvars.Context().run(EmbeddingModule.from_checkpoint_weights, teacher_ckpt)
            teacher.eval()
            teacher.requires_grad_(False)
            self._teacher = _Frozen(teacher)
            self._teacher_path = teacher_ckpt
            self._check_teacher_config(teacher, str(teacher_ckpt))
            teacher_dims = {n: teacher.config.embed_dim for n in EMBEDDINGS}
        elif active:
            self._store = TeacherStore(teacher_store)
            self._check_store(self._store)
            teacher_dims = {n: d for n, d in self._store.dims.items() if n in EMBEDDINGS}
        # a learned projection student -> teacher width per aligned embedding, where the widths differ
        width = self.config.embed_dim
        projected = [n for n in self._student_embeddings() if n in teacher_dims and teacher_dims[n] != width]
        self.distill_proj: nn.ModuleDict | None = None
        if self._dweight("distill_embed") > 0 and projected:
            self.distill_proj = nn.ModuleDict({n: nn.Linear(width, teacher_dims[n]) for n in projected})

    # ------------------------------------------------------------------ the teacher

    @property
    def teacher(self) -> EmbeddingModule | None:
        """The frozen online teacher (None offline or without distillation)."""
        return None if self._teacher is None else self._teacher.module

    def _dweight(self, term: str) -> float:
        return float(self.distill_weights.get(term, 0.0))

    def _student_embeddings(self) -> list[str]:
        return ["video", "text"] + (["multimodal"] if self.config.has_multimodal else [])

    def _student_heads(self) -> list[str]:
        return [n for n, on in zip(HEADS, (self.config.has_hashtag_head, self.config.has_query_head)) if on]

    def _check_teacher_config(self, teacher: EmbeddingModule, path: str) -> None:
        """The sizes the student shares with the teacher: text vocabulary, n-gram buckets, label
        vocabularies, frame size."""
        s, t = self.config, teacher.config
        pairs = [("text.vocab_size (data.vocab_size)", s.text.vocab_size, t.text.vocab_size),
                 ("text.ngram_buckets (data.text.ngram_buckets)", s.text.ngram_buckets, t.text.ngram_buckets),
                 ("vision.frame_size (data.decode.frame_size)", s.vision.frame_size, t.vision.frame_size)]
        if self._dweight("distill_label") > 0:
            pairs += [(f"heads.num_{h}s (data.num_{h}s)", _num_labels(s)[h], _num_labels(t)[h])
                      for h in self._student_heads()]
        bad = [f"{name}: student {a}, teacher {b}" for name, a, b in pairs if a != b]
        if bad:
            raise ValueError(f"the student's data does not match the teacher {path}: {'; '.join(bad)}. Train the "
                             f"student on the teacher run's data settings and vocabularies (data.vocab_dir: "
                             f"<teacher run>/vocab, the teacher's data.decode and data.text)")
        has_head = {"hashtag": t.has_hashtag_head, "query": t.has_query_head}
        missing = [h for h in self._student_heads() if not has_head[h]]
        if self._dweight("distill_label") > 0 and missing:
            raise ValueError(f"distill_label: the teacher {path} has no {missing} head(s); set "
                             f"--model.loss_weights.distill_label 0")

    def _check_store(self, store: TeacherStore) -> None:
        """The store holds what the active terms read, at the student's label vocabulary sizes."""
        need = ["video", "text"]
        if self._dweight("distill_embed") > 0:
            need += [n for n in self._student_embeddings() if n not in need]
        if self._dweight("distill_label") > 0:
            need += [f"{h}_logits" for h in self._student_heads()]
        lacking = [n for n in need if n not in store.dims]
        if lacking:
            raise InputError(f"{store.directory}: the teacher store has {sorted(store.dims)}, not {lacking}"
                             + ("; store the logits too: " + STORE_HINT if any("logits" in n for n in lacking) else ""))
        for h in self._student_heads():
            key = f"{h}_logits"
            if self._dweight("distill_label") > 0 and store.dims[key] != _num_labels(self.config)[h]:
                raise ValueError(f"{store.directory}: the teacher store's {key} has {store.dims[key]} labels, the "
                                 f"student's data {_num_labels(self.config)[h]}: use the teacher run's "
                                 f"vocabularies (data.vocab_dir: <teacher run>/vocab)")

    def _check_vocabularies(self, vocabs) -> None:
        """The data's vocabularies are the teacher's (fingerprint, and the label names of its heads)."""
        from ..data.vocab import Vocabularies, vocab_fingerprint
        from .hashtag_scoring import name_token_ids

        ours = vocab_fingerprint(vocabs)
        hint = "train the student with the teacher run's vocabularies: --data.vocab_dir <teacher run>/vocab"
        if self._store is not None:
            theirs = self._store.info.get("vocab_fingerprint")
            if theirs is None:
                log.warning("%s has no vocab_fingerprint (extracted without --logits): the vocabularies are not "
                            "checked", self._store.directory)
            elif theirs != ours:
                raise ConfigError(f"{self._store.directory}: the teacher store was extracted with other vocabularies "
                                  f"than the student's data; {hint}")
            return
        teacher = self.teacher
        if teacher is None:
            return
        from ..eval.loading import find_config, find_vocab_dir

        ckpt = Path(self._teacher_path)
        try:
            import yaml

            config = yaml.safe_load(find_config(ckpt).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            config = {}
        vocab_dir = find_vocab_dir(ckpt, config)
        if vocab_dir is not None and vocab_fingerprint(Vocabularies.load(vocab_dir)) != ours:
            raise ConfigError(f"the student's data vocabularies differ from the teacher's ({vocab_dir}); {hint}")
        for head in self._student_heads():
            branch = {"hashtag": teacher.model.hashtag_branch, "query": teacher.model.query_branch}[head]
            if branch is None:
                continue
            labels = list({"hashtag": vocabs.hashtags, "query": vocabs.queries}[head].labels)
            ids, _ = name_token_ids(vocabs.tokenizer, labels, teacher.config.heads.label_max_length)
            if ids.shape != branch.name_ids.shape or not torch.equal(ids, branch.name_ids.cpu()):
                raise ConfigError(f"the teacher {ckpt}'s {head} head was built on other label names than the "
                                  f"student's data; {hint}")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "vocabs"):
            return
        if stage == "fit" and self._teacher_init_path is not None:
            self.init_from_checkpoint(self._teacher_init_path, dm.vocabs)  # a resumed run's checkpoint overwrites it
        if stage == "fit" and self._teacher_text_path is not None:
            self._copy_teacher_text(self._teacher_text_path, dm.vocabs)
        if self._teacher is None and self._store is None:
            return
        self._check_vocabularies(dm.vocabs)
        if stage == "fit" and self._store is not None:
            self._check_offline_data(dm)
            self._store.check_ids([str(r.id) for r in dm.splits["train"]], "training videos")

    def _copy_teacher_text(self, path: str, vocabs) -> None:
        """Copy the teacher's text tower (``teacher_text``); every tensor of the student's must fit."""
        tower = self.model.text_tower()
        copied, _ = self.init_from_checkpoint(path, vocabs, only=tuple(tower))
        expected = sum(len(m.state_dict()) for m in tower.values())
        if copied != expected:
            raise ConfigError(f"model.teacher_text: only {copied} of the student's {expected} text-tower tensors "
                              f"({', '.join(tower)}) have a tensor of the same name and shape in the teacher {path}; "
                              f"give the student the teacher's text settings, or set --model.teacher_text learn")

    def train(self, mode: bool = True) -> "DistillModule":
        """As ``nn.Module.train``; a frozen text tower (``teacher_text="frozen"``) stays in evaluation mode."""
        super().train(mode)
        if getattr(self, "_frozen_text", False):  # (set after nn.Module's own set-up)
            for module in self.model.text_tower().values():
                module.eval()
        return self

    def _check_offline_data(self, dm) -> None:
        """Offline targets cannot follow augmented views: the augmentations must be off."""
        on = []
        if self._weight("simclr") > 0:
            on.append("the SimCLR views (--model.loss_weights.simclr 0)")
        decode = getattr(dm, "decode", None)
        if decode is not None and decode.train_jitter > 0:
            on.append("the frame jitter (--data.decode.train_jitter 0)")
        if decode is not None and decode.train_clip_seconds is not None:
            on.append("the random clip segment (--data.decode.train_clip_seconds null)")
        if on:
            raise ConfigError(f"offline distillation (model.teacher_store) reads the teacher's outputs on the "
                              f"unaugmented clips, so the augmentations must be off; turn off {', '.join(on)}, or "
                              f"distil online (--model.teacher_ckpt)")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def _teacher_targets(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The teacher's embeddings, logits and row masks on ``inputs`` (online) or for its ids (offline):
        ``video``, ``text``, ``multimodal``, ``<head>_logits`` and ``<embedding>_mask`` ``(B,)``."""
        if self._store is not None:
            out = self._store.lookup([str(i) for i in inputs["ids"]], self.device)
            for name in EMBEDDINGS:
                if name in out:
                    out[f"{name}_mask"] = (out[name] != 0).any(dim=-1)  # (B,): zero rows = missing
            return out
        teacher = self.teacher
        if teacher.training:
            raise RuntimeError("the teacher left evaluation mode")
        if teacher.device != self.device:
            teacher.to(self.device)
        with torch.no_grad():
            out = teacher.model(inputs)
        b = out["video"].shape[0]
        text_ok = inputs.get("text_mask")
        targets = {k: out[k] for k in ("video", "text", "multimodal", "hashtag_logits", "query_logits") if k in out}
        targets["video_mask"] = out["video_mask"]
        targets["text_mask"] = (torch.ones(b, dtype=torch.bool, device=self.device) if text_ok is None
                                else text_ok.bool())
        if "multimodal" in out:
            targets["multimodal_mask"] = out["multimodal_mask"]
        return targets

    # ------------------------------------------------------------------ losses

    def _extra_terms(self, inputs: dict[str, Any], out: dict[str, Any],
                     batch_idx: int | None) -> dict[str, torch.Tensor]:
        """The distillation terms of a training step (none in evaluation, nor at weight 0)."""
        if batch_idx is None or not any(w > 0 for w in self.distill_weights.values()):
            return {}
        target = self._teacher_targets(inputs)
        b = out["video"].shape[0]
        text_ok = inputs.get("text_mask")
        masks = {"video": out["video_mask"],
                 "text": torch.ones(b, dtype=torch.bool, device=self.device) if text_ok is None else text_ok.bool(),
                 "multimodal": out.get("multimodal_mask")}
        terms: dict[str, torch.Tensor] = {}
        if self._dweight("distill_embed") > 0:
            names = [n for n in self._student_embeddings() if n in target]
            proj = self.distill_proj
            student = {n: proj[n](out[n]) if proj is not None and n in proj else out[n] for n in names}
            terms.update(embedding_alignment(student, {n: target[n] for n in names},
                                             {n: masks[n] & target[f"{n}_mask"] for n in names}))
        if self._dweight("distill_relation") > 0:
            pair = masks["video"] & masks["text"] & target["video_mask"] & target["text_mask"]  # (B,)
            terms.update(relational_kl(out["video"], out["text"], target["video"], target["text"],
                                       float(self.hparams.relation_temperature), pair))
        heads = [h for h in self._student_heads() if f"{h}_logits" in out]
        if self._dweight("distill_label") > 0 and heads:
            form: Literal["sigmoid", "softmax"] = "softmax" if self.hparams.label_weighting == "softmax" else "sigmoid"
            row = masks["multimodal"] if masks["multimodal"] is not None else masks["video"]
            if "multimodal_mask" in target:
                row = row & target["multimodal_mask"]
            terms.update(label_distillation({h: out[f"{h}_logits"] for h in heads},
                                            {h: target[f"{h}_logits"] for h in heads},
                                            float(self.hparams.label_temperature), row, form))
        return terms

    def configure_optimizers(self):
        if self.distill_proj is None:
            return super().configure_optimizers()
        trainable = nn.ModuleDict({"model": self.model, "distill_proj": self.distill_proj})  # the teacher is not here
        return configure_warmup_cosine(self, trainable, self.hparams.optimizer)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint the student's :class:`EmbeddingModule` checkpoint: the distillation
        hyper-parameters, weights and projections go to ``checkpoint["distill"]``."""
        super().on_save_checkpoint(checkpoint)
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        distill_hp = {k: hparams.pop(k) for k in DISTILL_HPARAMS if k in hparams}
        weights = hparams.get("loss_weights")
        if isinstance(weights, dict):
            distill_hp["loss_weights"] = dict(weights)
            hparams["loss_weights"] = {k: v for k, v in weights.items() if k not in DISTILL_TERMS}
        if "_class_path" in hparams:  # LightningCLI's record of the class
            hparams["_class_path"] = f"{EmbeddingModule.__module__}.{EmbeddingModule.__name__}"
        checkpoint["hyper_parameters"] = hparams
        state = checkpoint.get("state_dict", {})
        proj = {k: state.pop(k) for k in [k for k in state if k.startswith("distill_proj.")]}
        checkpoint["distill"] = {"hyper_parameters": distill_hp, "state_dict": proj}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed distillation gets its projections back."""
        distill = checkpoint.get("distill")
        if isinstance(distill, dict):
            checkpoint.setdefault("state_dict", {}).update(distill.get("state_dict", {}))
        super().on_load_checkpoint(checkpoint)
