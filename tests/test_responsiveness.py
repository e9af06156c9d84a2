"""``jaxrec eval --responsiveness`` on a tiny trained run."""

import json

import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.eval.responsiveness import choose_appended_types
from jaxrec.train import train
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tiny_config()
    wd = tmp_path_factory.mktemp("resp") / "run"
    train(cfg, wd, progress=False)
    return wd


def _check(r, negative, neutral, k=10):
    assert (r["negative_type"], r["neutral_type"]) == (negative, neutral)
    assert r["k"] == k and r["split"] == "test"
    assert 0 < r["sequences"] == r["covered_sequences"]
    for name in ("negative", "neutral"):
        for who in ("top1", "neighbours"):
            s = r[name][who]
            assert 0.0 <= s["left_top_k"] <= 1.0 and np.isfinite(s["median_rank_drop"])
    # The current top-1 item is in the top-k of every history it was picked from.
    assert r["negative"]["top1"]["in_top_k_before"] == r["sequences"]


def test_eval_responsiveness_writes_and_prints(run, capsys):
    capsys.readouterr()
    main(["eval", "--workdir", str(run), "--responsiveness"])
    out = capsys.readouterr().out
    assert (run / "eval_test.json").exists()
    r = json.loads((run / "responsiveness.json").read_text())
    # Quickstart roles: thumbs_down and skip are negative inputs, no input type is neutral: a
    # plain play (a positive input type) is the control.
    _check(r, "thumbs_down", "play")
    assert "responsiveness on" in out and '"negative_type": "thumbs_down"' in out
    assert isinstance(r["step"], int)


def test_eval_responsiveness_overrides(run, capsys):
    main(
        ["eval", "--workdir", str(run), "--split", "test", "--responsiveness"]
        + ["--negative_type", "skip", "--neutral_type", "thumbs_up"]
    )
    _check(json.loads((run / "responsiveness.json").read_text()), "skip", "thumbs_up")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--negative_type", "meh"], "--negative_type: 'meh' is not an input feedback type"),
        (["--neutral_type", "nope"], "--neutral_type: 'nope' is not an input feedback type"),
    ],
)
def test_eval_responsiveness_bad_types(run, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["eval", "--workdir", str(run), "--responsiveness", *args])
    with pytest.raises(SystemExit, match="needs --responsiveness"):
        main(["eval", "--workdir", str(run), *args])


def test_feedback_type_choice():
    from jaxrec.data.sequences import Roles

    types = ("play", "skip", "thumbs_down", "view")
    roles = Roles(
        input_T=np.array([1, 1, 1, 1], bool),
        positive_T=np.array([1, 0, 0, 0], bool),
        negative_T=np.array([0, 1, 1, 0], bool),
    )
    assert choose_appended_types(types, roles) == ("thumbs_down", "view")  # view: neither role
    no_td = Roles(roles.input_T & np.array([1, 1, 0, 1], bool), roles.positive_T, roles.negative_T)
    assert choose_appended_types(types, no_td) == ("skip", "view")
    no_view = Roles(np.array([1, 1, 1, 0], bool), roles.positive_T, roles.negative_T)
    assert choose_appended_types(types, no_view) == ("thumbs_down", "play")
    assert choose_appended_types(types, roles, "skip", "play") == ("skip", "play")
    with pytest.raises(ValueError, match="negative_type: unknown feedback type 'x'"):
        choose_appended_types(types, roles, negative="x")
    with pytest.raises(ValueError, match="neutral_type: 'view' is not an input"):
        choose_appended_types(types, no_view, neutral="view")
    none = Roles(np.array([1, 0, 0, 1], bool), roles.positive_T, roles.negative_T)
    with pytest.raises(ValueError, match="negative_type: no feedback type"):
        choose_appended_types(types, none)
