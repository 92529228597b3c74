"""benchmarks/bench_kuairec_text.py runs end to end at toy size (its numbers live in BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util

from conftest import REPO


def test_bench_kuairec_text_times_steps_and_extrapolates(kuairec_text_only, capsys):
    spec = importlib.util.spec_from_file_location("_bench_kuairec_text", REPO / "benchmarks" / "bench_kuairec_text.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--manifest", str(kuairec_text_only), "--steps", "2", "--warmup", "0", "--val-batches", "1",
                         "--", "--data.batch_size=16", "--data.num_workers=0", "--data.labels.hashtag_min_freq=2"])
    assert result["batch_size"] == 16 and 10 <= result["train_batches"] <= 14  # ~80% of 240 videos in batches of 16
    expected = result["train_batches"] * (result["step_seconds_median"] + result["batch_wait_seconds_median"]) \
        + result["val_batches"] * result["val_batch_seconds_median"]
    assert abs(result["epoch_seconds"] - expected) < 0.2
    assert '"epoch_minutes"' in capsys.readouterr().out
