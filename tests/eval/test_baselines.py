"""Baselines checked by hand on a tiny table, and through the evaluator and the CLI."""

import dataclasses
import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxrec.assembly import prepare_data
from jaxrec.data import events, simulator
from jaxrec.data.counts import (
    TrainingCounts,
    fit_item_factors,
    fit_taste_factors,
    positive_rate_V,
    repeat_features,
)
from jaxrec.data.sequences import Roles
from jaxrec.eval import baselines
from jaxrec.eval.evaluator import Evaluator
from tests.tiny import event_table

TYPES = simulator.FEEDBACK_TYPES
ROLES = ConfigDict(dict(input=TYPES, positive=("thumbs_up",), negative=("thumbs_down",)))


def _tiny():
    # ctx 0: 1 up, 2 up, 3 down | ctx 1: 1 up, 3 down, 2 down | ctx 2: 2 up, 4 up | ctx 3 (test)
    rows = [
        (0, 0, "1", 1, "thumbs_up"),
        (0, 0, "2", 2, "thumbs_up"),
        (0, 0, "3", 3, "thumbs_down"),
        (1, 1, "1", 1, "thumbs_up"),
        (1, 1, "3", 2, "thumbs_down"),
        (1, 1, "2", 3, "thumbs_down"),
        (2, 2, "2", 1, "thumbs_up"),
        (2, 2, "4", 2, "thumbs_up"),
        (3, 3, "4", 9, "thumbs_up"),  # labelled test below: never counted
    ]
    ev = events.encode(event_table(rows), TYPES, "hand")
    roles = Roles.from_config(ev.feedback_types, ROLES)
    labels = np.array([0] * 8 + [2], np.int8)
    counts = TrainingCounts.from_split(ev, roles, labels)
    ids = {ev.item_vocab[i]: i for i in range(1, ev.num_items + 1)}
    return ev, counts, ids


def _hist(ev, ids, names, fb="thumbs_up"):
    items = np.array([[ids[n] for n in names]], np.int32)
    feedback = np.full(items.shape, TYPES.index(fb) + 1, np.int32)
    return items, feedback


def test_counts_come_from_the_training_part_only():
    ev, counts, ids = _tiny()
    pos = {n: counts.positives_V[i] for n, i in ids.items()}
    assert pos == {"1": 2, "2": 2, "3": 0, "4": 1}  # the test event of item 4 is not counted
    plays = {n: counts.events_V[i] for n, i in ids.items()}
    assert plays == {"1": 2, "2": 3, "3": 2, "4": 1}


def test_most_popular_and_positive_rate_by_hand():
    ev, counts, ids = _tiny()
    items, fb = _hist(ev, ids, ["1"])
    pop = baselines.most_popular(counts)(items, fb)[0]
    rate = baselines.positive_rate(counts)(items, fb)[0]
    want_rate = {"1": 3 / 4, "2": 3 / 5, "3": 1 / 4, "4": 2 / 3}
    for n, i in ids.items():
        assert pop[i] == counts.positives_V[i]
        assert rate[i] == pytest.approx(want_rate[n])


def test_item_knn_by_hand():
    ev, counts, ids = _tiny()
    # Positive contexts: {1, 2}, {1}, {2, 4}. cos(1, 2) = 1 / sqrt(2 * 2), cos(2, 4) = 1 / sqrt(2).
    score = baselines.item_knn(counts)(*_hist(ev, ids, ["2"]))[0]
    assert score[ids["1"]] == pytest.approx(0.5, abs=1e-5)
    assert score[ids["4"]] == pytest.approx(1 / np.sqrt(2), abs=1e-5)
    assert score[ids["3"]] < 1e-5 and score[ids["2"]] < 1e-5  # no co-occurrence; itself
    # Disliked history items say nothing: only the popularity tie-break is left.
    cold = baselines.item_knn(counts)(*_hist(ev, ids, ["2"], fb="thumbs_down"))[0]
    assert cold.max() <= 1e-6 and cold[ids["1"]] > cold[ids["3"]]


