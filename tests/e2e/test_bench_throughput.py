"""bench.train_throughput end to end on MovieLens-100k: one tiny config in its own subprocess."""

import re

from bench.train_throughput import main


def test_small_config_prints_throughput(shared_data, capsys):
    shared_data("movielens-100k/ml-100k.inter")
    report = main(["--small", "--steps", "2", "--warmup", "1", "--configs", "bce1"])
    out = capsys.readouterr().out
    line = next(r for r in out.splitlines() if r.startswith("bce1:"))
    printed = {k: float(v) for k, v in re.findall(r"(targets/s|positions/s) ([0-9.]+)", line)}
    assert printed["targets/s"] > 0 and printed["positions/s"] > 0, line
    r = report["results"]["bce1"]
    assert r["steps"] == 2 and r["max_len"] == 16
    assert 0 < r["targets_per_s"] <= r["positions_per_s"] <= r["padded_positions_per_s"]
    assert r["peak_rss_mib"] > 0
    assert report["peer"] is None and report["ratios"] == {}


def test_the_peer_configs_train_the_loss_they_mirror():
    """gSASRec's configs train the random-negatives term alone, RecBole's the full softmax,
    whatever configs/movielens.py inherits."""
    from bench.train_throughput import build_config

    for name in ("bce1", "gbce256"):
        loss = build_config(name).loss
        assert (loss.full_softmax_weight, loss.sampled_weight) == (0.0, 1.0), name
    assert build_config("recbole").loss.full_softmax_weight == 1.0


def test_cli_rate_weighs_the_windows_without_a_compile():
    from bench.cli_rate import cli_overrides, steady_rate

    rows = [
        {"step": 0, "valid/ndcg@10": 0.1},
        {"step": 10, "targets_per_s": 50.0, "train_seconds": 9.0, "compile_seconds": 8.0},
        {"step": 20, "targets_per_s": 100.0, "train_seconds": 10.0},
        {"step": 30, "targets_per_s": 200.0, "train_seconds": 13.0},
    ]
    rate, windows = steady_rate(rows)
    assert windows == 2 and rate == (100.0 * 1 + 200.0 * 3) / 4
    over = cli_overrides("bce1", 300, 100, small=False)
    assert over["train.steps"] == 300 and over["train.eval_every"] == 300
    assert over["loss.type"] == "bce" and over["eval.baselines"] == ()
