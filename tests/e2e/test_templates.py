"""The csv templates (configs/ratings.py, configs/events.py) read the shipped files into the
same events as the dedicated adapters' configs (configs/movielens.py, spotify_sessions.py)."""

from pathlib import Path

import numpy as np
import pytest

from jaxrec.cli_args import load_config
from jaxrec.config import validate_config
from jaxrec.data import load_events

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

PAIRS = [
    ("ratings.py", "movielens.py", "movielens-100k/ml-100k.inter"),
    ("events.py", "spotify_sessions.py", "spotify-sessions/mini-spotify-data.csv"),
]


@pytest.mark.parametrize("template", ["ratings.py", "events.py"])
def test_template_loads_and_validates(template):
    cfg = load_config(CONFIGS / template)
    assert cfg.data.source == "csv"
    if Path(cfg.data.path).exists():  # the csv mapping check reads the file's header
        validate_config(cfg)


@pytest.mark.parametrize("template,dedicated,rel", PAIRS)
def test_template_reads_the_adapters_events(shared_data, template, dedicated, rel):
    shared_data(rel)
    cfg, ref = load_config(CONFIGS / template), load_config(CONFIGS / dedicated)
    validate_config(cfg)
    assert Path(cfg.data.path) == Path(ref.data.path)
    ev, report = load_events(cfg.data, cfg.seed)
    ev_ref, _ = load_events(ref.data, ref.seed)
    assert report["total_dropped"] == 0
    assert ev.num_events == ev_ref.num_events
    assert ev.feedback_types == ev_ref.feedback_types
    n = len(ev.feedback_types)
    np.testing.assert_array_equal(
        np.bincount(ev.feedback, minlength=n), np.bincount(ev_ref.feedback, minlength=n)
    )
    # Same sequences and ids too, so a run of either config trains on the same data.
    for field in ("user", "context", "item", "timestamp", "feedback", "item_vocab"):
        np.testing.assert_array_equal(getattr(ev, field), getattr(ev_ref, field), err_msg=field)
    assert tuple(cfg.feedback.positive) == tuple(ref.feedback.positive)
    assert tuple(cfg.feedback.negative) == tuple(ref.feedback.negative)


def test_the_quickstart_config_reads_a_like_hate_log_as_it_is(tmp_path, monkeypatch):
    """bench/likehate_log.py's feed (like / view / hate, no skips) under the quickstart config
    with only a column mapping: the radio vocabulary, its roles and counterfactual type hold."""
    import subprocess
    import sys

    out = tmp_path / "likehate.csv"
    root = CONFIGS.parent
    subprocess.run(
        [sys.executable, "-m", "bench.likehate_log", "--users", "40", "--out", str(out)],
        check=True,
        cwd=root,
        capture_output=True,
    )
    monkeypatch.setenv("JAXREC_LIKEHATE_CSV", str(out))
    cfg = load_config(root / "bench" / "likehate_quickstart.py")
    validate_config(cfg)
    events, report = load_events(cfg.data, cfg.seed)
    assert events.feedback_types == ("thumbs_up", "play", "skip", "thumbs_down")
    counts = np.bincount(events.feedback, minlength=4)
    assert counts[2] == 0 and counts[[0, 1, 3]].min() > 0
    assert report["total_dropped"] == 0