def test_ease_equals_per_item_ridge_regressions():
    ev, counts, ids = _tiny()
    lam = 0.7
    x = counts.context_matrix().toarray()[:, 1:]
    score = baselines.ease(counts, lam)(*_hist(ev, ids, ["1", "4"]))[0, 1:]
    # EASE's column j is the ridge regression of item j on the other items (no self-weight).
    v = x.shape[1]
    b = np.zeros((v, v))
    for j in range(v):
        others = [k for k in range(v) if k != j]
        xo = x[:, others]
        b[others, j] = np.linalg.solve(xo.T @ xo + lam * np.eye(v - 1), xo.T @ x[:, j])
    hist = np.zeros(v)
    hist[[ids["1"] - 1, ids["4"] - 1]] = 1
    np.testing.assert_allclose(score, hist @ b, atol=1e-5)


def test_unknown_baseline_and_huge_catalog_are_refused():
    ev, counts, ids = _tiny()
    with pytest.raises(ValueError, match="unknown"):
        baselines.fit(counts, ("most_popular", "magic"))
    big = TrainingCounts(
        baselines.EASE_MAX_ITEMS + 1,
        counts.positives_V,
        counts.events_V,
        counts.context_items,
        counts.positive_T,
        counts.negative_T,
    )
    with pytest.raises(ValueError, match="config.eval.baselines"):
        baselines.ease(big)


def test_positive_rate_through_the_evaluator_matches_direct_pair_counting(cfg):
    from jaxrec.assembly import prepare_data

    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    rate = (counts.positives_V + 1) / (counts.events_V + 2)
    m = Evaluator(cfg.eval).evaluate_scorer(baselines.positive_rate(counts), data.test)
    wins = pairs = 0.0
    for items, labels, cov in zip(
        data.test.window_items_NxW, data.test.window_label_NxW, data.test.covered_N, strict=True
    ):
        if not cov:
            continue
        for p in items[labels == 1]:
            for n in items[labels == -1]:
                pairs += 1
                wins += 1.0 if rate[p] > rate[n] else 0.5 if rate[p] == rate[n] else 0.0
    assert m["pairs"] == pairs
    assert m["pairwise_accuracy"] == pytest.approx(wins / pairs, abs=1e-6)


def test_baselines_command_writes_both_splits(tmp_path, capsys):
    from jaxrec.cli import main
    from tests.test_cli import TINY

    main(["baselines", "--out", str(tmp_path), *TINY])
    test = json.loads((tmp_path / "baselines_test.json").read_text())
    valid = json.loads((tmp_path / "baselines_valid.json").read_text())
    assert set(test) == set(valid) == set(baselines.BASELINES)
    for metrics in test.values():
        assert 0.0 <= metrics["pairwise_accuracy"] <= 1.0 and "hr@10" in metrics
    out = capsys.readouterr().out
    assert "positive_rate: test metrics" in out and "pairwise_accuracy" in out


def test_item_appeal_solves_its_penalised_logistic_regression():
    ev, counts, ids = _tiny()
    item, ctx, liked = counts.labelled
    assert len(item) == 8 and liked.sum() == 5  # the test event is not a training label
    lam_a, lam_c = 1.0, 0.3
    logit_V = baselines.item_appeal_V(counts, lam_a, lam_c, sweeps=200)
    # At the optimum the gradient of the penalised log-likelihood is 0 for every effect:
    # sum over an effect's events of (y - p) = lam x effect.
    y = liked.astype(float)
    g = np.log(y.mean() / (1 - y.mean()))
    a = logit_V - g
    # Context effects: solve each context's own 1-D equation given the item effects.
    c = np.zeros(int(ctx.max()) + 1)
    for _ in range(200):
        p = 1 / (1 + np.exp(-(g + a[item] + c[ctx])))
        c += (np.bincount(ctx, y - p) - lam_c * c) / (np.bincount(ctx, p * (1 - p)) + lam_c)
    p = 1 / (1 + np.exp(-(g + a[item] + c[ctx])))
    n = ev.num_items + 1
    np.testing.assert_allclose(np.bincount(item, y - p, n)[1:], lam_a * a[1:], atol=1e-6)
    # Liked in every context it was played in: above the item disliked everywhere.
    assert logit_V[ids["1"]] > logit_V[ids["2"]] > logit_V[ids["3"]]
    items, fb = _hist(ev, ids, ["1"])
    scores = baselines.item_appeal(counts)(items, fb)[0]
    np.testing.assert_allclose(scores, logit_V.astype(np.float32), rtol=1e-6)


