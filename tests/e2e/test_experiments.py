"""The paper's experiments in quick mode on tiny shapes: reports, plots, and their numbers.

One module-scoped fixture runs every experiment once (about a dozen tiny training runs); the
tests read what they wrote.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jaxrec import experiments
from jaxrec.eval.names import BASELINES
from jaxrec.experiments import EXPERIMENTS, run_experiment
from jaxrec.experiments.embeddings import cosine_matrix, pca_2d
from jaxrec.experiments.overrides import portable_json
from jaxrec.experiments.quick import QUICK_STEPS, quick_overrides
from jaxrec.experiments.skips import arms as skip_arms
from jaxrec.experiments.stats import compile_free_seconds
from tests.tiny import repo_config, tiny_config

# Metrics each experiment's report shows per arm (the row labelled with the arm's label).
ROW_METRICS = {
    "negatives": ["pairwise_accuracy"],
    "skip_inputs": ["user_coverage", "pairwise_accuracy", "pairwise_accuracy_all"],
    "num_random_negatives": ["pairwise_accuracy", "hr@10"],
    "feedback_mix": ["pairwise_accuracy", "pairwise_accuracy_all"],
    "embeddings": ["pairwise_accuracy", "hr@10"],
    "scaling": ["pairwise_accuracy", "hr@10"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    return {
        name: run_experiment(name, tiny_config(), 2, root / name, quick=True)
        for name in EXPERIMENTS
    }


def _row(report: str, label: str) -> str:
    rows = [line for line in report.splitlines() if line.startswith(f"| {label} |")]
    assert len(rows) == 1, (label, rows)
    return rows[0]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_report_plots_and_numbers_match_the_runs(results, name):
    res = results[name]
    out = Path(res["report"]).parent
    report = (out / "report.md").read_text()
    assert res["seeds"] == 1  # quick mode: one seed
    assert "## What this shows" in report and "## How this was made" in report
    assert res["plots"]
    for plot in res["plots"]:
        plot = Path(plot)
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot.name})" in report  # embedded with a relative link
    assert (out / "base_config.json").exists()
    assert json.loads((out / "results.json").read_text())["name"] == name
    # Every report carries the baselines, fitted on the same runs' data.
    assert "## Against the baselines" in report
    first_arm = next(iter(res["arms"]))
    saved = json.loads((out / "runs" / first_arm / "seed0" / "baselines_test.json").read_text())
    for bname, metrics in saved.items():
        assert f"{metrics['pairwise_accuracy']:.4f}" in _row(report, f"baseline: {bname}")
    for arm, label in res["labels"].items():
        assert f"resolved config of <code>{arm}</code>" in report
        tests = [
            json.loads((out / "runs" / arm / f"seed{k}" / "eval_test.json").read_text())
            for k in range(res["seeds"])
        ]
        assert [r["test"] for r in res["arms"][arm]] == tests
        row = _row(report, label)
        for metric in ROW_METRICS[name]:
            assert f"{np.mean([t[metric] for t in tests]):.4f}" in row, (arm, metric, row)


def test_negatives_curves_and_time_to_accuracy(results):
    res = results["negatives"]
    out = Path(res["report"]).parent
    s = res["summary"]["arms"]
    assert set(s) == {"random_only", "explicit_only", "both", "contrast_1"}
    for arm in s:
        rows = [
            json.loads(line)
            for line in (out / "runs" / arm / "seed0" / "metrics.jsonl").read_text().splitlines()
        ]
        assert sum("valid/pairwise_accuracy" in r for r in rows) >= 8
    # The random-only arm reaches its own best by definition, at the step of its best.
    ref = s["random_only"]
    assert ref["steps_to_target"][0] is not None
    assert math.isclose(ref["steps_fraction"], 1.0)
    cfg = json.loads((out / "runs" / "explicit_only" / "seed0" / "config.json").read_text())
    assert cfg["loss"]["num_random_negatives"] == 0 and cfg["loss"]["explicit_negatives"]
    cfg = json.loads((out / "runs" / "contrast_1" / "seed0" / "config.json").read_text())
    assert cfg["loss"]["contrast_weight"] == 1.0 and cfg["model"]["item_bias"]
    assert cfg["data"]["contrast_window"] == cfg["data"]["window"]
    report = (out / "report.md").read_text()
    assert "](negatives_tradeoff.png)" in report and (out / "negatives_tradeoff.png").exists()
    # Responsiveness per arm: a table row per arm (italic label), the figures of the summary.
    assert "## Responsiveness to a thumbs-down" in report and "react least" in report
    resp = res["summary"]["responsiveness"]
    assert resp["negative_type"] == "thumbs_down" and set(resp["arms"]) == set(s)
    assert 0 < resp["sequences"] <= 1000
    for arm, label in res["labels"].items():
        row = _row(report, f"*{label}*")
        assert f"{resp['arms'][arm]['top1_left'][0]:.3f}" in row
        assert 0.0 <= resp["arms"][arm]["top1_left"][0] <= 1.0


def test_num_random_negatives_sweeps_hardest_of_n(results):
    res = results["num_random_negatives"]
    out = Path(res["report"]).parent
    assert set(res["labels"]) == {"n1", "n4", "n16", "explicit"}
    loss = json.loads((out / "runs" / "n16" / "seed0" / "config.json").read_text())["loss"]
    assert loss["hardest_of"] == 16 and loss["num_random_negatives"] == 1
    assert not loss["explicit_negatives"]
    assert res["summary"]["peak_n"] in (1, 4, 16)


def test_feedback_mix_scores_reproduce_the_test_metric(results):
    res = results["feedback_mix"]
    s = res["summary"]
    test = res["arms"]["keep_1"][0]["test"]
    assert s["overall_from_scores"][0] == pytest.approx(test["pairwise_accuracy"], abs=1e-6)
    assert set(s["negative_types"]) == {"skip", "thumbs_down"}
    for buckets in s["buckets"].values():
        assert sum(b["sequences"][0] for b in buckets) == test["sequences"]
    kept = s["fractions"]
    assert kept["keep_0.25"]["explicit_negatives"][0] < kept["keep_1"]["explicit_negatives"][0]


def test_embeddings_cosines(results):
    s = results["embeddings"]["summary"]
    out = Path(results["embeddings"]["report"]).parent
    items = json.loads((out / "runs" / "base" / "seed0" / "data_report.json").read_text())["items"]
    cos = np.array(s["cosine_mean"])
    assert cos.shape == (4, 4)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-6)
    np.testing.assert_allclose(cos, cos.T, atol=1e-6)
    assert sum(s["items_by_dominant_type"].values()) == items


def test_rerun_reuses_finished_runs_and_refuses_a_changed_config(results):
    out = Path(results["skip_inputs"]["report"]).parent
    again = run_experiment("skip_inputs", tiny_config(), 1, out, quick=True)
    assert all(r["reused"] for runs in again["arms"].values() for r in runs)
    for arm, runs in results["skip_inputs"]["arms"].items():
        assert [r["test"] for r in again["arms"][arm]] == [r["test"] for r in runs]
    changed = tiny_config()
    changed.optim.learning_rate = 5e-3
    with pytest.raises(ValueError, match="another config"):
        run_experiment("skip_inputs", changed, 1, out, quick=True)


def test_cmd_experiment_parses_like_the_cli(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(
        experiments, "run_experiment", lambda *a, **kw: seen.update(args=a, kw=kw) or {}
    )
    experiments.cmd_experiment(
        ["negatives", "--seeds", "2", "--out", str(tmp_path), "--quick"]
        + ["--config.train.steps=40", "--config.feedback.input=('thumbs_up','play')"]
    )
    name, cfg, seeds, out = seen["args"]
    assert (name, seeds, out, seen["kw"]["quick"]) == ("negatives", 2, tmp_path, True)
    assert cfg.train.steps == 40 and tuple(cfg.feedback.input) == ("thumbs_up", "play")
    assert seen["kw"]["command"].startswith("jaxrec experiment negatives --seeds 2")
    with pytest.raises(SystemExit, match="unknown experiment"):
        experiments.cmd_experiment(["nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        experiments.cmd_experiment(["--out", str(tmp_path)])


def test_quick_caps_keep_smaller_sizes():
    assert set(quick_overrides(tiny_config())) <= {
        "train.checkpoint_every",
        "train.keep_checkpoints",
    }
    over = quick_overrides(repo_config("quickstart"))
    assert over["train.steps"] == QUICK_STEPS and over["model.width"] == 16
    assert over["data.simulator.num_users"] == 200


def test_skip_types_fall_back_to_explicit_negatives_without_a_skip():
    cfg = repo_config("piki")
    without, with_ = skip_arms(cfg)[0]
    assert "dislike" not in without.overrides["feedback.input"]
    assert "dislike" in with_.overrides["feedback.input"]
    without, with_ = skip_arms(tiny_config())[0]
    assert without.overrides["feedback.input"] == ("thumbs_up", "play", "thumbs_down")


def test_compile_free_seconds_retimes_the_first_window():
    rows = [
        {"step": 10, "train_seconds": 9.0},  # 8 s of compilation + 10 steps at 0.1 s
        {"step": 20, "train_seconds": 10.0},
        {"step": 30, "train_seconds": 11.0},
    ]
    assert compile_free_seconds(rows) == pytest.approx({10: 1.0, 20: 2.0, 30: 3.0})


def test_pca_and_cosine_helpers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) * np.array([5.0, 1.0, 0.1])
    coords, share = pca_2d(x)
    assert coords.shape == (50, 2) and share[0] > 0.9 > share[1]
    cos = cosine_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    np.testing.assert_allclose(cos, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


def test_reports_write_data_paths_relative_to_the_data_dir():
    from jaxrec.data.paths import data_dir

    cfg = tiny_config()
    cfg.data.path = str(data_dir() / "spotify-sessions" / "mini-spotify-data.csv")
    text = portable_json(cfg)
    assert '"$JAXREC_DATA_DIR/spotify-sessions/mini-spotify-data.csv"' in text
    assert str(data_dir()) not in text


@pytest.mark.parametrize("name", ["experiments_simulator", "experiments_spotify"])
def test_every_full_negatives_arm_is_a_valid_config(name):
    # The full (not quick) arm list is only trained by docs/results/run.sh: check here that
    # each arm's overrides name real fields and pass validation.
    from jaxrec.config import validate_config
    from jaxrec.experiments.negatives import arms
    from jaxrec.experiments.overrides import apply_overrides

    base = repo_config(name)
    full = arms(base, quick=False)
    assert [a.name for a in full][-1] == "appeal"
    for arm in full:
        validate_config(apply_overrides(base, arm.overrides))
    appeal = apply_overrides(base, full[-1].overrides)
    assert appeal.model.appeal_repeats and appeal.train.select_metric == "ndcg@10"
    assert base.train.select_metric == "pairwise_accuracy" and base.train.early_stop_patience > 0


def test_scaling_puts_model_baseline_and_ceilings_side_by_side(results):
    res = results["scaling"]
    s = res["summary"]["arms"]
    assert [a["listeners"] for a in s.values()] == [100, 200]
    small, large = s.values()
    assert large["steps"][0] == 2 * small["steps"][0]  # the budget follows the data
    for a in s.values():
        assert 0.5 < a["oracle_pairwise_accuracy"][0] <= 1.0
        assert np.isfinite(a["history_ceiling_pairwise_accuracy"][0])
        assert a["baseline_pairs_name"][0] in BASELINES
        assert 0.5 <= a["baseline_pairs"][0] <= a["oracle_pairwise_accuracy"][0]
        assert a["pairs_interval"].endswith(("beats", "level", "loses to"))
    report = Path(res["report"]).read_text()
    assert "history ceiling" in report and "noise-free ceiling" in report
    assert (Path(res["report"]).parent / "scaling.png").exists()


def test_scaling_needs_the_simulator(tmp_path):
    cfg = tiny_config()
    cfg.data.source = "movielens"
    with pytest.raises(ValueError, match="simulator"):
        run_experiment("scaling", cfg, 1, tmp_path, quick=True)
