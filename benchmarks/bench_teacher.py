"""Cost of the teacher presets: parameters, forward FLOPs, step time and peak memory.

    python benchmarks/bench_teacher.py                                   # all presets, CPU
    python benchmarks/bench_teacher.py --presets teacher_tiny --steps 3
    python benchmarks/bench_teacher.py --device cuda --json runs/bench_teacher.json
    python benchmarks/bench_teacher.py --presets teacher_small --ngram-buckets 32768 --optimizer dense  # quickstart
    python benchmarks/bench_teacher.py --presets teacher_tiny --num-hashtags 1000 --label-refresh-steps 10

For every preset (each in a fresh subprocess, so that its peak memory is its own) it builds a randomly
initialised :class:`mmemb.models.model.EmbeddingModel` and a synthetic batch of the data's contract:

* ``--frames`` (4) RGB frames per clip at the preset's ``frame_size``;
* a log-mel of ``--audio-seconds`` (2 s) at 16 kHz, 64 bands, 10 ms hop (201 frames);
* ``--text-length`` (64) text tokens (all real), ``--vocab-size`` (8000) ids;
* the keyword head's inputs (3 masked slots per text): the forward then runs the text tower twice
  (clean text for the text channel, masked text for the fusion), as in training;
* label heads off by default (``--num-hashtags`` / ``--num-queries`` 0): with ``N`` labels each
  forward also encodes the ``N`` label names through the text tower, a per-batch (not per-clip) cost;
  with ``--label-refresh-steps k`` (``heads.label_refresh_steps``) only every k-th timed step does
  (step i refreshes when ``i % k == 0``, warmup steps included), the others reuse the cached encodings;
* no hashed char-n-gram bag by default (``--ngram-buckets`` 0; the quickstart's data has 32,768): with
  buckets, ``--ngrams-per-clip`` (256, the data's cap) random n-gram ids per clip;
* the optimizer (``--optimizer``): ``sparse`` (default) is what training builds
  (:func:`mmemb.lit.optim.build_optimizer`: AdamW with the weight-decay groups, the n-gram table with
  sparse gradients and SparseAdam); ``dense`` is the same AdamW with the table dense (every row read
  and written each step, as before the sparse update; the same cost as the plain
  ``torch.optim.AdamW(model.parameters())`` the rows dated before 2026-11-30 used); ``both`` times
  the two on two copies of the model, one step of each in turn (a fair comparison on a loaded machine);

and reports:

* parameters: total and per tower (visual = ViT + temporal pool + projection; text = BERT +
  projection; audio = encoder + projection; fusion = cross-attention fusion, fused projections and
  channel attentions; heads = label branches, keyword head, logit scale);
* FLOPs per clip of one forward and of forward+backward (``torch.utils.flop_counter.FlopCounterMode``
  on one batch, divided by the batch size; a multiply-add is 2 FLOPs), and the forward FLOPs per
  tower; CPU attention (``_scaled_dot_product_flash_attention_for_cpu``, which torch's counter does
  not know) is counted with torch's own SDPA formulas;
* time: median over ``--steps`` (after ``--warmup``) of forward+backward (a surrogate loss touching
  every output), of the optimizer step, steps/s and clips/s of the whole step (forward+backward+step);
* peak memory of the measured steps: the growth of ``ru_maxrss`` over them on CPU (model, batch and
  optimizer are built first; the AdamW state is allocated in the first step, so it is included),
  ``torch.cuda.max_memory_allocated`` above the memory allocated before them on CUDA.

``teacher_base`` on CPU runs one forward+backward of a batch of 2 clips and no optimizer step (a ViT-B
and a BERT-base on 4 frames per clip); pass ``--batch-size`` to force a batch size for every preset.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils import flop_counter  # noqa: E402

from mmemb.data.decode import DecodeConfig  # noqa: E402
from mmemb.lit.optim import build_optimizer  # noqa: E402
from mmemb.models import EmbeddingModel, LabelInputs, ModelConfig, create_model, get_model_config  # noqa: E402
from mmemb.models import list_models  # noqa: E402

DEFAULT_PRESETS = ("teacher_tiny", "teacher_small", "teacher_base")
# Parameter-name prefixes of every tower (EmbeddingModel attribute names).
TOWERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("visual", ("visual.", "temporal_pool.", "visual_proj.")),
    ("text", ("text.", "text_proj.", "ngram_bag.", "text_attention.")),
    ("audio", ("audio.", "audio_proj.")),
    ("fusion", ("fusion.", "fused_proj.", "video_attention.", "multimodal_attention.")),
    ("heads", ("hashtag_branch.", "query_branch.", "keyword_", "logit_scale")),
)
NUM_KEYWORDS = 3  # masked keyword slots per text (KeywordConfig.max_keywords)
# preset -> (batch, steps, warmup) on CPU, without the AdamW step
CPU_LIMITED: Mapping[str, tuple[int, int, int]] = types.MappingProxyType({"teacher_base": (2, 1, 0)})


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one preset is measured on."""

    preset: str
    batch_size: int
    steps: int
    warmup: int
    optimizer_step: bool
    frames: int
    audio_seconds: float
    text_length: int
    vocab_size: int
    num_hashtags: int
    num_queries: int
    device: str
    ngram_buckets: int = 0
    ngrams_per_clip: int = 256
    optimizer: str = "sparse"  # "sparse" (build_optimizer, as training), "dense" (the table dense) or "both"
    label_refresh_steps: int = 1  # heads.label_refresh_steps: steps between two encodings of the label names
    seed: int = 0


