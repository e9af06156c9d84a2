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
