"""Real data end to end: prepare -> TFDS (in-process and Beam) -> stats -> train, and the
grain pipeline's per-host batches."""

import importlib.util
import json

import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.data import events, pipeline, prepare, simulator, tfds_builder
from jaxrec.data.pipeline import BatchSampler
from jaxrec.data.sequences import Roles, build_examples, split_labels
from jaxrec.train import train
from tests.tiny import repo_config


def test_prepare_and_stats_on_spotify_sessions(shared_data, tmp_path, capsys):
    src = shared_data("spotify-sessions/mini-spotify-data.csv")
    main(
        [
            "data",
            "prepare",
            "--source",
            "spotify-sessions",
            "--input",
            str(src),
            "--out",
            str(tmp_path),
        ]
    )
    capsys.readouterr()
    main(["data", "stats", str(tmp_path)])
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["events"] == "193693"
    assert lines["contexts"] == "10000"
    assert lines["items"] == "5792"
    assert lines["feedback.skip"] == "104065"
    assert lines["feedback.partial"] == "27919"
    assert lines["feedback.complete"] == "61709"
    import pyarrow.csv as pv

    raw = pv.read_csv(src).group_by("user_id").aggregate([("skipped", "max")])
    never_complete = int((raw.column("skipped_max").to_numpy() < 4).sum())
    assert int(lines["users_without_positive"]) == never_complete
    assert json.loads((tmp_path / "report.json").read_text())["rows_in"] == 193693


def test_prepare_movielens_counts(shared_data, tmp_path, capsys):
    src = shared_data("movielens-100k/ml-100k.inter")
    main(["data", "prepare", "--source", "movielens", "--input", str(src), "--out", str(tmp_path)])
    capsys.readouterr()
    main(["data", "stats", str(tmp_path)])
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert (lines["events"], lines["users"], lines["items"]) == ("100000", "943", "1682")


@pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None,
    reason="apache-beam not installed (pip install '.[beam]')",
)
def test_beam_build_equals_in_process_build(cfg, tmp_path):
    cfg.data.simulator.num_users = 60
    ev = events.encode(simulator.simulate(cfg.data.simulator, 0), simulator.FEEDBACK_TYPES)
    built = {}
    for runner in (None, "DirectRunner"):
        out = tmp_path / str(runner)
        out.mkdir()
        tfds_builder.write_encoded(ev, out, row_group_size=300)  # several row groups
        d = tfds_builder.build(out, "sim", simulator.FEEDBACK_TYPES, beam_runner=runner)
        (out / "dataset.json").write_text(
            json.dumps(
                {"tfds_dir": str(d.relative_to(out)), "feedback_types": list(ev.feedback_types)}
            )
        )
        built[runner] = tfds_builder.load(out)
    for b in built.values():
        for field in ("user", "context", "item", "timestamp", "feedback"):
            np.testing.assert_array_equal(getattr(b, field), getattr(ev, field))


def test_training_from_a_prepared_dataset(cfg, tmp_path):
    prepare.prepare("simulator", None, tmp_path / "data", sim_cfg=cfg.data.simulator, seed=0)
    direct = cfg.copy_and_resolve_references()
    cfg.data.source = "prepared"
    cfg.data.path = str(tmp_path / "data")
    cfg.train.steps = 10
    direct.train.steps = 10
    prepared = train(cfg, tmp_path / "a", progress=False)
    straight = train(direct, tmp_path / "b", progress=False)
    # Only the simulator source knows its ground truth: the ceilings are the one difference.
    assert prepared == {
        k: v
        for k, v in straight.items()
        if "ceiling" not in k and "only" not in k and "oracle" not in k
    }


@pytest.mark.parametrize(
    "name,rel",
    [
        ("spotify_sessions", "spotify-sessions/mini-spotify-data.csv"),
        ("movielens", "movielens-100k/ml-100k.inter"),
        ("piki", "piki-sample/piki_eval.histories"),
    ],
)
def test_real_configs_train_end_to_end(name, rel, shared_data, tmp_path):
    shared_data(rel)
    cfg = repo_config(name)
    cfg.model.width, cfg.model.depth, cfg.model.mlp_ratio = 16, 1, 2
    cfg.train.steps, cfg.train.log_every, cfg.train.eval_every = 6, 3, 6
    cfg.train.checkpoint_every = 6
    cfg.train.epochs = cfg.train.eval_every_epochs = 0  # a 6-step budget, not the shipped epochs
    if name == "spotify_sessions":  # 5,792 tracks: the V x V baselines take most of the run
        cfg.eval.baselines = tuple(b for b in cfg.eval.baselines if not b.startswith("ease"))
    test = train(cfg, tmp_path, progress=False)
    assert test["sequences"] > 0 and np.isfinite(test["hr@10"])
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if r["step"] > 0)


def test_grain_batches_split_the_global_batch_across_hosts(cfg):
    ev = events.encode(simulator.simulate(cfg.data.simulator, 0), simulator.FEEDBACK_TYPES)
    roles = Roles.from_config(ev.feedback_types, cfg.feedback)
    ex = build_examples(ev, roles, split_labels(ev, 3), 10, 4)
    whole = BatchSampler(ex, 8, seed=3)
    hosts = [pipeline.batch_dataset(ex, 8, 3, 20, i, 2) for i in range(2)]
    for step in (0, 7, 19):
        joined = {k: np.concatenate([h[step][k] for h in hosts]) for k in hosts[0][step]}
        for k, v in whole(step).items():
            np.testing.assert_array_equal(joined[k], v)
    it = pipeline.batch_iterator(hosts[0])
    first = [next(it) for _ in range(3)]
    resumed = pipeline.batch_iterator(hosts[0], it.get_state())
    np.testing.assert_array_equal(next(resumed)["items"], hosts[0][3]["items"])
    assert (first[1]["items"] == hosts[0][1]["items"]).all()
    with pytest.raises(ValueError, match="config.train.batch_size"):
        pipeline.batch_dataset(ex, 9, 3, 20, 0, 2)


@pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None,
    reason="apache-beam not installed (pip install '.[beam]')",
)
def test_prepare_with_beam_options_from_the_command_line(cfg, tmp_path, capsys):
    main(
        [
            "data",
            "prepare",
            "--source",
            "simulator",
            "--out",
            str(tmp_path),
            "--beam_options",
            "--runner=DirectRunner --direct_num_workers=1",
            "--config.data.simulator.num_users=40",
        ]
    )
    assert "prepared" in capsys.readouterr().out
    back = prepare.load_prepared(tmp_path)
    assert back.num_events == json.loads((tmp_path / "dataset.json").read_text())["events"]