# ----------------------------------------------------------------------------- model and batch


def mel_frames(seconds: float) -> int:
    """Log-mel frames of ``seconds`` of 16 kHz audio with the data's 10 ms hop."""
    return DecodeConfig(audio_seconds=seconds, sample_rate=16000, n_mels=64).mel_frames


def _label_inputs(n: int, cfg: ModelConfig, g: torch.Generator) -> Optional[LabelInputs]:
    """``n`` random label names of 3 tokens (``[CLS] a b [SEP]``-like) and a ring graph; ``None`` for 0."""
    if n == 0:
        return None
    ids = torch.zeros(n, cfg.heads.label_max_length, dtype=torch.long)
    ids[:, :4] = torch.randint(5, cfg.text.vocab_size, (n, 4), generator=g)
    att = (ids != 0).long()
    ring = torch.arange(n)
    return LabelInputs(ids, att, torch.stack([ring, (ring + 1) % n]), torch.ones(n))


def build_model(w: Workload) -> EmbeddingModel:
    """The preset's teacher, randomly initialised, on ``w.device``, in train mode."""
    torch.manual_seed(w.seed)
    cfg = get_model_config(w.preset, text={"vocab_size": w.vocab_size, "ngram_buckets": w.ngram_buckets},
                           heads={"num_hashtags": w.num_hashtags, "num_queries": w.num_queries,
                                  "label_refresh_steps": w.label_refresh_steps})
    if w.text_length > cfg.text.max_length:
        raise ValueError(f"--text-length {w.text_length} > {w.preset}'s text.max_length {cfg.text.max_length}")
    g = torch.Generator().manual_seed(w.seed)
    model = create_model(cfg, hashtags=_label_inputs(w.num_hashtags, cfg, g),
                         queries=_label_inputs(w.num_queries, cfg, g))
    return model.to(w.device).train()


def synthetic_batch(cfg: ModelConfig, w: Workload) -> dict[str, Any]:
    """A batch of the data's contract (uint8 frames, log-mels, token ids with field ids) on ``w.device``."""
    g = torch.Generator().manual_seed(w.seed + 1)
    b, t, length, s = w.batch_size, w.frames, w.text_length, cfg.vision.frame_size
    text_ids = torch.randint(5, cfg.text.vocab_size, (b, length), generator=g)
    text_ids[:, 0] = 2  # [CLS]
    field_ids = torch.randint(1, cfg.text.num_fields, (b, length), generator=g)
    field_ids[:, 0] = 0
    batch = {
        "frames": torch.randint(0, 256, (b, t, 3, s, s), generator=g, dtype=torch.uint8),
        "video_mask": torch.ones(b, dtype=torch.bool),
        "frame_mask": torch.ones(b, t, dtype=torch.bool),
        "mel": torch.randn(b, cfg.audio.n_mels, mel_frames(w.audio_seconds), generator=g),
        "audio_mask": torch.ones(b, dtype=torch.bool),
        "text_ids": text_ids,
        "text_attention": torch.ones(b, length, dtype=torch.long),
        "text_field_ids": field_ids,
        "text_mask": torch.ones(b, dtype=torch.bool),
    }
    if w.ngram_buckets:  # (B, G) bucket + 1, every slot a real n-gram
        batch["text_ngrams"] = torch.randint(1, w.ngram_buckets + 1, (b, w.ngrams_per_clip), generator=g)
    return {k: v.to(w.device) for k, v in batch.items()}


