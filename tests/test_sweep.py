"""``jaxrec sweep``: the space syntax and its checks, pruning, recovery of cut-off trials, and a
real two-trial sweep resumed from its storage."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxrec.cli import main
from jaxrec.sweep import MISSING_OPTUNA, Param, SweepError, parse_space, run_process

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]


def tiny_config_file(tmp_path: Path) -> Path:
    """A config file for ``jaxrec train`` subprocesses: tests/tiny.py's config, smaller."""
    path = tmp_path / "tiny_sweep.py"
    path.write_text(
        textwrap.dedent(
            f"""\
            import sys

            sys.path.insert(0, {str(REPO)!r})
            from tests.tiny import tiny_config


            def get_config():
                c = tiny_config()
                c.data.simulator.num_users, c.data.simulator.num_items = 60, 80
                c.train.steps, c.train.eval_every, c.train.checkpoint_every = 20, 10, 10
                c.train.tensorboard = False
                c.eval.baselines = ()
                return c
            """
        )
    )
    return path


@pytest.mark.parametrize(
    "text, want",
    [
        (
            "optim.learning_rate=loguniform(1e-4,3e-3)",
            Param("optim.learning_rate", "loguniform", 1e-4, 3e-3),
        ),
        ("model.dropout = uniform(0, 0.5)", Param("model.dropout", "uniform", 0.0, 0.5)),
        ("model.depth=int(1,4)", Param("model.depth", "int", 1, 4)),
        ("train.batch_size=logint(16,256)", Param("train.batch_size", "logint", 16, 256)),
        ("model.dropout=[0.1,0.3,0.5]", Param("model.dropout", "choice", choices=(0.1, 0.3, 0.5))),
        (
            "loss.kernel=['dense','chunked']",
            Param("loss.kernel", "choice", choices=("dense", "chunked")),
        ),
        (
            "loss.kernel=[dense,chunked]",
            Param("loss.kernel", "choice", choices=("dense", "chunked")),
        ),
        (
            "data.temporal_cut=[(0.8,0.9),(0.7,0.85)]",
            Param("data.temporal_cut", "choice", choices=((0.8, 0.9), (0.7, 0.85))),
        ),
    ],
)
def test_space_forms(text, want):
    p = parse_space(text)
    assert p == want
    assert all(type(a) is type(b) for a, b in zip(p.choices, want.choices, strict=True))
    # A tuple choice is stored in Optuna as its repr and decoded back to the tuple.
    assert p.encoded == (want.key == "data.temporal_cut")
    if p.encoded:
        assert p.decode(repr(p.choices[1])) == p.choices[1]


@pytest.mark.parametrize(
    "text",
    [
        "model.dropout",  # no expression
        "=[1,2]",  # no key
        "model.dropout=normal(0,1)",  # unknown distribution
        "model.dropout=uniform(0.5)",  # one bound
        "model.dropout=uniform(0.5,0.1)",  # a >= b
        "model.dropout=uniform(a,b)",  # not numbers
        "model.depth=int(1.5,4)",  # int() of a float
        "optim.learning_rate=loguniform(0,1e-3)",  # log of 0
        "train.batch_size=logint(0,8)",
        "model.dropout=[]",
        "model.dropout=[0.1,0.1]",
        "model.dropout=[0.1,(]",
    ],
)
def test_space_malformed(text):
    with pytest.raises(SweepError, match="--space"):
        parse_space(text)


@pytest.mark.parametrize(
    "space, words",
    [
        ("model.dropot=[0.1,0.2]", "model.dropot: no such config field"),
        ("model=[1,2]", "model: no such config field"),  # a group, not a field
        ("train.batch_size=uniform(8,32)", "train.batch_size: the value 8.0"),  # a float for an int
        ("model.dropout=['a','b']", "model.dropout: the value 'a'"),
        ("model.dropout=uniform(oops)", "model.dropout=uniform(oops)"),
        ("train.steps=int(10,20)", "also set by --config.train.steps"),
    ],
)
def test_bad_space_is_one_line_before_anything_runs(tmp_path, capsys, space, words):
    workdir = tmp_path / "sweep"
    argv = ["sweep", "--config", str(tiny_config_file(tmp_path)), "--workdir", str(workdir)]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--space", space, "--config.train.steps=20"])
    message = str(e.value.code)
    assert message.startswith("jaxrec sweep: --space") and words in message
    assert "\n" not in message
    assert not workdir.exists()  # no study, no trial, no data


def test_unknown_metric(tmp_path):
    with pytest.raises(SystemExit, match="jaxrec sweep: --metric ndcg@11: unknown"):
        main(
            ["sweep", "--workdir", str(tmp_path / "s"), "--space", "model.dropout=[0.1]"]
            + ["--metric", "ndcg@11"]
        )


