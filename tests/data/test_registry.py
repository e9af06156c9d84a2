"""The source registry (jaxrec/data/registry.py): every name a config or ``jaxrec data prepare``
can give is one :class:`Source`, and loading through it gives what ``load_events`` gives."""

from __future__ import annotations

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxrec.base_config import get_config
from jaxrec.data import events as events_lib
from jaxrec.data import feedback_types, load_events, simulator
from jaxrec.data.adapters import generic
from jaxrec.data.registry import SOURCES, Source, feedback_types_for, get_source, load_source
from tests.tiny import tiny_config

FIXED = {
    "simulator": ("thumbs_up", "play", "skip", "thumbs_down"),
    "mssd": ("complete", "partial", "skip"),
    "spotify-sessions": ("complete", "partial", "skip"),
    "piki": ("superlike", "like", "dislike"),
    "movielens": ("thumbs_up", "neutral", "thumbs_down"),
}
MAPPING = {
    "columns": {"user_id": "who", "item_id": "what", "timestamp": "t", "feedback": "like"},
    "feedback": {"values": {"yes": "thumbs_up", "no": "thumbs_down"}},
}
CSV = "who,what,t,like\nann,x,3,yes\nbob,y,1,no\nann,z,1,no\nann,x,5,maybe\nbob,x,2,yes\n"


def _same(a: events_lib.Events, b: events_lib.Events) -> None:
    assert a.feedback_types == b.feedback_types
    for field in ("user", "context", "item", "timestamp", "feedback", "item_vocab", "user_vocab"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_every_source_is_registered_with_a_reader_and_a_vocabulary():
    assert set(SOURCES) == {"simulator", "prepared", *FIXED, "csv", "parquet"}
    for name, source in SOURCES.items():
        assert isinstance(source, Source) and source.name == name
        assert callable(source.reader) and callable(source.vocabulary)
        assert source.description and "\n" not in source.description
        assert get_source(name) is source
    with pytest.raises(AttributeError):  # frozen
        SOURCES["csv"].positive = ("x",)


def test_fixed_vocabularies_hold_their_default_positives():
    for name, types in FIXED.items():
        source = SOURCES[name]
        assert source.feedback_types() == types == feedback_types_for(name)
        assert source.positive and set(source.positive) <= set(types), name
    # The generic sources and a prepared dataset have no vocabulary of their own to pick from.
    for name in ("csv", "parquet", "prepared"):
        assert SOURCES[name].positive == ()
    assert SOURCES["csv"].feedback_types(None, MAPPING) == generic.feedback_types("csv", MAPPING)


def test_unknown_source_is_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as e:
        get_source("nope")
    msg = str(e.value)
    assert msg.startswith("unknown data source 'nope'; known: [") and "\n" not in msg
    assert all(repr(name) in msg for name in SOURCES)
    with pytest.raises(ValueError, match=r"^config\.data\.source: unknown data source 'nope'"):
        load_events(ConfigDict({"source": "nope"}), 0)
    with pytest.raises(ValueError, match=r"^config\.data\.source: unknown data source 'nope'"):
        feedback_types(ConfigDict({"source": "nope", "path": None}))


def test_sources_that_need_a_path_say_so(tmp_path):
    for name in sorted(set(SOURCES) - {"simulator"}):
        with pytest.raises(ValueError, match=rf"config\.data\.path: source '{name}' needs"):
            SOURCES[name].load(None, MAPPING if name in ("csv", "parquet") else None)
    with pytest.raises(ValueError, match="needs the config's data.simulator"):
        SOURCES["simulator"].read()
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        SOURCES["prepared"].feedback_types(tmp_path)


def test_simulator_load_matches_load_events():
    cfg = tiny_config()
    ev, report = get_source("simulator").load(None, None, cfg.data.simulator, 3)
    ref, ref_report = load_events(cfg.data, 3)
    _same(ev, ref)
    assert report == ref_report == {"source": "simulator"}
    direct = events_lib.encode(
        simulator.simulate(cfg.data.simulator, 3), simulator.FEEDBACK_TYPES, "simulator"
    )
    _same(ev, direct)
    assert feedback_types(cfg.data) == simulator.FEEDBACK_TYPES


def test_csv_load_matches_load_events(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    data = get_config().data
    data.source, data.path, data.options = "csv", str(path), MAPPING
    ev, report = get_source("csv").load(path, MAPPING)
    ref, ref_report = load_events(data, 0)
    _same(ev, ref)
    assert report == ref_report
    assert report["dropped"]["unknown feedback value"]["count"] == 1
    table, rep = load_source("csv", path, MAPPING)
    assert rep.to_dict() == report
    _same(ev, events_lib.encode(table, feedback_types_for("csv", MAPPING), str(path)))
    # A mapping onto radio names gets the whole radio vocabulary, whichever door asks.
    assert ev.feedback_types == feedback_types(data) == simulator.FEEDBACK_TYPES
    assert ev.num_events == 4


def test_csv_without_a_mapping_fails_before_reading(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(CSV)
    with pytest.raises(events_lib.DataError, match="needs config.data.options columns"):
        feedback_types(ConfigDict({"source": "csv", "path": str(path), "options": {}}))