def test_item_appeal_converges_on_skewed_labels():
    """92% of labels liked, one item liked 83 times in 403: an undamped Newton step from
    where p (1 - p) is tiny overshot back and forth (its effect ended at +85 logits); the
    clipped steps reach the optimum, where the gradient is 0."""
    from jaxrec.data.counts import TrainingCounts, fit_item_appeal

    rng = np.random.default_rng(0)
    n_items, per = 40, 200
    item = np.concatenate([np.full(403, 1), rng.integers(2, n_items + 1, n_items * per)])
    liked = np.concatenate([np.arange(403) < 83, rng.random(n_items * per) < 0.97])
    ctx = rng.integers(0, 50, len(item))
    counts = TrainingCounts(
        num_items=n_items,
        positives_V=np.bincount(item[liked], minlength=n_items + 1).astype(float),
        events_V=np.bincount(item, minlength=n_items + 1).astype(float),
        context_items=(ctx, item),
        positive_T=np.array([True, False]),
        negative_T=np.array([False, True]),
        labelled=(item, ctx, liked),
        labelled_repeats=np.zeros((len(item), 4)),
    )
    logit_V, _ = fit_item_appeal(counts, lam_item=1.0, lam_context=1e9, with_repeats=False)
    rate = 83 / 403
    assert abs(logit_V[1] - np.log(rate / (1 - rate))) < 0.1  # its own rate, barely shrunk
    y = liked.astype(float)
    p = 1 / (1 + np.exp(-logit_V[item]))
    a = logit_V - np.log(y.mean() / (1 - y.mean()))
    np.testing.assert_allclose(np.bincount(item, y - p)[1:], 1.0 * a[1:], atol=1e-4)


def test_item_appeal_takes_out_a_contexts_mood():
    # Items 1 and 2 are each liked in 3 of 4 plays; item 2's plays are in a context that
    # dislikes almost everything, item 1's in a context that likes almost everything. The
    # positive rate ties them; the context effects put item 2 above item 1.
    rows = []
    t = 0
    for ctx, (item_plays, filler) in enumerate(
        [(("1", "1", "1", "1"), "thumbs_up"), (("2", "2", "2", "2"), "thumbs_down")]
    ):
        for k, name in enumerate(item_plays):
            rows.append((ctx, ctx, name, t, "thumbs_up" if k < 3 else "thumbs_down"))
            t += 1
        for _ in range(12):
            rows.append((ctx, ctx, "9", t, filler))
            rows.append((ctx, ctx, "8", t + 1, filler))
            t += 2
    ev = events.encode(event_table(rows), TYPES, "hand")
    roles = Roles.from_config(ev.feedback_types, ROLES)
    counts = TrainingCounts.from_split(ev, roles, np.zeros(len(rows), np.int8))
    ids = {ev.item_vocab[i]: i for i in range(1, ev.num_items + 1)}
    rate = positive_rate_V(counts)
    assert rate[ids["1"]] == rate[ids["2"]]
    logit_V = baselines.item_appeal_V(counts)
    assert logit_V[ids["2"]] > logit_V[ids["1"]]


