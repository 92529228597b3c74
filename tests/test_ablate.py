"""The ablation runner (:mod:`mmemb.eval.ablate`): configs x seeds, resumable, mean ± std and the seed-spread rule.

The planning, resuming and table logic run against a stand-in ``mmemb`` (a small script that writes the
files the real commands write); one test runs the real ``mmemb fit`` / ``mmemb eval tasks`` on a tiny
config, 2 configs x 2 seeds, and runs the command a second time.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import textwrap

import pytest
from conftest import REPO

from mmemb.cli.eval import main as eval_main
from mmemb.eval.ablate import FULL, StaleRunError, ablate, plan_runs, summarize

CONFIGS = REPO / "configs"

FAKE = textwrap.dedent('''
    """Stand-in for `mmemb`: fit writes nothing but a marker; eval writes metrics from the seed and the config."""
    import json, sys
    from pathlib import Path
    argv = sys.argv[1:]
    if argv[0] == "fit":
        root = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--trainer.default_root_dir=")))
        seed = int(next(a.split("=", 1)[1] for a in argv if a.startswith("--seed_everything=")))
        ablated = sum(a == "--config" for a in argv) > 1
        (root / "fitted.json").write_text(json.dumps({"seed": seed, "ablated": ablated}))
        with open(root.parent.parent / "calls.log", "a") as fh:
            fh.write(f"fit {root.parent.name} {seed}\\n")
    else:
        run, out = Path(argv[argv.index("--run") + 1]), Path(argv[argv.index("--out") + 1])
        fitted = json.loads((run / "fitted.json").read_text())
        out.mkdir(parents=True, exist_ok=True)
        base = 0.5 - 0.2 * fitted["ablated"]
        metrics = {"hashtag_map": base + 0.01 * fitted["seed"] ** 2, "t2v_r1_category": None}
        (out / "metrics.json").write_text(json.dumps({"checkpoint": "x.ckpt", "metrics": metrics}))
''')


@pytest.fixture()
def fake_mmemb(tmp_path):
    script = tmp_path / "fake_mmemb.py"
    script.write_text(FAKE, encoding="utf-8")
    return (sys.executable, str(script))


def _overlay(tmp_path, name="lower_lr"):
    path = tmp_path / f"{name}.yaml"
    path.write_text("model:\n  lr: 0.0003\n", encoding="utf-8")
    return path


def test_plan_names_runs_by_overlay_and_seed(tmp_path):
    overlay = _overlay(tmp_path)
    runs = plan_runs(CONFIGS / "tiny.yaml", [overlay, CONFIGS / "tiny.yaml"], 2, tmp_path / "out")
    assert [r.label for r in runs] == ["full seed0", "full seed1", "lower_lr seed0", "lower_lr seed1"]
    assert runs[3].folder == tmp_path / "out" / "lower_lr" / "seed1" and runs[3].configs[-1] == overlay
    with pytest.raises(ValueError, match="'lower_lr' is taken"):
        plan_runs(CONFIGS / "tiny.yaml", [overlay, overlay], 1, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        plan_runs(CONFIGS / "tiny.yaml", [tmp_path / "nope.yaml"], 1, tmp_path / "out")


def _result(name, seed, value, other=None):
    return {"name": name, "seed": seed, "metrics": {"hashtag_map": value, "t2v_r1_category": other}}


def test_summary_mean_std_difference_and_the_spread_rule():
    results = [_result(FULL, 0, 0.30), _result(FULL, 1, 0.34), _result(FULL, 2, 0.32),
               _result("small", 0, 0.31), _result("small", 1, 0.29), _result("small", 2, 0.33),  # within spread
               _result("big", 0, 0.20), _result("big", 1, 0.21), _result("big", 2, 0.19)]  # far below
    summary = summarize(results)
    assert summary["configs"] == [FULL, "small", "big"]
    assert summary["metrics"] == ["hashtag_map"]  # t2v_r1_category has no value in any run
    full, small, big = (summary["cells"][n]["hashtag_map"] for n in (FULL, "small", "big"))
    assert full.mean == pytest.approx(0.32) and full.std == pytest.approx(statistics.stdev([0.30, 0.34, 0.32]))
    assert small.diff == pytest.approx(-0.01) and small.exceeds_spread is False
    assert big.diff == pytest.approx(-0.12) and big.exceeds_spread is True
    assert full.diff is None and full.exceeds_spread is None
    one_seed = summarize([_result(FULL, 0, 0.3), _result("x", 0, 0.1)])
    assert math.isnan(one_seed["cells"][FULL]["hashtag_map"].std)
    assert one_seed["cells"]["x"]["hashtag_map"].exceeds_spread is None  # no spread, no verdict
    from mmemb.eval.ablate import exceeds_spread

    # one side with one seed: no verdict, whichever side it is (its own spread is unknown)
    assert exceeds_spread(0.05, 0.01, math.nan) is None and exceeds_spread(0.05, math.nan, 0.01) is None
    assert exceeds_spread(0.05, 0.01, 0.02) is True and exceeds_spread(0.015, 0.01, 0.02) is False


def test_the_popularity_column_has_no_difference_and_shows_a_changed_task():
    def run(name, seed, value, popularity):
        return {"name": name, "seed": seed, "metrics": {"hashtag_map": value, "hashtag_map_popularity": popularity}}

    results = [run(FULL, 0, 0.25, 0.087), run(FULL, 1, 0.26, 0.087), run("same_task", 0, 0.20, 0.087),
               run("same_task", 1, 0.21, 0.087), run("other_labels", 0, 0.24, 0.237),
               run("other_labels", 1, 0.23, 0.237)]
    summary = summarize(results)
    assert summary["metrics"] == ["hashtag_map", "hashtag_map_popularity"]
    other = summary["cells"]["other_labels"]["hashtag_map_popularity"]
    assert other.mean == pytest.approx(0.237) and other.diff is None and other.exceeds_spread is None
    assert summary["cells"]["same_task"]["hashtag_map"].diff == pytest.approx(-0.05)
    from mmemb.eval.ablate import markdown_table

    table = markdown_table(summary)
    assert "| other_labels | 2 | 0.235 ± 0.007 (-0.020*) | 0.237 |" in table
    assert "| same_task | 2 | 0.205 ± 0.007 (-0.050*) | 0.087 |" in table
    assert "`hashtag_map_popularity`: the label-popularity baseline" in table


def test_results_record_the_code_and_the_table_names_it(tmp_path, fake_mmemb):
    from mmemb.eval.ablate import code_counts, code_identity

    here = code_identity()
    assert here["mmemb_version"] and (here["git_commit"] is None or len(here["git_commit"]) == 40)
    assert code_identity(tmp_path) == {"mmemb_version": here["mmemb_version"], "git_commit": None, "git_dirty": None}
    out = tmp_path / "out"
    ablate(CONFIGS / "tiny.yaml", [], 2, out, mmemb=fake_mmemb, say=lambda line: None)
    assert json.loads((out / FULL / "seed0" / "result.json").read_text(encoding="utf-8"))["code"] == code_identity()
    old = {"name": FULL, "seed": 2, "metrics": {"hashtag_map": 0.1}}  # a result from before the record
    dirty = {**old, "code": {"mmemb_version": "0.1.0", "git_commit": "ab" * 20, "git_dirty": True}}
    assert code_counts([old, dirty, dirty]) == {"not recorded": 1, "commit abababab + changes": 2}
    table = (out / "ablation.md").read_text(encoding="utf-8")
    assert f"Code of the runs: 2 from commit {here['git_commit'][:8]}" in table if here["git_commit"] else \
        "Code of the runs: 2 from mmemb " in table


def test_runs_resume_and_unfinished_runs_restart(tmp_path, fake_mmemb):
    overlay, out, lines = _overlay(tmp_path), tmp_path / "out", []
    first = ablate(CONFIGS / "tiny.yaml", [overlay], 2, out, mmemb=fake_mmemb, say=lines.append)
    assert [ln.split(" ... ")[1].split(" in ")[0] for ln in lines[1:]] == ["done"] * 4
    assert lines[1].startswith("[1/4] full seed0 ... done in ") and "; 3 to go, about " in lines[1]
    assert lines[4].startswith("[4/4] lower_lr seed1 ... done in ") and "to go" not in lines[4]
    calls = (out / "calls.log").read_text().splitlines()
    assert calls == ["fit full 0", "fit full 1", "fit lower_lr 0", "fit lower_lr 1"]
    table = first["summary"]["cells"]
    assert table[FULL]["hashtag_map"].values == pytest.approx([0.5, 0.51])
    assert table["lower_lr"]["hashtag_map"].diff == pytest.approx(-0.2)
    # a run whose result is missing (interrupted) restarts from a clean folder; the others are read back
    (out / "lower_lr" / "seed1" / "result.json").unlink()
    (out / "lower_lr" / "seed1" / "stale.txt").write_text("left by the interrupted run")
    lines.clear()
    ablate(CONFIGS / "tiny.yaml", [overlay], 2, out, mmemb=fake_mmemb, say=lines.append)
    assert (out / "calls.log").read_text().splitlines()[4:] == ["fit lower_lr 1"]
    assert sum("not rerun" in ln for ln in lines) == 3 and not (out / "lower_lr" / "seed1" / "stale.txt").exists()
    assert lines[-1].startswith("[4/4] lower_lr seed1 ... done in ") and "to go" not in lines[-1]
    # --finished-only: the table of what is finished, nothing trained, the rest named
    (out / "lower_lr" / "seed1" / "result.json").unlink()
    lines.clear()
    partial = ablate(CONFIGS / "tiny.yaml", [overlay], 2, out, mmemb=fake_mmemb, say=lines.append, train=False)
    assert len((out / "calls.log").read_text().splitlines()) == 5 and lines[-1].endswith("not run (--finished-only)")
    assert partial["summary"]["not_run"] == ["lower_lr seed1"] and partial["summary"]["seeds"]["lower_lr"] == [0]
    table = (out / "ablation.md").read_text(encoding="utf-8")
    assert "| lower_lr | 1 | 0.300 (-0.205) |" in table  # one seed: no verdict
    assert table.strip().endswith("Not run yet (1): lower_lr seed1.")
    assert json.loads((out / "ablation.json").read_text(encoding="utf-8"))["not_run"] == ["lower_lr seed1"]


def test_a_finished_run_from_other_inputs_is_an_error_not_a_stale_row(tmp_path, fake_mmemb, monkeypatch):
    config, overlay, out = tmp_path / "base.yaml", _overlay(tmp_path), tmp_path / "out"
    config.write_text((CONFIGS / "tiny.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    ablate(config, [overlay], 1, out, mmemb=fake_mmemb, say=lambda line: None)
    recorded = json.loads((out / FULL / "seed0" / "result.json").read_text(encoding="utf-8"))["inputs"]
    assert [c["path"] for c in recorded["configs"]] == [str(config)] and recorded["fit_args"] == []
    # the same files under other paths (relative ones here; another checkout) are the same inputs: not rerun
    monkeypatch.chdir(tmp_path)
    lines = []
    ablate("base.yaml", ["lower_lr.yaml"], 1, "out", mmemb=fake_mmemb, say=lines.append)
    assert sum("finished before, not rerun" in ln for ln in lines) == 2
    # other fit arguments: refused before anything is trained, naming the run and the change
    with pytest.raises(StaleRunError, match=r"full/seed0/result\.json: finished from other inputs \(fit_args was "):
        ablate(config, [overlay], 1, out, ["--trainer.max_epochs=2"], mmemb=fake_mmemb, say=lambda line: None)
    overlay.write_text("model:\n  lr: 0.0001\n", encoding="utf-8")  # the overlay edited since its run
    with pytest.raises(StaleRunError, match=r"lower_lr/seed0.*config .*lower_lr\.yaml changed\); remove .*lower_lr"):
        ablate(config, [overlay], 1, out, mmemb=fake_mmemb, say=lambda line: None)
    assert (out / "calls.log").read_text().splitlines() == ["fit full 0", "fit lower_lr 0"]  # nothing rerun
    # a result written before inputs were recorded is read back, with a note
    legacy = out / FULL / "seed0" / "result.json"
    legacy.write_text(json.dumps({k: v for k, v in json.loads(legacy.read_text()).items() if k != "inputs"}))
    lines = []
    ablate(config, [], 1, out, mmemb=fake_mmemb, say=lines.append)
    assert lines[1].endswith("finished before, not rerun (its inputs were not recorded: not checked)")


def test_an_overlay_that_would_drop_dict_entries_of_the_config_is_refused(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("model:\n  overrides: {use_gcn: false, wide_bias: true}\n  loss_weights: {keyword: 0.5}\n",
                      encoding="utf-8")
    fine = tmp_path / "fine.yaml"
    fine.write_text("model:\n  overrides: {use_gcn: false, wide_bias: false, keyword_head: false}\n", encoding="utf-8")
    assert len(plan_runs(config, [fine], 1, tmp_path / "out")) == 2
    drops = tmp_path / "drops.yaml"
    drops.write_text("model:\n  overrides: {keyword_head: false}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"drops\.yaml: model\.overrides replaces the whole dict .* drop use_gcn, "
                                         r"wide_bias; repeat them"):
        plan_runs(config, [drops], 1, tmp_path / "out")
    nulls = tmp_path / "nulls.yaml"
    nulls.write_text("model:\n  loss_weights: null\n", encoding="utf-8")
    with pytest.raises(ValueError, match="model.loss_weights .* drop keyword"):
        plan_runs(config, [nulls], 1, tmp_path / "out")
    # the shipped overlays on the shipped configs they are run with
    for base in ("kuairec_text.yaml", "quickstart.yaml"):
        plan_runs(CONFIGS / base, sorted((CONFIGS / "ablations").glob("no_[!s]*.yaml")), 1, tmp_path / "o")
    plan_runs(CONFIGS / "quickstart.yaml", [CONFIGS / "ablations" / "no_simclr.yaml"], 1, tmp_path / "o")
    with pytest.raises(ValueError, match="no_simclr.yaml: model.loss_weights .* drop hashtag_wide_bce, text_views"):
        plan_runs(CONFIGS / "kuairec_text.yaml", [CONFIGS / "ablations" / "no_simclr.yaml"], 1, tmp_path / "o")


def test_readme_block_is_replaced_in_place_or_named_when_missing(tmp_path):
    from mmemb.eval.report import write_readme_block

    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- table:t -->\nold\n<!-- /table:t -->\nb\n", encoding="utf-8")
    write_readme_block(readme, "t", "| new |\n")
    assert readme.read_text(encoding="utf-8") == "a\n<!-- table:t -->\n| new |\n<!-- /table:t -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- table:u -->"):
        write_readme_block(readme, "u", "x")
    with pytest.raises(FileNotFoundError, match="no README"):
        write_readme_block(tmp_path / "missing.md", "t", "x")


def test_a_failed_run_names_its_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"full seed0: mmemb fit failed \(exit status 1\), see .*fit\.log"):
        ablate(CONFIGS / "tiny.yaml", [], 1, tmp_path / "out", mmemb=(sys.executable, "-c", "raise SystemExit(1)"),
               say=lambda line: None)


@pytest.mark.slow
def test_ablate_command_on_a_tiny_config(kuairec_text_only, tmp_path, capsys):
    """The real thing: `mmemb eval ablate` on tiny.yaml and an overlay, 2 seeds each, on text-only KuaiRec
    data; the table's numbers are the mean and std of the runs' own metrics, and a second invocation
    trains nothing."""
    overlay, out = _overlay(tmp_path), tmp_path / "ablate"
    fit_args = ["--fit-args", f"--data.manifest={kuairec_text_only}", "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2", "--data.batch_size=16", "--data.num_workers=0",
                "--data.labels.hashtag_min_freq=2", "--data.split.val_fraction=0.25"]
    args = ["ablate", "--config", str(CONFIGS / "tiny.yaml"), "--ablations", str(overlay), "--seeds", "2",
            "--out", str(out), "--no-probe", *fit_args]
    eval_main(args)
    printed = capsys.readouterr().out
    assert "[4/4] lower_lr seed1 ... done in " in printed
    doc = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert doc["configs"] == [FULL, "lower_lr"] and "hashtag_map" in doc["metrics"]
    for name in (FULL, "lower_lr"):
        per_run = [json.loads((out / name / f"seed{s}" / "result.json").read_text())["metrics"]["hashtag_map"]
                   for s in (0, 1)]
        cell = doc["table"][name]["hashtag_map"]
        assert cell["values"] == per_run
        assert cell["mean"] == pytest.approx(statistics.mean(per_run))
        assert cell["std"] == pytest.approx(statistics.stdev(per_run))
    full, ablated = doc["table"][FULL]["hashtag_map"], doc["table"]["lower_lr"]["hashtag_map"]
    assert ablated["diff"] == pytest.approx(ablated["mean"] - full["mean"])
    assert f"{full['mean']:.3f}" in (out / "ablation.md").read_text(encoding="utf-8")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/**/*") if p.is_file()}
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:abl -->\nNot yet run.\n<!-- /table:abl -->\nend\n", encoding="utf-8")
    cut = args.index("--fit-args")
    # resumable: every run is finished, nothing is trained or evaluated again; the table goes into the README
    eval_main(args[:cut] + ["--readme", str(readme), "--readme-block", "abl"] + args[cut:])
    assert capsys.readouterr().out.count("finished before, not rerun") == 4
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- table:abl -->\n| config | seeds |") and text.endswith("<!-- /table:abl -->\nend\n")
    assert (out / "ablation.md").read_text(encoding="utf-8").strip() in text and "Not yet run" not in text
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/**/*") if p.is_file()} == stamps
