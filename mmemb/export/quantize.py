"""An int8 text graph for the search-query path.

``mmemb export --int8-text`` also writes ``text_encoder.int8.onnx``: ONNX Runtime's dynamic quantization
of the exported text graph (the weights of every ``MatMul`` / ``Gemm`` in int8, 7-bit range, the activations
quantized on the fly per call; the n-gram table and the layer norms stay float). A query's time in the float graph
is mostly its matrix products (about 12 microseconds per token for the 2-layer width-128 tower on the
reference box), which int8 products cut. ``mmemb.load(DIR, runtime="onnx", int8_text=True)`` uses it.

It is not the float model: its embeddings differ from the float graph's by the quantization error, so
the 1e-4 parity does not apply. Its own check, :func:`int8_report` (in ``parity.json`` under
``int8_text``), compares it with the float graph on the parity check's fixed inputs: every row with text
must keep a cosine of at least :data:`MIN_COSINE` to its float embedding, and a row without text must
stay a zero row. What the error costs on real data is measured in ``benchmarks/bench_int8_text.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .graphs import GraphSpec, example_inputs
from .parity import BATCHES, run_onnx

__all__ = ["INT8_TEXT_ONNX", "MIN_COSINE", "quantize_text_graph", "int8_report"]

INT8_TEXT_ONNX = "text_encoder.int8.onnx"
MIN_COSINE = 0.99  # int8 vs float text embedding, every row with text of the fixed inputs


def quantize_text_graph(src: str | Path, dst: str | Path) -> Path:
    """Write the dynamic int8 quantization of the float text graph ``src`` to ``dst`` (int8 weights of the
    ``MatMul`` / ``Gemm`` nodes, after ONNX Runtime's pre-processing: shape inference and graph
    optimisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    chatter = io.StringIO()  # the quantizer prints and logs its steps; errors still raise
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(chatter), \
            contextlib.redirect_stderr(chatter):
        logging.disable(logging.WARNING)
        try:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            # reduce_range: 7-bit weights. Without it, on a CPU without VNNI (AVX2 only) the u8 x s8 products
            # saturate their 16-bit pair sums: an untrained teacher_tiny text graph kept a lowest cosine of
            # 0.985 on such a CPU (below MIN_COSINE), 0.99997 with it (2026-12-02)
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], reduce_range=True)
        finally:
            logging.disable(logging.NOTSET)
    return dst


def int8_report(float_session, int8_session, spec: GraphSpec, cfg, sizes: dict[str, int],
                seed: int = 0) -> dict[str, Any]:
    """The int8 graph against the float graph on the fixed inputs of every parity batch: the lowest
    cosine of a row with text, the largest absolute difference, whether rows without text stay zero, and
    ``passed`` (cosine >= :data:`MIN_COSINE` and the zero rows kept)."""
    cosines, diffs, zeros_kept = [], [], True
    for batch in BATCHES:
        inputs = example_inputs(cfg, sizes, batch, seed)["text"]
        ref = run_onnx(float_session, spec, inputs).astype(np.float64)  # (B, D), unit rows or zero rows
        got = run_onnx(int8_session, spec, inputs).astype(np.float64)  # (B, D)
        has_text = np.linalg.norm(ref, axis=1) > 0  # (B,)
        zeros_kept &= bool(not got[~has_text].any())
        norms = np.linalg.norm(got[has_text], axis=1).clip(min=1e-12)
        cosines.extend(((ref[has_text] * got[has_text]).sum(axis=1) / norms).tolist())
        diffs.append(float(np.abs(ref - got).max()) if ref.size else 0.0)
    min_cosine = min(cosines) if cosines else 1.0
    return {"file": INT8_TEXT_ONNX, "compared_with": spec.file, "batches": list(BATCHES),
            "min_cosine": min_cosine, "max_abs_diff": max(diffs), "zero_rows_kept": zeros_kept,
            "threshold": MIN_COSINE, "passed": bool(min_cosine >= MIN_COSINE and zeros_kept)}
