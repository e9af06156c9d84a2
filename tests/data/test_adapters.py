"""Adapters, reports and stats: exact counts on the shared real data, bad-input behaviour on
small hand-written files, and property tests that throw random malformed files at every adapter.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec.data import events as ev
from jaxrec.data.events import DataError
from jaxrec.data.registry import SOURCES, feedback_types_for, load_source
from jaxrec.data.report import Report
from jaxrec.data.stats import compute_stats, format_stats, users_without

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- shared data


def _counts(table: pa.Table) -> dict[str, int]:
    fb = table.column("feedback").value_counts().to_pylist()
    return {
        "events": table.num_rows,
        "users": len(pc.unique(table.column("user_id"))),
        "contexts": len(pc.unique(table.column("context_id"))),
        "items": len(pc.unique(table.column("item_id"))),
        **{f"feedback.{d['values']}": d["counts"] for d in fb},
    }


def _clean(report: Report) -> None:
    assert report.total_dropped == 0, report.format()
    assert report.total_flagged == 0, report.format()
    assert report.rows_out == report.rows_in


def test_mssd_dummy_classifier_results(shared_data):
    path = shared_data("mssd-original-schema/dummy_classifier_results.csv")
    table, report = load_source("mssd", path)
    _clean(report)
    assert _counts(table) == {
        "events": 1180,
        "users": 169,
        "contexts": 169,
        "items": 917,
        "feedback.complete": 398,
        "feedback.skip": 579,
        "feedback.partial": 203,
    }
    # partial = the rest: (F,F,T,F) 186 + (F,F,F,F) 17 in SOURCE.txt's skip combos.
    assert table.column("timestamp").type == pa.int64()
    assert pc.min(table.column("timestamp")).as_py() == 2  # positions 2.. (position 1 absent)
    events = ev.encode(table, feedback_types_for("mssd"), str(path))
    assert events.num_contexts == 169


def test_mssd_very_small(shared_data):
    path = shared_data("mssd-original-schema/very_small.csv")
    table, report = load_source("mssd", path)
    _clean(report)
    c = _counts(table)
    assert (c["events"], c["users"], c["items"]) == (201, 11, 175)
    # SOURCE.txt: skip_2 True 82, not_skipped True 90 (the two never overlap).
    assert (c["feedback.skip"], c["feedback.complete"], c["feedback.partial"]) == (82, 90, 29)


def test_spotify_sessions(shared_data):
    path = shared_data("spotify-sessions/mini-spotify-data.csv")
    table, report = load_source("spotify-sessions", path)
    _clean(report)  # includes: previous_song consistent on every row
    assert _counts(table) == {
        "events": 193_693,
        "users": 10_000,
        "contexts": 10_000,
        "items": 5_792,
        "feedback.skip": 104_065,
        "feedback.partial": 27_919,
        "feedback.complete": 61_709,
    }
    events = ev.encode(table, feedback_types_for("spotify-sessions"), str(path))
    lengths = np.bincount(events.context)
    assert lengths.min() == 15 and lengths.max() == 20
    # Positions 0..n-1 per user, in file order.
    assert table.column("timestamp").slice(0, 3).to_pylist() == [0, 1, 2]


def test_piki_histories(shared_data):
    path = shared_data("piki-sample/piki_eval.histories")
    table, report = load_source("piki", path)
    _clean(report)
    assert _counts(table) == {
        "events": 894,
        "users": 50,
        "contexts": 50,
        "items": 706,
        "feedback.like": 445,
        "feedback.dislike": 409,
        "feedback.superlike": 40,
    }
    events = ev.encode(table, feedback_types_for("piki"), str(path))
    lengths = np.bincount(events.context)
    assert lengths.min() == 17 and lengths.max() == 19


def test_piki_toy_histories(shared_data):
    path = shared_data("piki-sample/toypiki_eval.histories")
    table, report = load_source("piki", path)
    _clean(report)
    c = _counts(table)
    assert (c["events"], c["users"], c["items"]) == (81, 14, 10)
    assert (c["feedback.like"], c["feedback.dislike"], c["feedback.superlike"]) == (27, 53, 1)


def test_piki_toy_csv(shared_data):
    path = shared_data("piki-sample/toypiki_dataset.csv")
    table, report = load_source("piki", path)
    _clean(report)
    c = _counts(table)
    # SOURCE.txt says "20 events" but the file holds 26 data rows; we read what is there.
    assert (c["events"], c["users"], c["items"]) == (26, 8, 16)
    assert (c["feedback.like"], c["feedback.dislike"], c["feedback.superlike"]) == (10, 15, 1)
    # 2019-08-23 14:40:33 UTC
    assert table.column("timestamp")[0].as_py() == 1566571233


def test_movielens_100k(shared_data):
    path = shared_data("movielens-100k/ml-100k.inter")
    table, report = load_source("movielens", path)
    _clean(report)
    assert _counts(table) == {
        "events": 100_000,
        "users": 943,
        "contexts": 943,
        "items": 1_682,
        "feedback.thumbs_up": 55_375,
        "feedback.neutral": 27_145,
        "feedback.thumbs_down": 17_480,
    }
    events = ev.encode(table, feedback_types_for("movielens"), str(path))
    stats = compute_stats(events)
    assert stats["events"] == 100_000 and stats["items"] == 1_682
    assert users_without(events, ["thumbs_up"]) == 1


# ----------------------------------------------------------------------------- hand-written


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MSSD_HEADER = (
    "session_id,session_position,session_length,track_id_clean,"
    "skip_1,skip_2,skip_3,not_skipped,extra"
)


def test_mssd_mapping_and_bool_spellings(tmp_path):
    path = _write(
        tmp_path,
        "log.csv",
        MSSD_HEADER + "\n"
        "s1,1,3,t1,false,false,false,true,x\n"
        "s1,2,3,t2,True,True,True,False,x\n"
        "s1,3,3,t3,FALSE,FALSE,TRUE,FALSE,x\n",
    )
    table, report = load_source("mssd", path)
    assert table.column("feedback").to_pylist() == ["complete", "skip", "partial"]
    assert table.column("user_id").to_pylist() == ["s1"] * 3
    assert table.column("context_id").to_pylist() == ["s1"] * 3
    assert table.column("timestamp").to_pylist() == [1, 2, 3]
    _clean(report)


def test_mssd_bad_rows_and_flags(tmp_path):
    path = _write(
        tmp_path,
        "log.csv",
        MSSD_HEADER + "\n"
        "s1,2,3,t1,false,false,false,true,x\n"
        "s1,1,3,t2,false,maybe,false,false,x\n"  # line 3: bad skip_2
        "s1,1,3,t3,true,false,true,false,x\n"  # line 4: skip_1 without skip_2 (flag)
        "s1,5,3,t4,false,false,false,true,x\n"  # line 5: position > length (flag)
        "s1,5,3,t4,false,false,false,true,x\n"  # line 6: duplicate of line 5
        "s1,,3,t5,false,false,false,true,x\n",  # line 7: missing position
    )
    table, report = load_source("mssd", path)
    assert table.num_rows == 3
    assert report.dropped == {
        "bad skip_2 (not true/false)": 1,
        "duplicate event": 1,
        "missing session_position": 1,
    }
    assert report.examples["duplicate event"] == [{"line": 6, "value": "repeats line 5"}]
    assert report.examples["bad skip_2 (not true/false)"][0] == {
        "line": 3,
        "field": "skip_2",
        "value": "maybe",
    }
    assert any("not nested" in r for r in report.flagged)
    assert any("session_length" in r for r in report.flagged)
    assert any("earlier than the previous" in r for r in report.flagged)
    with pytest.raises(DataError, match=r"log\.csv: line 3, field 'skip_2'"):
        load_source("mssd", path, {"on_bad_row": "error"})


def test_missing_column_is_an_error(tmp_path):
    path = _write(tmp_path, "log.csv", "session_id,session_position,track_id_clean\ns,1,t\n")
    with pytest.raises(DataError, match=r"log\.csv: line 1 \(header\): missing column.*skip_2"):
        load_source("mssd", path)


def test_spotify_sessions_bad_input(tmp_path):
    path = _write(
        tmp_path,
        "s.csv",
        '"user_id","song_id","previous_song","skipped"\n'
        "1,10,-1,4\n"
        "1,11,10,0\n"
        "\n"  # line 4: blank
        "1,12,99,7\n"  # line 5: unknown skipped; previous_song wrong (flag)
        "2,5,-1,x\n"  # line 6: bad skipped
        "2,6\n"  # line 7: malformed
        "3,99999999999,-1,1\n"  # line 8: song id overflows int32
        ",4,-1,2\n"  # line 9: missing user
        "1,13,12,3\n",
    )
    table, report = load_source("spotify-sessions", path)
    assert table.to_pydict() == {
        "user_id": [1, 1, 1],
        "context_id": [1, 1, 1],
        "item_id": [10, 11, 13],
        "timestamp": [0, 1, 3],  # the dropped row keeps its place
        "feedback": ["complete", "skip", "partial"],
    }
    assert report.rows_in == 9 and report.total_dropped == 6
    assert report.dropped["song_id outside the int32 range"] == 1
    assert report.dropped["malformed row (expected 4 fields)"] == 1
    assert report.examples["malformed row (expected 4 fields)"] == [{"line": 7, "value": "2,6"}]
    (flag,) = report.flagged
    assert "previous_song" in flag and report.examples[flag][0]["line"] == 5
    # error mode names the earliest bad line, whatever check caught it
    with pytest.raises(DataError, match=r"s\.csv: line 4: empty row"):
        load_source("spotify-sessions", path, {"on_bad_row": "error"})


def test_piki_histories_bad_input(tmp_path):
    path = _write(
        tmp_path,
        "h.histories",
        "u1\ts1\t1\ts2\t-1\ts3\n"  # dangling song
        "u2\n"  # no events
        "x3\ts1\t1\n"  # bad user token
        "u4\ts5\t2\ts6\t0\tt7\t1\n"  # unknown rating 0, bad song token
        "   \n",
    )
    table, report = load_source("piki", path)
    assert table.to_pydict() == {
        "user_id": [1, 1, 4],
        "context_id": [1, 1, 4],
        "item_id": [1, 2, 5],
        "timestamp": [0, 1, 0],
        "feedback": ["like", "dislike", "superlike"],
    }
    # records: 3 pairs + 1 empty user + 1 pair + 3 pairs + 1 blank line
    assert report.rows_in == 9 and report.rows_out == 3 and report.total_dropped == 6
    assert report.examples["user with no events (line holds only a user id)"][0]["line"] == 2
    with pytest.raises(DataError, match=r"h\.histories: line 1, field 'rating'"):
        load_source("piki", path, {"on_bad_row": "error"})


def test_piki_csv_context_mapping(tmp_path):
    path = _write(
        tmp_path,
        "p.csv",
        "timestamp,user_id,song_id,liked,personalized,Spotify_popularity,session\n"
        "2020-01-01 00:00:01,7,100,2,0,5,a\n"
        "2020-01-01 00:00:00,7,101,0,0,5,b\n"
        "1577836800,7,102,1,0,5,b\n",
    )
    table, report = load_source("piki", path, {"columns": {"context_id": "session"}})
    assert table.column("context_id").to_pylist() == ["a", "b"]
    assert table.column("feedback").to_pylist() == ["superlike", "dislike"]
    # a date column: a bare number is a bad row, not silently another kind of time
    assert report.dropped == {"bad timestamp (not a date in the expected format)": 1}


MOVIELENS_FORMATS = {
    "u.data": "1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t1\t99\n",
    "r.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t1\t99\n",
    "ratings.dat": "1::10::5::100\n1::11::3::101\n2::10::1::99\n",
    "ratings.csv": "userId,movieId,rating,timestamp\n1,10,5.0,100\n1,11,3.5,101\n2,10,1.0,99\n",
}


@pytest.mark.parametrize("name", sorted(MOVIELENS_FORMATS))
def test_movielens_formats(tmp_path, name):
    path = _write(tmp_path, name, MOVIELENS_FORMATS[name])
    table, report = load_source("movielens", path)
    _clean(report)
    assert table.to_pydict() == {
        "user_id": [1, 1, 2],
        "context_id": [1, 1, 2],
        "item_id": [10, 11, 10],
        "timestamp": [100, 101, 99],
        "feedback": ["thumbs_up", "neutral", "thumbs_down"],
    }
    table, _ = load_source("movielens", path, {"positive_min": 3, "negative_max": 1})
    assert table.column("feedback").to_pylist() == ["thumbs_up", "thumbs_up", "thumbs_down"]


def test_movielens_bad_input(tmp_path):
    path = _write(
        tmp_path,
        "m.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t2\t5\t100\n"
        "1\t2\t5\t100\n"  # duplicate
        "1\t3\tabc\t101\n"  # bad rating
        "2\t3\t2.5\t\n"  # missing timestamp
        "2\t4\t1\t9.5e2\n"
        "2\t5\tnan\t1\n",  # non-finite rating
    )
    table, report = load_source("movielens", path)
    assert table.column("timestamp").to_pylist() == [100, 950]
    assert report.dropped == {
        "duplicate event": 1,
        "bad rating (not a finite number)": 2,
        "missing timestamp": 1,
    }
    with pytest.raises(ValueError, match="negative_max"):
        load_source("movielens", path, {"positive_min": 2, "negative_max": 2})
    with pytest.raises(ValueError, match="unknown option"):
        load_source("movielens", path, {"postive_min": 2})


def test_generic_csv_values_and_positions(tmp_path):
    path = _write(
        tmp_path,
        "g.tsv",
        "who\twhat\tlike\n"
        "ann\tx\tyes\n"
        "bob\ty\tno\n"
        "ann\ty\tmeh\n"  # unknown feedback value
        "ann\tz\tno\n",
    )
    options = {
        "columns": {"user_id": "who", "item_id": "what", "feedback": "like"},
        "feedback": {"values": {"yes": "pos", "no": "neg"}},
        "delimiter": "\t",
    }
    table, report = load_source("csv", path, options)
    assert table.to_pydict() == {
        "user_id": ["ann", "bob", "ann"],
        "context_id": ["ann", "bob", "ann"],
        "item_id": ["x", "y", "z"],
        "timestamp": [0, 0, 2],
        "feedback": ["pos", "neg", "neg"],
    }
    assert report.dropped == {"unknown feedback value": 1}
    assert feedback_types_for("csv", options) == ("pos", "neg")
    events = ev.encode(table, feedback_types_for("csv", options))
    assert events.num_events == 3


def test_generic_csv_thresholds_no_header_and_config_file(tmp_path):
    path = _write(tmp_path, "g.csv", "1,5,4.5,10,s1\n1,6,1,11,s1\n2,5,3,12,s9\n2,7,-3,13,s9\n")
    config = tmp_path / "source.json"
    config.write_text(
        json.dumps(
            {
                "header": False,
                "columns": {
                    "user_id": 0,
                    "item_id": 1,
                    "feedback": 2,
                    "timestamp": 3,
                    "context_id": 4,
                },
                "feedback": {"thresholds": [[4, "up"], [2.5, "meh"], [0, "down"]]},
                "feedback_types": ["down", "meh", "up"],
                "id_type": {"user_id": "int", "item_id": "int"},
            }
        )
    )
    options = json.loads(config.read_text())
    table, report = load_source("csv", path, options)
    # the same options as an ml_collections ConfigDict (config.data.options) give the same table
    from ml_collections import ConfigDict

    assert load_source("csv", path, ConfigDict(options))[0].equals(table)
    assert feedback_types_for("csv", ConfigDict(options)) == ("down", "meh", "up")
    assert table.column("feedback").to_pylist() == ["up", "down", "meh"]
    assert table.column("user_id").type == pa.int64()
    assert table.column("context_id").to_pylist() == ["s1", "s1", "s9"]
    assert report.dropped == {"feedback below every threshold": 1}
    assert feedback_types_for("csv", options) == ("down", "meh", "up")


def test_a_mapping_onto_radio_types_gets_the_whole_radio_vocabulary():
    # A like/hate log mapped onto the built-in names runs under the built-in configs, whose
    # roles also name skip; names outside that vocabulary keep the mapping's own order.
    values = {"like": "thumbs_up", "view": "play", "hate": "thumbs_down"}
    options = {"columns": {"user_id": "u", "item_id": "i", "feedback": "f"}}
    radio = feedback_types_for("csv", {**options, "feedback": {"values": values}})
    assert radio == ("thumbs_up", "play", "skip", "thumbs_down")
    own = feedback_types_for("csv", {**options, "feedback": {"values": {"x": "love", "y": "play"}}})
    assert own == ("love", "play")
    fixed = {**options, "feedback": {"values": values}, "feedback_types": list(values.values())}
    assert feedback_types_for("csv", fixed) == ("thumbs_up", "play", "thumbs_down")


def test_generic_options_are_checked(tmp_path):
    path = _write(tmp_path, "g.csv", "u,i,f\n1,2,3\n")
    with pytest.raises(ValueError, match="columns"):
        load_source("csv", path, {"feedback": {"values": {"3": "x"}}})
    with pytest.raises(ValueError, match="feedback"):
        load_source("csv", path, {"columns": {"user_id": "u", "item_id": "i", "feedback": "f"}})
    with pytest.raises(DataError, match=r"g\.csv: line 1 \(header\): missing column.*'nope'"):
        load_source(
            "csv",
            path,
            {
                "columns": {"user_id": "u", "item_id": "nope", "feedback": "f"},
                "feedback": {"values": {"3": "x"}},
            },
        )
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("nope", path)
    with pytest.raises(DataError, match="no such file"):
        load_source("mssd", Path(path).with_name("absent.csv"))


def test_generic_parquet(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(
        pa.table(
            {
                "u": pa.array([1, 1, None, 2, 2], pa.int64()),
                "i": pa.array(["a", "b", "c", "a", "a"]),
                "t": pa.array([5, 6, 7, 8, 8], pa.int64()),
                "f": pa.array([True, False, True, True, True]),
            }
        ),
        str(path),
    )
    options = {
        "columns": {"user_id": "u", "item_id": "i", "timestamp": "t", "feedback": "f"},
        "feedback": {"values": {True: "click", False: "skip"}},
    }
    table, report = load_source("parquet", path, options)
    assert table.column("item_id").to_pylist() == ["a", "b", "a"]
    assert report.unit == "row"
    assert report.dropped == {"missing user_id": 1, "duplicate event": 1}
    assert report.examples["missing user_id"][0]["row"] == 2
    assert report.examples["duplicate event"][0] == {"row": 4, "value": "repeats row 3"}
    with pytest.raises(DataError, match=r"e\.parquet: row 2, field 'user_id'"):
        load_source("parquet", path, {**options, "on_bad_row": "error"})


def test_quoted_value_spanning_lines(tmp_path):
    path = _write(tmp_path, "q.csv", 'u,i,f\n1,"2,3\n4,5,6\n7,8,9\n')
    options = {
        "columns": {"user_id": "u", "item_id": "i", "feedback": "f"},
        "feedback": {"values": {"3": "a", "6": "b", "9": "c"}},
        "id_type": "int",
    }
    table, report = load_source("csv", path, options)
    # every line is still one row: the damaged line is dropped and counted, not swallowed
    assert report.rows_in == 3 and table.num_rows == 2 and report.notes
    assert report.dropped == {"bad item_id (not an integer)": 1}


def test_report_dict_and_text(tmp_path):
    path = _write(tmp_path, "s.csv", "user_id,song_id,previous_song,skipped\n1,2,-1,9\n1,3,2,4\n")
    _, report = load_source("spotify-sessions", path)
    d = report.to_dict()
    json.dumps(d)
    assert d["rows_in"] == 2 and d["rows_out"] == 1 and d["total_dropped"] == 1
    assert d["dropped"]["unknown skipped value"]["examples"] == [
        {"line": 2, "field": "skipped", "value": "9"}
    ]
    text = report.format()
    assert "unknown skipped value: 1" in text and "line 2, field 'skipped': '9'" in text


def test_registry():
    adapters = {"mssd", "spotify-sessions", "piki", "movielens", "csv", "parquet"}
    assert set(SOURCES) == {"simulator", "prepared", *adapters}
    assert feedback_types_for("mssd") == ("complete", "partial", "skip")
    assert feedback_types_for("movielens") == ("thumbs_up", "neutral", "thumbs_down")
    assert feedback_types_for("piki") == ("superlike", "like", "dislike")


# ----------------------------------------------------------------------------- stats


def _events(users, items, feedback, types=("pos", "neg")) -> ev.Events:
    n = len(users)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "context_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "timestamp": pa.array(range(n), pa.int64()),
            "feedback": pa.array(feedback),
        }
    )
    return ev.encode(table, types)


def test_stats():
    events = _events(
        [1] * 5 + [2] * 2 + [3],
        [1, 2, 3, 4, 5, 1, 2, 9],
        ["pos", "neg", "neg", "pos", "pos", "neg", "neg", "pos"],
    )
    stats = compute_stats(events)
    assert stats["events"] == 8 and stats["users"] == 3 and stats["contexts"] == 3
    assert stats["items"] == 6
    assert stats["feedback.pos"] == 4 and stats["feedback.neg"] == 4
    assert stats["sequence_length.min"] == 1 and stats["sequence_length.max"] == 5
    assert stats["sequence_length.p50"] == 2 and stats["sequence_length.p90"] == 5
    assert stats["sequence_length.mean"] == pytest.approx(8 / 3, abs=1e-4)
    assert stats["sequence_length_histogram"] == [[1, 1, 1], [2, 3, 1], [4, 7, 1]]
    text = format_stats(stats)
    assert "events: 8\n" in text and "sequence_length_histogram.4-7: 1" in text
    assert "sequence_length.mean: 2.6667" in text
    for line in text.splitlines():
        key, value = line.split(": ")
        assert "," not in value
    assert users_without(events, ["pos"]) == 1
    assert users_without(events, ["pos", "neg"]) == 0
    with pytest.raises(ValueError, match="unknown feedback"):
        users_without(events, ["nope"])


# ----------------------------------------------------------------------------- properties

JUNK = ["", " ", "abc", "-1", "99999999999", "1.5", "nan", "True", '"q"', '"', 'a"b', "x,y", " 2 "]


def _cells(valid: list[str]):
    return st.one_of(st.sampled_from(valid), st.sampled_from(JUNK))


def _row(columns: list[list[str]], sep: str):
    cells = st.tuples(*[_cells(v) for v in columns]).map(sep.join)
    wrong = st.lists(_cells(["1", "a"]), min_size=0, max_size=len(columns) + 2).map(sep.join)
    return st.one_of(cells, cells, cells, wrong, st.just(""))


def _text_file(header: str | None, columns: list[list[str]], sep: str = ","):
    body = st.lists(_row(columns, sep), min_size=0, max_size=25)
    end = st.sampled_from(["\n", "", "\n\n"])
    return st.tuples(body, end).map(
        lambda be: (
            ((header + "\n") if header is not None else "") + "\n".join(be[0]) + be[1]
            if be[0]
            else (header + "\n" if header is not None else "")
        )
    )


def _physical_records(text: str, header: bool) -> int:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    return len(lines) - (1 if header else 0)


def _histories_records(text: str) -> int:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    return sum(1 if not line.strip() else max(1, len(line.split()) // 2) for line in lines)


IDS = ["1", "2", "3", "17"]
TS = ["1", "2", "5", "100"]
BOOL = ["true", "false", "True", "False"]
MSSD_COLS = [IDS, TS, ["20"], ["t1", "t2", "t3"], BOOL, BOOL, BOOL, BOOL]
GENERIC = {
    "columns": {"user_id": "u", "item_id": "i", "timestamp": "t", "feedback": "f"},
    "feedback": {"values": {"1": "pos", "0": "neg"}},
}
TEXT_CASES = {
    # name: (file name, header, columns, separator, options)
    "mssd": (
        "log.csv",
        "session_id,session_position,session_length,track_id_clean,skip_1,skip_2,skip_3,not_skipped",
        MSSD_COLS,
        ",",
        None,
    ),
    "spotify-sessions": (
        "s.csv",
        "user_id,song_id,previous_song,skipped",
        [IDS, IDS, IDS + ["-1"], ["0", "1", "2", "3", "4"]],
        ",",
        None,
    ),
    "piki": (
        "p.csv",
        "timestamp,user_id,song_id,liked,personalized,Spotify_popularity",
        [["2020-01-01 00:00:01", "2019-08-23 14:40:33"], IDS, IDS, ["0", "1", "2"], ["0"], ["5"]],
        ",",
        None,
    ),
    "movielens": ("u.data", None, [IDS, IDS, ["1", "3", "4.5", "5"], TS], "\t", None),
    "csv": ("g.csv", "u,i,t,f", [IDS, ["a", "b"], TS, ["0", "1"]], ",", GENERIC),
}

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(name: str, path: Path, options, expected_rows: int) -> None:
    for mode in ("drop", "error"):
        opts = {**(options or {}), "on_bad_row": mode}
        try:
            table, report = load_source(name, path, opts)
        except DataError as e:
            assert str(path) in str(e)
            continue
        assert table.num_rows + report.total_dropped == expected_rows == report.rows_in
        assert report.rows_out == table.num_rows
        ev.check_table(table, str(path))
        types = feedback_types_for(name, options)
        assert set(table.column("feedback").to_pylist()) <= set(types)
        if mode == "error":
            assert report.total_dropped == 0
        for reason, examples in report.examples.items():
            assert 0 < len(examples) <= 5, reason
            for ex in examples:
                assert ex.get("line", 1) >= 1 and ex.get("row", 0) >= 0


@pytest.mark.parametrize("name", sorted(TEXT_CASES))
def test_random_malformed_text_files(name):
    fname, header, columns, sep, options = TEXT_CASES[name]

    @PROPERTY
    @given(text=_text_file(header, columns, sep))
    def run(text):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / fname
            path.write_text(text)
            expected = _physical_records(text, header is not None) if text else 0
            if not text:  # an empty file has no header: an error naming the file
                with pytest.raises(DataError, match=str(path)):
                    load_source(name, path, options)
                return
            _check(name, path, options, expected)

    run()


_TOKEN = st.one_of(
    st.sampled_from(["u1", "u2", "u17", "s1", "s2", "s9", "1", "-1", "2"]),
    st.sampled_from(["0", "x", "u", "s", "sx", "u99999999999", "3"]),
)


@PROPERTY
@given(
    lines=st.lists(
        st.one_of(
            st.lists(_TOKEN, min_size=0, max_size=9).map("\t".join),
            st.tuples(st.sampled_from(["u1", "u2"]), st.lists(_TOKEN, max_size=6)).map(
                lambda ut: "\t".join([ut[0], *ut[1]])
            ),
            st.just("  "),
        ),
        max_size=15,
    )
)
def test_random_malformed_histories(lines):
    text = "\n".join(lines) + ("\n" if lines else "")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "h.histories"
        path.write_text(text)
        _check("piki", path, None, _histories_records(text))


@PROPERTY
@given(
    lines=st.lists(
        st.lists(
            st.one_of(st.sampled_from(IDS + TS), st.sampled_from(JUNK)), min_size=1, max_size=6
        ).map("::".join),
        max_size=15,
    )
)
def test_random_malformed_dat(lines):
    text = "\n".join(lines) + ("\n" if lines else "")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ratings.dat"
        path.write_text(text)
        _check("movielens", path, None, _physical_records(text, header=False))


_PQ_INT = st.one_of(st.none(), st.sampled_from([1, 2, 17, -5, 2**40]))
_PQ_STR = st.one_of(st.none(), st.sampled_from(["a", "b", "", " ", "1", "x y"]))


@PROPERTY
@given(
    rows=st.lists(
        st.tuples(
            _PQ_INT, _PQ_STR, _PQ_INT, st.one_of(st.none(), st.sampled_from(["0", "1", "2", ""]))
        ),
        max_size=25,
    ),
    id_type=st.sampled_from(["auto", "int", "string"]),
)
def test_random_malformed_parquet(rows, id_type):
    u, i, t, f = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    table = pa.table(
        {
            "u": pa.array(u, pa.int64()),
            "i": pa.array(i, pa.string()),
            "t": pa.array(t, pa.int64()),
            "f": pa.array(f, pa.string()),
        }
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "e.parquet"
        pq.write_table(table, str(path))
        _check("parquet", path, {**GENERIC, "id_type": id_type}, len(rows))


def test_no_printable_text_breaks_the_csv_reader(tmp_path):
    # Arbitrary printable junk (quotes included) must still add up or raise a DataError.
    rng = np.random.default_rng(0)
    alphabet = list(string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", ""))
    lines = ["u,i,t,f"] + ["".join(rng.choice(alphabet, size=12)) for _ in range(40)]
    path = _write(tmp_path, "junk.csv", "\n".join(lines) + "\n")
    _check("csv", path, GENERIC, _physical_records(path.read_text(), header=True))