def test_repeat_features_by_hand():
    up, play, skip = (TYPES.index(t) for t in ("thumbs_up", "play", "skip"))
    # One context: item 5 up, 6 skip, 5 play, 5 skip (not an input), 5 up; then another context.
    ctx = np.array([0, 0, 0, 0, 0, 1])
    item = np.array([5, 6, 5, 5, 5, 5])
    ftype = np.array([up, skip, play, skip, up, up])
    is_input = np.array([True, True, True, False, True, True])
    x = repeat_features(ctx, item, ftype, is_input, len(TYPES))
    t = len(TYPES)
    counts, last = np.expm1(x[:, :t]), x[:, t:]
    np.testing.assert_allclose(counts[0], 0)  # first time heard
    np.testing.assert_allclose(last[0], 0)
    np.testing.assert_allclose(counts[2], np.eye(t)[up])  # once before, thumbs-up
    np.testing.assert_allclose(last[2], np.eye(t)[up])
    np.testing.assert_allclose(counts[3], np.eye(t)[up] + np.eye(t)[play])
    np.testing.assert_allclose(last[3], np.eye(t)[play])
    # The skip at row 3 is no input: it is not part of any history.
    np.testing.assert_allclose(counts[4], np.eye(t)[up] + np.eye(t)[play])
    np.testing.assert_allclose(counts[5], 0)  # another context starts afresh
    # The scorer's features of a history equal the training features of the next event.
    hist_items = np.array([[0, 5, 6, 5]])
    hist_fb = np.array([[0, up + 1, skip + 1, play + 1]])
    h = baselines.history_repeats(hist_items, hist_fb, 8, t)[0]
    np.testing.assert_allclose(h[5], x[3], rtol=1e-6)
    np.testing.assert_allclose(h[6, t:], np.eye(t)[skip])
    np.testing.assert_allclose(h[7], 0)


def test_item_appeal_repeats_learns_that_a_song_liked_before_is_liked_again():
    # Every context hears item 1 twice: liked both times in even contexts, disliked both times
    # in odd ones; items 8 and 9 fill the contexts. Item 1's own effect is ~0, so what orders
    # it is the listener's earlier reaction to it.
    rows, t = [], 0
    for c in range(20):
        fb = "thumbs_up" if c % 2 == 0 else "thumbs_down"
        for name, f in (("1", fb), ("8", "thumbs_up"), ("1", fb), ("9", "thumbs_down")):
            rows.append((c, c, name, t, f))
            t += 1
    ev = events.encode(event_table(rows), TYPES, "hand")
    roles = Roles.from_config(ev.feedback_types, ROLES)
    counts = TrainingCounts.from_split(ev, roles, np.zeros(len(rows), np.int8))
    ids = {ev.item_vocab[i]: i for i in range(1, ev.num_items + 1)}
    score = baselines.item_appeal_repeats(counts)
    liked, disliked = (_hist(ev, ids, ["1"], fb=f) for f in ("thumbs_up", "thumbs_down"))
    up, down = score(*liked)[0], score(*disliked)[0]
    assert up[ids["1"]] > up[ids["9"]] and down[ids["1"]] < down[ids["8"]]
    assert up[ids["1"]] - down[ids["1"]] > 1.0
    # Items not in the history score their item effect, as item_appeal's.
    base = baselines.item_appeal(counts)(*liked)[0]
    assert up[ids["8"]] - up[ids["9"]] == pytest.approx(base[ids["8"]] - base[ids["9"]], rel=0.2)


def test_compare_to_baselines_names_the_best_and_says_level_without_an_interval():
    from jaxrec.train import compare_to_baselines, format_comparison

    bl = {"a": {"pairwise_accuracy": 0.70, "neg_hr@10": 0.2}, "b": {"pairwise_accuracy": 0.75}}
    c = compare_to_baselines({"pairwise_accuracy": 0.76}, bl, "pairwise_accuracy", 1.0)
    line = format_comparison(c)
    # No per-window terms, no interval: never "beats".
    assert "best baseline b 0.7500" in line and "(+0.0100, no CI)" in line and "level" in line
    # Lower is better for neg_hr: the best baseline is the smallest.
    bl = {"a": {"neg_hr@10": 0.2}, "b": {"neg_hr@10": 0.3}}
    assert compare_to_baselines({"neg_hr@10": 0.1}, bl, "neg_hr@10", -1.0)["baseline"] == "a"


