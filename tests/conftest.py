"""Shared test setup: offline hub, few threads, tiny fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo corpus shared by the data, CLI and training tests: 6 categories x 30 videos,
    32x32 clips of 1 s. Returns the manifest path."""
    from mmemb.data.demo import DemoConfig, build_demo

    out = tmp_path_factory.mktemp("small_demo")
    cfg = DemoConfig(num_categories=6, videos_per_category=30, frame_size=32, seconds=1.0, workers=2)
    return Path(build_demo(out, cfg, progress=False).manifest)


LEARNING_DEMO = dict(num_categories=6, videos_per_category=60, frame_size=32, seconds=1.0)


@pytest.fixture(scope="session")
def learning_demo(tmp_path_factory) -> Path:
    """6 categories x 60 videos, for the learning tests: on 6 x 30 the captions are too few for text to
    predict the category well (a bag-of-tokens linear probe reaches ~1.5x chance), on 6 x 60 the probe
    reaches ~2.6x. Returns the manifest path."""
    from mmemb.data.demo import DemoConfig, build_demo

    out = tmp_path_factory.mktemp("learning_demo")
    return Path(build_demo(out, DemoConfig(workers=2, **LEARNING_DEMO), progress=False).manifest)


@pytest.fixture(scope="session")
def kuairec_text_only(tmp_path_factory) -> Path:
    """A text-only manifest (no clips) of 240 real KuaiRec videos that carry hashtags, as
    ``mmemb data import-kuairec`` writes them (level-2 categories). Returns the manifest path."""
    from mmemb.data.kuairec import read_kuairec
    from mmemb.data.manifest import write_manifest

    records = [r for r in read_kuairec(ASSETS / "kuairec" / "kuairec_caption_category.csv", 2) if r.hashtags][:240]
    out = tmp_path_factory.mktemp("kuairec_text") / "kuairec.jsonl"
    write_manifest(records, out)
    return out
