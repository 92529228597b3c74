"""Parity of an export: the reloaded weights and the ONNX Runtime graphs against the checkpoint's eager
model, on fixed inputs (:func:`mmemb.export.graphs.example_inputs`).

Every check compares unit-norm embeddings by their maximum absolute difference; the export passes when
every check is within :data:`TOLERANCE`. :func:`parity_report` returns what ``parity.json`` holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..models.model import EmbeddingModel
from .graphs import GraphSpec, encoder_modules, example_inputs

__all__ = ["TOLERANCE", "BATCHES", "onnx_session", "run_onnx", "parity_report"]

TOLERANCE = 1e-4  # max abs difference of unit-norm embeddings
BATCHES = (1, 3)  # batch sizes checked (the graphs' batch axis is dynamic)


def onnx_session(path: Path, threads: int = 1):
    """An ONNX Runtime CPU session of the graph at ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session, spec: GraphSpec, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The output ``(B, D)`` of ``session`` on the spec's inputs taken from ``inputs``."""
    feed = {name: inputs[name].cpu().numpy() for name in spec.input_names}
    return session.run([spec.output], feed)[0]


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def parity_report(eager: EmbeddingModel, reloaded: EmbeddingModel, specs: dict[str, GraphSpec],
                  sessions: dict[str, Any], sizes: dict[str, int], seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compare, for every graph and every batch of :data:`BATCHES`, the eager model's embeddings with the
    reloaded model's (``runtime: torch``) and ONNX Runtime's (``runtime: onnxruntime``); returns
    ``{"tolerance", "metric", "inputs", "checks": [...], "passed"}``."""
    eager_enc = encoder_modules(eager.eval())
    reload_enc = encoder_modules(reloaded.eval())
    checks = []
    for batch in BATCHES:
        inputs = example_inputs(eager.cfg, sizes, batch, seed)
        for name, spec in specs.items():
            args = [inputs[name][n] for n in spec.input_names]
            with torch.inference_mode():
                ref = eager_enc[name](*args).numpy()
                again = reload_enc[name](*args).numpy()
            onnx_out = run_onnx(sessions[name], spec, inputs[name])
            norms = np.linalg.norm(ref, axis=1)
            for runtime, out, source in (("torch", again, "model.safetensors"), ("onnxruntime", onnx_out, spec.file)):
                diff = _max_abs(ref, out)
                checks.append({"graph": name, "runtime": runtime, "file": source, "batch": batch,
                               "max_abs_diff": diff, "passed": bool(diff <= TOLERANCE),
                               "zero_rows": int((norms == 0).sum())})
                if progress is not None:
                    progress(f"parity {name:5s} {runtime:11s} batch {batch}: max |diff| {diff:.2e}")
    return {"tolerance": TOLERANCE, "metric": "max abs difference of the unit-norm embeddings vs the checkpoint's "
                                              "eager model",
            "inputs": f"fixed random inputs (mmemb.export.graphs.example_inputs, seed {seed}), batches "
                      f"{list(BATCHES)}; in the batch of 3 one row lacks audio and text, one lacks video; with "
                      "audio, the first row's log-mel is half padding (mel_valid)",
            "sizes": sizes, "checks": checks, "passed": all(c["passed"] for c in checks)}
