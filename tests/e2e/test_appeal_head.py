"""The appeal head end to end: one tiny training run, its log and accuracies, and the export
and serving of its scores."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import inference
from jaxrec.train import train
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def appeal_run(tmp_path_factory):
    cfg = tiny_config()
    cfg.model.appeal_head = True
    cfg.model.appeal_repeats = True  # export and serving must carry the history term too
    cfg.model.appeal_pool = True  # and the reaction pool
    cfg.model.appeal_taste = True  # and the taste term
    cfg.loss.appeal_weight = 1.0
    cfg.data.contrast_window = 3
    wd = tmp_path_factory.mktemp("appeal")
    result = train(cfg, str(wd))
    return cfg, wd, result


def test_training_with_the_appeal_head_logs_its_loss_and_reports_both_accuracies(appeal_run):
    cfg, wd, result = appeal_run
    rows = [json.loads(r) for r in (wd / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss_appeal" in r]
    assert logged and all(np.isfinite(r["loss_appeal"]) for r in logged)
    assert 0.0 <= logged[-1]["train_appeal_accuracy"] <= 1.0
    assert "pairwise_accuracy_catalog" in result
    assert 0.0 <= result["pairwise_accuracy"] <= 1.0


def test_the_export_serves_the_appeal_head_as_the_model_scores_it(appeal_run, tmp_path):
    from jaxrec.export import export_run
    from jaxrec.selection import load_selected
    from jaxrec.serving import Recommender

    cfg, wd, _ = appeal_run
    out, _ = export_run(cfg, wd, tmp_path / "export", k=5, platforms=("cpu",))
    rec = Recommender(out)
    assert rec.has_appeal
    model, data, _ = load_selected(cfg, wd)
    assert np.abs(np.asarray(model.appeal_pool[...])).max() > 0  # the pool is served too
    assert np.abs(np.asarray(model.taste_table[...])).max() > 0  # and the taste term
    row = 0
    items, fb = data.test.items_NxL[row], data.test.feedback_NxL[row]
    history = [
        (rec.items[int(i)], data.events.feedback_types[int(f) - 1])
        for i, f in zip(items, fb, strict=True)
        if i > 0
    ]
    window = [int(i) for i in data.test.window_items_NxW[row] if i > 0]
    answer = rec.appeal([history], [[rec.items[i] for i in window] + ["no such item"]])[0]
    assert answer["unknown"] == [f"candidate {len(window)}: unknown item 'no such item'"]
    hidden = inference.user_hidden(model, jnp.asarray(items[None]), jnp.asarray(fb[None]))
    want = inference.appeal_scores(
        model, hidden, jnp.asarray([window]), jnp.asarray(items[None]), jnp.asarray(fb[None])
    )
    want = np.asarray(want)[0]
    order = np.argsort(-want, kind="stable")
    assert answer["items"] == [rec.items[window[j]] for j in order]
    np.testing.assert_allclose(
        answer["like_probability"], 1 / (1 + np.exp(-want[order])), rtol=1e-5
    )


def test_jsonl_requests_with_candidates_get_them_ordered_by_appeal(appeal_run, tmp_path):
    from jaxrec.export import export_run
    from jaxrec.serving import Recommender, recommend_lines

    cfg, wd, _ = appeal_run
    out, _ = export_run(cfg, wd, tmp_path / "export", k=5, platforms=("cpu",))
    rec = Recommender(out)
    history = [[rec.items[3], "play"], [rec.items[7], "thumbs_down"]]
    cands = [rec.items[1], rec.items[2], rec.items[5]]
    lines = [
        json.dumps({"history": history, "candidates": cands, "id": "a"}),
        json.dumps({"history": history}),
        json.dumps({"history": history, "candidates": "x"}),
    ]
    a, b, c = (json.loads(x) for x in recommend_lines(rec, lines))
    direct = rec.appeal([[tuple(e) for e in history]], [cands])[0]
    assert a["id"] == "a" and a["items"] == direct["items"]
    assert a["like_probability"] == direct["like_probability"]
    assert sorted(a["items"]) == sorted(cands)
    assert len(b["items"]) == 5 and "scores" in b  # no candidates: the top-k
    assert c["error"].startswith("candidates: expected a list")
