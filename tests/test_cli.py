"""The command line as a user meets it: overrides, outputs, and errors that name the field."""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxrec import cli_args
from jaxrec.cli import main

TINY = [
    "--config.data.simulator.num_users=150",
    "--config.data.simulator.num_items=120",
    "--config.data.simulator.num_genres=6",
    "--config.data.simulator.latent_dim=8",
    "--config.data.simulator.events_per_context=(12, 24)",
    "--config.data.window=3",
    "--config.data.max_len=12",
    "--config.data.max_explicit=4",
    "--config.model.width=16",
    "--config.model.depth=1",
    "--config.model.heads=2",
    "--config.model.mlp_ratio=2",
    "--config.model.dropout=0.0",
    "--config.loss.num_random_negatives=16",
    "--config.optim.warmup_steps=5",
    "--config.optim.learning_rate=0.01",
    "--config.train.batch_size=16",
    "--config.train.log_every=10",
    "--config.train.eval_every=30",
    "--config.train.checkpoint_every=15",
    "--config.eval.batch_size=64",
    "--config.train.epochs=0",  # a step budget (the quickstart's is in epochs)
    "--config.train.eval_every_epochs=0",
]


def test_simulate_writes_an_event_table(tmp_path, capsys):
    main(["simulate", "--out", str(tmp_path), *TINY[:5]])
    table = pq.read_table(tmp_path / "events.parquet")
    assert table.column_names == ["user_id", "context_id", "item_id", "timestamp", "feedback"]
    out = capsys.readouterr().out
    assert f"wrote {table.num_rows} events" in out and "feedback.skip:" in out


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    wd = tmp_path / "run"
    main(["train", "--workdir", str(wd), *TINY, "--config.train.steps=10"])
    assert "pairwise_accuracy" in capsys.readouterr().out
    cfg = json.loads((wd / "config.json").read_text())
    assert cfg["train"]["steps"] == 10 and cfg["data"]["max_len"] == 12
    main(["eval", "--workdir", str(wd)])
    out = capsys.readouterr().out
    final = json.loads((wd / "eval_test.json").read_text())
    assert f"test metrics at step {final['selected_step']}" in out
    assert final["selected_step"] in (10, 15, 20, 25, 30)


@pytest.mark.parametrize(
    "override,field",
    [
        ("--config.feedback.input=('thumbs_up','meh')", "config.feedback.input"),
        ("--config.feedback.positive=('nope',)", "config.feedback.positive"),
        ("--config.loss.num_random_negatives=-3", "config.loss.num_random_negatives"),
        ("--config.data.max_explicit=-1", "config.data.max_explicit"),
        ("--config.train.batch_size=0", "config.train.batch_size"),
        ("--config.data.max_len=1", "config.data.max_len"),
        ("--config.loss.type=hinge", "config.loss.type"),
        ("--config.model.heads=3", "config.model.width"),
    ],
)
def test_bad_config_fails_at_start_naming_the_field(tmp_path, override, field):
    with pytest.raises(SystemExit) as err:
        main(["train", "--workdir", str(tmp_path), override])
    assert field in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_default_config_is_the_repository_quickstart(tmp_path, monkeypatch):
    assert cli_args.DEFAULT_CONFIG == cli_args.CONFIGS_DIR / "quickstart.py"
    assert cli_args.DEFAULT_CONFIG.is_file()
    # An install without the repository's configs/: a clear error, unless --config is given.
    monkeypatch.setattr(cli_args, "DEFAULT_CONFIG", tmp_path / "absent" / "quickstart.py")
    with pytest.raises(SystemExit, match=r"no --config given .* pass --config FILE"):
        main(["simulate", "--out", str(tmp_path), *TINY[:5]])
    given = str(cli_args.CONFIGS_DIR / "quickstart.py")
    main(["simulate", "--out", str(tmp_path), "--config", given, *TINY[:5]])
    assert (tmp_path / "events.parquet").exists()


def test_every_config_loads_by_path_without_a_configs_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "configs", None)  # any `import configs...` now fails
    paths = sorted(cli_args.CONFIGS_DIR.glob("*.py"))
    assert len(paths) >= 6
    for path in paths:
        cfg = cli_args.load_config(path)
        assert {"data", "model", "train"} <= set(cfg), path


def test_unknown_command_and_unknown_flag(tmp_path):
    with pytest.raises(SystemExit, match="unknown command"):
        main(["fly"])
    with pytest.raises(SystemExit, match="nope"):
        main(["train", "--workdir", str(tmp_path), "--nope=1"])


def _one_line_error(argv, command):
    with pytest.raises(SystemExit) as err:
        main(argv)
    msg = str(err.value)
    assert msg.startswith(f"jaxrec {command}: ") and "\n" not in msg and "Traceback" not in msg
    return msg


def _prepare(path, out):
    return ["data", "prepare", "--source", "spotify-sessions", "--input", str(path), "--out", out]


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    missing = tmp_path / "nope.csv"
    msg = _one_line_error(_prepare(missing, str(tmp_path / "o")), "data")
    assert str(missing) in msg
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("user_id,song_id,skipped\ncaf\xe9,1,0\n".encode("latin-1"))
    msg = _one_line_error(_prepare(latin, str(tmp_path / "o")), "data")
    assert "UTF8" in msg.replace("UTF-8", "UTF8") and "latin1.csv" in msg
    msg = _one_line_error(
        [
            "train",
            "--workdir",
            str(tmp_path / "w"),
            "--config",
            "configs/spotify_sessions.py",
            f"--config.data.path={missing}",
        ],
        "train",
    )
    assert str(missing) in msg
    not_a_dataset = tmp_path / "empty"
    not_a_dataset.mkdir()
    msg = _one_line_error(["data", "stats", str(not_a_dataset)], "data")
    assert "not a prepared dataset" in msg


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch):
    from jaxrec.data.events import DataError

    argv = [
        "data",
        "prepare",
        "--source",
        "spotify-sessions",
        "--input",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(DataError):
        main([*argv, "--debug"])
    monkeypatch.setenv("JAXREC_DEBUG", "1")
    with pytest.raises(DataError):
        main(argv)


def test_cli_misspelt_select_metric_exits_in_one_line(tmp_path, capsys):
    from jaxrec.cli import main

    with pytest.raises(SystemExit) as err:
        main(["train", "--workdir", str(tmp_path), "--config.train.select_metric=pairwise_acc"])
    msg = str(err.value)
    assert msg.startswith("jaxrec train: config.train.select_metric") and "\n" not in msg
    assert not (tmp_path / "data_report.json").exists()  # no data was read


# A user's first minute with their own log: every missing piece is one line naming it.


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
