"""A user's first minute with their own log: every missing piece is one line naming it."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxrec.cli import main


def _one_line(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


def _train(tmp_path, source: str, path, *more: str) -> list[str]:
    """``jaxrec train`` argv on a log file with only the source and path given."""
    return [
        "train",
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.source={source}",
        f"--config.data.path={path}",
        *more,
    ]


@pytest.fixture
def log_csv(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("listener,track,played_at,action\nu1,t1,1,like\nu1,t2,2,skip\n")
    return path


def test_train_on_a_csv_without_a_mapping_shows_the_mapping_to_write(log_csv, tmp_path):
    msg = _one_line(_train(tmp_path, "csv", log_csv))
    assert msg.startswith("jaxrec train: ") and "config.data.options columns and feedback" in msg
    assert "['listener', 'track', 'played_at', 'action']" in msg  # the file's own columns
    assert '"user_id": "listener"' in msg and '"item_id": "track"' in msg
    assert '"timestamp": "played_at"' in msg and '"feedback": "action"' in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # stopped before training


def test_data_prepare_on_a_csv_without_a_mapping_is_one_line(log_csv, tmp_path):
    msg = _one_line(
        [
            "data",
            "prepare",
            "--source",
            "csv",
            "--input",
            str(log_csv),
            "--out",
            str(tmp_path / "d"),
        ]
    )
    assert "a csv log needs config.data.options" in msg and "'action'" in msg


def test_a_mapping_without_feedback_names_only_that_option(log_csv, tmp_path):
    mapping = '{"columns": {"user_id": "listener", "item_id": "track", "feedback": "action"}}'
    msg = _one_line(_train(tmp_path, "csv", log_csv, f"--config.data.options={mapping}"))
    assert "needs config.data.options feedback (" in msg


def test_parquet_without_a_mapping_lists_its_columns(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"uid": [1], "song": [2], "rating": [4]}), path)
    msg = _one_line(_train(tmp_path, "parquet", path))
    assert "['uid', 'song', 'rating']" in msg and '"feedback": "rating"' in msg
    assert "timestamp" not in msg.split("c.data.options")[1].split("feedback")[0]  # optional


def test_a_missing_config_file_is_one_line(tmp_path):
    msg = _one_line(["train", "--workdir", str(tmp_path / "run"), "--config", "configs/nope.py"])
    assert msg.startswith("jaxrec: --config configs/nope.py: no such config file")
    assert "quickstart.py" in msg
    msg = _one_line(["train", "--workdir", str(tmp_path / "run"), "--config=nope.py"])
    assert "--config nope.py: no such config file" in msg