def forward_kwargs(cfg: ModelConfig, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword head's inputs: slots 1..3 of every text masked (``[MASK]`` = 4); empty without the head."""
    if not cfg.keyword_head:
        return {}
    positions = torch.zeros_like(batch["text_ids"], dtype=torch.bool)
    positions[:, 1:1 + NUM_KEYWORDS] = True
    return {"masked_text_ids": batch["text_ids"].masked_fill(positions, 4), "keyword_positions": positions,
            "num_keywords": NUM_KEYWORDS}


def surrogate_loss(out: Mapping[str, Any]) -> torch.Tensor:
    """A scalar that depends on every output (gradients reach every tower); its value is meaningless."""
    sim = out["video"] @ out["text"].T * out["logit_scale"]
    loss = torch.logsumexp(sim, dim=-1).mean() + out["multimodal"].square().mean()
    for key in ("hashtag_logits", "query_logits", "keyword_logits"):
        if key in out:
            loss = loss + torch.logsumexp(out[key].float(), dim=-1).mean()
    return loss


# ----------------------------------------------------------------------------- parameters and FLOPs


def tower_of(name: str) -> str:
    """The tower of a parameter (or submodule) name of :class:`TeacherModel`; ``other`` when none."""
    for tower, prefixes in TOWERS:
        if any(name.startswith(p) or name == p.rstrip(".") for p in prefixes):
            return tower
    return "other"


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``total`` and one count per tower (a tied parameter counts once)."""
    counts = {tower: 0 for tower, _ in TOWERS}
    for name, p in model.named_parameters():  # named_parameters() yields a shared tensor once
        tower = tower_of(name)
        counts[tower] = counts.get(tower, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_mapping() -> dict[Any, Callable[..., int]]:
    """FLOP formulas of the CPU attention kernels that ``FlopCounterMode`` lacks."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return mapping


def _module_totals(counts: Mapping[str, Mapping[Any, int]]) -> dict[str, int]:
    """FlopCounterMode's per-module counts -> FLOPs per tower.

    A tower's modules are not always entered through its ``forward`` (the ViT blocks are called one by
    one, the audio tower through ``forward_tokens``), so every outermost tracked submodule of the model
    counts for its tower; ``top_level`` is what the model computes outside any submodule (the keyword
    decoder tied to the word embeddings, pooling)."""
    names = [n for n in counts if "." in n]  # "Global" and the root have no dot
    outermost = [n for n in names if not any(n.startswith(other + ".") for other in names)]
    totals: dict[str, int] = {}
    for name in outermost:
        tower = tower_of(name.split(".", 1)[1])
        totals[tower] = totals.get(tower, 0) + sum(counts[name].values())
    root = [n for n in counts if n != "Global" and "." not in n]
    if root:
        totals["top_level"] = sum(counts[root[0]].values()) - sum(totals.values())
    return totals


def count_flops(model: TeacherModel, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Forward and forward+backward FLOPs per clip of one batch, and forward FLOPs per clip per tower."""
    b = batch["frames"].shape[0]
    model.zero_grad(set_to_none=True)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=flop_mapping())
    with counter:
        out = model(batch, **forward_kwargs(model.cfg, batch))
        forward = counter.get_total_flops()
        per_tower = _module_totals(counter.get_flop_counts())
        surrogate_loss(out).backward()
        total = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return {"forward_per_clip": forward / b, "forward_backward_per_clip": total / b,
            "forward_per_clip_by_tower": {k: v / b for k, v in sorted(per_tower.items())}}


# ----------------------------------------------------------------------------- time and memory


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _max_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _step_times(fwd_bwd: list[float], opt_step: list[float], has_opt: bool, batch_size: int) -> dict[str, Any]:
    step = statistics.median(fwd_bwd) + (statistics.median(opt_step) if has_opt else 0.0)
    return {"forward_backward_s": statistics.median(fwd_bwd),
            "optimizer_step_s": statistics.median(opt_step) if has_opt else None,
            "steps_per_s": 1.0 / step, "clips_per_s": batch_size / step}


def time_steps(model: TeacherModel, batch: Mapping[str, Any], w: Workload) -> dict[str, Any]:
    """Median forward+backward and optimizer step times, steps/s, and the peak memory of the steps.

    ``--optimizer both``: a copy of the model with the dense table and the model with the sparse one
    (the training optimizer) step in turn, one step each, so that a varying machine load hits both
    alike; the main figures are the sparse variant's, ``variants`` holds both, the peak memory is that
    of both together."""
    names = ("dense", "sparse") if w.optimizer == "both" else (w.optimizer,)
    models = {name: (copy.deepcopy(model) if name != names[-1] else model) for name in names}
    opts = {name: build_optimizer(m, "adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05,
                                  sparse_ngrams=name == "sparse") if w.optimizer_step else None
            for name, m in models.items()}
    kwargs = forward_kwargs(model.cfg, batch)
    fwd_bwd: dict[str, list[float]] = {name: [] for name in names}
    opt_step: dict[str, list[float]] = {name: [] for name in names}
    cuda = w.device.startswith("cuda")
    if cuda:
        _sync(w.device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _max_rss_bytes()
    for i in range(w.warmup + w.steps):
        for name in names:
            m, opt = models[name], opts[name]
            m.zero_grad(set_to_none=True)
            _sync(w.device)
            t0 = time.perf_counter()
            refresh = i % w.label_refresh_steps == 0
            surrogate_loss(m(batch, **kwargs, refresh_labels=refresh)).backward()
            _sync(w.device)
            t1 = time.perf_counter()
            if opt is not None:
                opt.step()
                _sync(w.device)
            t2 = time.perf_counter()
            if i >= w.warmup:
                fwd_bwd[name].append(t1 - t0)
                opt_step[name].append(t2 - t1)
    peak = (torch.cuda.max_memory_allocated() if cuda else _max_rss_bytes()) - base
    variants = {name: _step_times(fwd_bwd[name], opt_step[name], w.optimizer_step, w.batch_size) for name in names}
    return {**variants[names[-1]], "variants": variants, "peak_memory_mib": peak / 2 ** 20,
            "peak_memory_kind": "cuda max_memory_allocated growth" if cuda else "ru_maxrss growth"}


def run_preset(w: Workload) -> dict[str, Any]:
    """Every measurement of one preset (in this process)."""
    model = build_model(w)
    batch = synthetic_batch(model.cfg, w)
    result: dict[str, Any] = {"preset": w.preset, "workload": dataclasses.asdict(w),
                              "mel_frames": mel_frames(w.audio_seconds), "frame_size": model.cfg.vision.frame_size,
                              "params": parameter_counts(model)}
    result["time"] = time_steps(model, batch, w)  # before the FLOP count: the memory growth is the steps'
    result["flops"] = count_flops(model, batch)
    result["env"] = {"torch": torch.__version__, "device": w.device, "threads": torch.get_num_threads(),
                     "cpu": platform.processor() or platform.machine(),
                     "gpu": torch.cuda.get_device_name() if w.device.startswith("cuda") else None}
    return result


# ----------------------------------------------------------------------------- CLI


def workload(preset: str, args: argparse.Namespace) -> Workload:
    """The settings of ``preset`` from the command line (``CPU_LIMITED`` presets on CPU)."""
    batch, steps, warmup, optimizer_step = 32, args.steps, args.warmup, True
    if not args.device.startswith("cuda") and preset in CPU_LIMITED:
        batch, steps, warmup = CPU_LIMITED[preset]
        optimizer_step = False
    if args.batch_size is not None:
        batch = args.batch_size
    return Workload(preset=preset, batch_size=batch, steps=steps, warmup=warmup, optimizer_step=optimizer_step,
                    frames=args.frames, audio_seconds=args.audio_seconds, text_length=args.text_length,
                    vocab_size=args.vocab_size, num_hashtags=args.num_hashtags, num_queries=args.num_queries,
                    device=args.device, ngram_buckets=args.ngram_buckets, ngrams_per_clip=args.ngrams_per_clip,
                    optimizer=args.optimizer, label_refresh_steps=args.label_refresh_steps)


def run_in_subprocess(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_preset` in a fresh interpreter (its own peak memory); raises when the child fails."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(args, preset, out)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"benchmark of {preset} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        return json.loads(out.read_text())


def _fmt_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """Two Markdown tables: parameters and FLOPs; time and memory."""
    towers = [t for t, _ in TOWERS]
    lines = ["| preset | params | " + " | ".join(towers) + " | fwd FLOPs/clip | fwd+bwd FLOPs/clip |",
             "|---" * (len(towers) + 4) + "|"]
    for r in results:
        p, f = r["params"], r["flops"]
        lines.append(f"| {r['preset']} | {_fmt_count(p['total'])} | "
                     + " | ".join(_fmt_count(p.get(t, 0)) for t in towers)
                     + f" | {_fmt_count(f['forward_per_clip'])} | {_fmt_count(f['forward_backward_per_clip'])} |")
    lines += ["", "| preset | fwd FLOPs/clip by tower |", "|---|---|"]
    for r in results:
        by = r["flops"]["forward_per_clip_by_tower"]
        lines.append(f"| {r['preset']} | " + ", ".join(f"{k} {_fmt_count(v)}" for k, v in by.items()) + " |")
    lines += ["", "| preset | device | batch | n-gram buckets | optimizer | steps | fwd+bwd s | opt step s | steps/s "
              "| clips/s | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["workload"]
        variants = r["time"].get("variants") or {w.get("optimizer", "dense"): r["time"]}
        for name, t in variants.items():
            opt = "-" if t["optimizer_step_s"] is None else f"{t['optimizer_step_s']:.3f}"
            lines.append(f"| {r['preset']} | {w['device']} | {w['batch_size']} | {w.get('ngram_buckets', 0)} | "
                         f"{name} | {w['steps']} | {t['forward_backward_s']:.3f} | {opt} | {t['steps_per_s']:.2f} | "
                         f"{t['clips_per_s']:.1f} | {r['time']['peak_memory_mib']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), choices=list_models())
    parser.add_argument("--batch-size", type=int, default=None,
                        help="clips per batch for every preset (default 32; teacher_base on CPU: 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median); teacher_base on CPU: 1")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first; teacher_base on CPU: 0")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", type=Path, default=None, help="write the results there")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--audio-seconds", type=float, default=2.0)
    parser.add_argument("--text-length", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--num-hashtags", type=int, default=0)
    parser.add_argument("--num-queries", type=int, default=0)
    parser.add_argument("--label-refresh-steps", type=int, default=1,
                        help="heads.label_refresh_steps: encode the label names every k-th step (1: every step)")
    parser.add_argument("--ngram-buckets", type=int, default=0, help="n-gram bag buckets (0: no bag)")
    parser.add_argument("--ngrams-per-clip", type=int, default=256)
    parser.add_argument("--optimizer", choices=("sparse", "dense", "both"), default="sparse",
                        help="sparse: the training optimizer; dense: the n-gram table dense; both: the two "
                             "interleaved step by step (see the docstring)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per preset (memory is shared)")
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "frames", "text_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.num_hashtags < 0 or args.num_queries < 0 or args.ngram_buckets < 0:
        parser.error("--warmup, --num-hashtags, --num-queries and --ngram-buckets must be >= 0")
    if args.ngrams_per_clip < 1:
        parser.error("--ngrams-per-clip must be >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    return args


def child_argv(args: argparse.Namespace, preset: str, out: Path) -> list[str]:
    """The command line of the child process measuring ``preset`` into ``out``."""
    argv = ["--presets", preset, "--child-out", str(out), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--device", args.device, "--frames", str(args.frames), "--audio-seconds", str(args.audio_seconds),
            "--text-length", str(args.text_length), "--vocab-size", str(args.vocab_size),
            "--num-hashtags", str(args.num_hashtags), "--num-queries", str(args.num_queries),
            "--ngram-buckets", str(args.ngram_buckets), "--ngrams-per-clip", str(args.ngrams_per_clip),
            "--optimizer", args.optimizer, "--label-refresh-steps", str(args.label_refresh_steps)]
    if args.batch_size is not None:
        argv += ["--batch-size", str(args.batch_size)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the results (empty in a child process)."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child_out is not None:
        args.child_out.write_text(json.dumps(run_preset(workload(args.presets[0], args))))
        return []
    results = []
    for preset in args.presets:
        w = workload(preset, args)
        print(f"{preset}: batch {w.batch_size}, {w.frames} frames of {get_model_config(preset).vision.frame_size} px, "
              f"{w.audio_seconds:g} s audio ({mel_frames(w.audio_seconds)} mel frames x 64), {w.text_length} tokens, "
              f"{w.steps} steps after {w.warmup} warmup on {w.device}", flush=True)
        results.append(run_preset(w) if args.in_process else run_in_subprocess(preset, args))
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