def test_jaxrec_works_without_optuna():
    code = (
        "import sys; sys.modules['optuna'] = None\n"  # makes `import optuna` fail
        "import jaxrec.cli, jaxrec.sweep\n"
        "jaxrec.cli.main(['sweep', '--workdir', 'x', '--space', 'model.dropout=[0.1]'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1
    assert out.stderr.strip() == MISSING_OPTUNA


def test_run_process_stops_when_told(tmp_path):
    """A run is polled for validation rows and killed when the pruner says so."""
    metrics = tmp_path / "metrics.jsonl"
    script = (
        "import json, sys, time\n"
        "f = open(sys.argv[1], 'a')\n"
        "for step, v in ((0, 0.1), (10, 0.2), (20, 0.3)):\n"
        "    f.write(json.dumps({'step': step, 'loss': 1.0, 'valid/ndcg@10': v}) + '\\n')\n"
        "    f.flush(); time.sleep(0.2)\n"
        "f.write(json.dumps({'step': 25, 'loss': 1.0}) + '\\n'); f.flush()\n"
        "time.sleep(60)\n"
    )
    seen = []

    def on_value(value, step):
        seen.append((step, value))
        return step >= 10

    status = run_process(
        [sys.executable, "-c", script, str(metrics)],
        metrics,
        "valid/ndcg@10",
        on_value,
        tmp_path / "log",
        poll_s=0.05,
    )
    assert status is None  # stopped, well before the 60 s sleep
    assert seen == [(0, 0.1), (10, 0.2)]
    # Without pruning: every value once, and the exit status.
    seen.clear()
    metrics.unlink()
    fast = script.replace("time.sleep(60)", "sys.exit(3)")
    cmd = [sys.executable, "-c", fast, str(metrics)]
    status = run_process(
        cmd, metrics, "valid/ndcg@10", lambda v, s: bool(seen.append(s)), tmp_path / "log"
    )
    assert status == 3 and seen == [0, 10, 20]


def test_cut_off_trial_is_failed_and_queued_again(tmp_path):
    """A RUNNING trial of a sweep process that is gone is failed; its values are queued again,
    in the same workdir, and it does not count as finished."""
    import socket

    from jaxrec.sweep import counts, recover

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    done = study.ask()
    done.suggest_float("model.dropout", 0.0, 0.5)
    study.tell(done, 0.3)
    cut = study.ask()
    cut.suggest_float("model.dropout", 0.0, 0.5)
    for k, v in dict(workdir="trial_001", host=socket.gethostname(), pid=dead.pid).items():
        cut.set_user_attr(k, v)
    assert counts(study) == (1, 1)
    assert recover(study, tmp_path) == [1]
    states = [t.state for t in study.trials]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.WAITING,
    ]
    retry = study.trials[2]
    assert retry.user_attrs == {"retry_of": 1, "workdir": "trial_001"}
    assert retry.system_attrs["fixed_params"] == cut.params
    assert counts(study) == (1, 0)
    assert recover(study, tmp_path) == []  # once only


def test_sweep_runs_resumes_and_reports(tmp_path, capsys):
    """Two real tiny trials: ``--trials 1``, then the same command with ``--trials 2`` adds one
    trial and does not rerun the first; the report names the winner and its test figures."""
    workdir = tmp_path / "sweep"
    argv = [
        "sweep",
        "--config",
        str(tiny_config_file(tmp_path)),
        "--workdir",
        str(workdir),
        "--space",
        "optim.learning_rate=loguniform(1e-3,3e-2)",
        "--space",
        "model.dropout=[0.0,0.2]",
        "--config.train.steps=20",
    ]
    main([*argv, "--trials", "1"])
    first = workdir / "trial_000"
    log = (first / "metrics.jsonl").read_text()
    assert json.loads(log.splitlines()[0])["step"] == 0  # a normal run, from step 0
    main([*argv, "--trials", "2"])
    out = capsys.readouterr().out
    assert "1 trial(s) already finished" in out

    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{workdir / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert (first / "metrics.jsonl").read_text() == log  # trial 0 was not run again
    assert (first / "train.log").read_text().count("test metrics") == 1
    t1 = study.trials[1]
    assert t1.user_attrs["workdir"] == "trial_001"
    assert f"--config.model.dropout={t1.params['model.dropout']}" in t1.user_attrs["overrides"]
    run_cfg = json.loads((workdir / "trial_001" / "config.json").read_text())
    assert run_cfg["optim"]["learning_rate"] == t1.params["optim.learning_rate"]
    assert run_cfg["train"]["steps"] == 20

    report = json.loads((workdir / "sweep.json").read_text())
    best = study.best_trial
    winner = report["winner"]
    assert winner["number"] == best.number and winner["value"] == best.value
    test = json.loads((workdir / best.user_attrs["workdir"] / "eval_test.json").read_text())
    assert winner["test"] == test  # read, not recomputed
    md = (workdir / "sweep.md").read_text()
    assert f"## Winner: trial {best.number}" in md and "**winner**" in md
    assert f"winner: trial {best.number}" in out and str(workdir / "sweep.md") in out