def test_ease_repeats_counts_reactions_in_the_history_and_is_tuned_on_validation(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    ev = Evaluator(cfg.eval)
    tried = []

    def tune(scorer):
        value = ev.evaluate_scorer(scorer, data.valid)["ndcg@10"]
        tried.append(value)
        return value

    fitted = baselines.ease_repeats(counts, tune)
    assert len(tried) == len(baselines.REPEAT_POSITIVE_GRID) + len(baselines.REPEAT_NEGATIVE_GRID)
    assert max(tried) == pytest.approx(ev.evaluate_scorer(fitted, data.valid)["ndcg@10"])
    # The score is EASE's plus the weighted counts of the item in the history.
    items, fb = data.test.items_NxL[:4], data.test.feedback_NxL[:4]
    base = baselines.ease(counts)(items, fb)
    w = fitted.weights
    up = baselines.history_counts(items, fb, counts.positive_T, counts.num_items + 1)
    down = baselines.history_counts(items, fb, counts.negative_T, counts.num_items + 1)
    np.testing.assert_allclose(
        fitted(items, fb), base + w["positive"] * up + w["negative"] * down, atol=1e-5
    )
    row, col = np.nonzero(up)
    assert len(row) and (up[row, col] >= 1).all()
    with pytest.raises(ValueError, match="validation"):
        baselines.fit(counts, ("ease_repeats",))


# item_appeal_taste: the item factors, the history's taste, the tuned weights.


def test_item_factors_recover_a_planted_low_rank_structure():
    """Every listener reacts to every item with b_i + c_u + p_u . q_i (rank 2, no noise, codes
    in [-1, 1]): a ridge regression of each listener's codes on the fitted item factors
    reproduces them to within 0.03, whatever the rotation of the factors."""
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 25
    p, q = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    b, c = rng.normal(size=n_items), 0.3 * rng.normal(size=n_users)
    user, item = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    user, item = user.ravel(), item.ravel()
    code = b[item] + c[user] + np.einsum("ed,ed->e", p[user], q[item])
    code = code / np.abs(code).max()
    q_fit, b_fit = fit_item_factors(item + 1, user, code, n_items, rank=2, lam=1e-3, sweeps=50)
    assert q_fit.shape == (n_items + 1, 2) and b_fit.shape == (n_items + 1,)
    assert not q_fit[0].any() and b_fit[0] == 0.0  # padding
    # The fitted item side spans the planted one: regress each listener's codes on it.
    x = np.concatenate([q_fit[item + 1], np.ones((len(item), 1))], axis=1)
    resid = []
    for u in range(n_users):
        rows = user == u
        target = code[rows] - b_fit[item[rows] + 1]
        coef = np.linalg.lstsq(x[rows], target, rcond=None)[0]
        resid.append(target - x[rows] @ coef)
    # (The offsets' fixed ridge of 5 keeps it from being exact.)
    assert np.abs(np.concatenate(resid)).max() < 0.03


def test_item_factors_leave_items_without_events_at_zero():
    q, b = fit_item_factors(np.array([1, 2, 1]), np.array([0, 0, 1]), np.array([1.0, -1.0, 1.0]), 4)
    assert not q[3:].any() and not b[3:].any()


def test_history_taste_is_the_ridge_regression_of_the_codes_by_hand():
    rng = np.random.default_rng(1)
    q_VxR, b_V = rng.normal(size=(9, 3)), rng.normal(size=9)
    q_VxR[0], b_V[0] = 0.0, 0.0
    codes_T = np.array([1.0, 0.33, -0.33, -1.0])
    items = np.array([[0, 0, 4, 2, 7, 4], [3, 1, 8, 5, 6, 2]])
    fb = np.array([[0, 0, 1, 4, 3, 2], [1, 1, 2, 4, 4, 3]])
    lam = 2.0
    got = baselines.history_taste(q_VxR, b_V, codes_T, items, fb, lam)
    for row in range(2):
        real = items[row] > 0
        x = np.concatenate([q_VxR[items[row][real]], np.ones((real.sum(), 1))], axis=1)
        y = codes_T[fb[row][real] - 1] - b_V[items[row][real]]
        ridge = np.diag([lam] * 3 + [1e-3])
        want = np.linalg.solve(x.T @ x + ridge, x.T @ y)[:3]
        np.testing.assert_allclose(got[row], want, rtol=1e-8)


def test_feedback_codes_default_to_the_roles_and_are_checked():
    default = Roles.from_config(TYPES, ROLES)  # the radio vocabulary's own codes
    np.testing.assert_array_equal(default.codes_T, [1.0, 0.33, -0.33, -1.0])
    other = ("love", "meh", "nope")
    roles = ConfigDict(dict(input=other, positive=("love",), negative=("nope",)))
    np.testing.assert_array_equal(Roles.from_config(other, roles).codes_T, [1.0, 0.0, -1.0])
    given = ConfigDict(dict(ROLES, codes={"play": 0.5, "skip": -0.25}))
    np.testing.assert_array_equal(Roles.from_config(TYPES, given).codes_T, [1.0, 0.5, -0.25, -1.0])
    with pytest.raises(
        ValueError, match=r"config.feedback.codes: unknown feedback type\(s\) \['skp'\]"
    ):
        Roles.from_config(TYPES, ConfigDict(dict(ROLES, codes={"skp": -0.5})))
    with pytest.raises(ValueError, match=r"config.feedback.codes.skip: a number in \[-1, 1\]"):
        Roles.from_config(TYPES, ConfigDict(dict(ROLES, codes={"skip": -2})))


def test_feedback_codes_are_checked_before_data_is_read():
    from jaxrec.config import validate_config
    from tests.tiny import tiny_config

    cfg = tiny_config()
    cfg.feedback.codes = {"thumbs_dwn": -1.0}
    with pytest.raises(ValueError, match="config.feedback.codes: unknown feedback type"):
        validate_config(cfg)  # the simulator's vocabulary is known without simulating


def test_item_appeal_taste_adds_the_history_taste_and_tunes_on_validation(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    tried = []

    def tune(scorer, metric=None):
        tried.append(metric)
        items, fb = data.valid.items_NxL[:8], data.valid.feedback_NxL[:8]
        return -float(np.abs(scorer(items, fb)).mean())  # any deterministic preference

    scorer = baselines.item_appeal_taste(counts, tune)
    assert set(scorer.weights) == {"gamma", "ridge"}
    assert scorer.weights["gamma"] in baselines.TASTE_GAMMA_GRID
    assert scorer.weights["ridge"] in baselines.TASTE_RIDGE_GRID
    assert tried[0] == "pairwise_accuracy"
    # Its scores: item_appeal_repeats plus gamma x the factors . the history's taste.
    items, fb = data.test.items_NxL[:4], data.test.feedback_NxL[:4]
    q, b = fit_taste_factors(counts)
    taste = baselines.history_taste(q, b, counts.codes_T, items, fb, scorer.weights["ridge"])
    want = baselines.item_appeal_repeats(counts)(items, fb) + scorer.weights["gamma"] * taste @ q.T
    np.testing.assert_allclose(scorer(items, fb), want, rtol=1e-4, atol=1e-4)


def test_taste_weights_come_from_validation_pairs_or_none(cfg):
    data = prepare_data(cfg)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    factors = fit_taste_factors(counts)
    chosen = baselines.taste_weights(counts, factors, data.valid)
    assert chosen["gamma"] in baselines.TASTE_GAMMA_GRID
    assert chosen["ridge"] in baselines.TASTE_RIDGE_GRID
    no_pairs = dataclasses.replace(data.valid, window_label_NxW=np.abs(data.valid.window_label_NxW))
    assert baselines.taste_weights(counts, factors, no_pairs) is None
