"""Responsiveness (jaxrec/eval/responsiveness.py): by hand on a linear model, with the catalog
repeat term, and ``jaxrec eval --responsiveness`` on a tiny trained run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.eval.responsiveness import choose_appended_types, responsiveness
from jaxrec.train import train
from tests.tiny import catalog_repeat_model, tiny_config


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


# ---------------------------------------------------------------- by hand
class _LinearModel:
    """A hand-checkable 'model': query = [1, 0] + sum of w[feedback] * embedding(item)."""

    causal, width, item_bias = True, 2, None
    table = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    weight = np.array([0.0, -1.0, 0.5], np.float32)  # feedback: padding, thumbs_down, play

    def __call__(self, items, fb, deterministic=True):
        contrib = self.weight[np.asarray(fb)][..., None] * self.table[np.asarray(items)]
        return jnp.asarray(np.array([1.0, 0.0], np.float32) + np.cumsum(contrib, axis=1))

    def item_table(self):
        return jnp.asarray(self.table)

    def catalog_repeat_scores(self, items, fb, candidates):  # no catalog repeat term
        return None


def test_responsiveness_by_hand():
    from jaxrec.eval.responsiveness import responsiveness

    # History: item 3 played. q = [1, .5]: scores (items 1..4) 1, .95, .5, -1: top-1 is item 1;
    # its nearest items by cosine: 2 (0.99), then 3 (0.0).
    # + thumbs-down on 1: q = [0, .5]: scores 0, .05, .5, 0: item 1 ranks 3 (tie with item 4
    #   counts against it), item 2 stays 1, item 3 rises 2 -> 0.
    # + play of 1: q = [1.5, .5]: scores 1.5, 1.4, .5, -1.5: ranks unchanged (0, 1, 2).
    items = np.array([[0, 3], [0, 0]], np.int32)  # the empty second history is skipped
    fb = np.array([[0, 2], [0, 0]], np.int32)
    r = responsiveness(
        _LinearModel(), items, fb, negative_type=1, neutral_type=2, k=2, neighbours=2
    )
    assert r["sequences"] == 1 and r["k"] == 2
    assert r["negative"]["top1"] == {
        "left_top_k": 1.0,
        "median_rank_drop": 3.0,
        "in_top_k_before": 1,
    }
    assert r["negative"]["neighbours"] == {
        "left_top_k": 0.0, "median_rank_drop": -1.0, "in_top_k_before": 1
    }  # fmt: skip
    assert r["neutral"]["top1"] == {
        "left_top_k": 0.0,
        "median_rank_drop": 0.0,
        "in_top_k_before": 1,
    }
    assert r["neutral"]["neighbours"]["median_rank_drop"] == 0.0


def test_a_negative_thumbs_down_weight_makes_the_model_responsive():
    """With a large negative weight on thumbs-down reactions, responsiveness (which reads the
    model's scores, no exclusion rule) sees the top-1 item leave the top-10 every time; after a
    plain play (weight 0) the scores are those of the same model without the term."""
    thumbs_down, play = 4, 2
    w = np.zeros((2, 6), np.float32)
    w[1, thumbs_down] = -100.0
    model = catalog_repeat_model(w)
    rng = np.random.default_rng(1)
    items = rng.integers(1, 31, size=(20, 12)).astype(np.int32)
    fb = rng.integers(1, 4, size=(20, 12)).astype(np.int32)
    out = responsiveness(model, items, fb, thumbs_down, play, k=10)
    before = responsiveness(
        catalog_repeat_model(np.zeros((2, 6))), items, fb, thumbs_down, play, k=10
    )
    assert out["negative"]["top1"]["left_top_k"] == 1.0
    assert before["negative"]["top1"]["left_top_k"] < 0.5
    assert out["neutral"] == before["neutral"]  # the play weight is 0: nothing changes
