"""Export: the serialised functions answer like the in-process inference path."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx

from jaxrec import export, inference
from jaxrec.cli import main
from jaxrec.model import SequenceModel
from jaxrec.selection import load_selected
from jaxrec.serving import Recommender
from jaxrec.train import train
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 30-step tiny run (checkpoints at 15 and 30), exported at its selected step."""
    cfg = tiny_config()
    root = tmp_path_factory.mktemp("export")
    train(cfg, root / "run", progress=False)
    main(["export", "--workdir", str(root / "run"), "--out", str(root / "exp"), "--k", "5"])
    model, data, step = load_selected(cfg, root / "run")
    return cfg, root, model, data, step


def random_histories(rng, n, num_items, num_types, max_len, min_len=1):
    items = np.zeros((n, max_len), np.int32)
    fb = np.zeros((n, max_len), np.int32)
    for r in range(n):
        length = rng.integers(min_len, max_len + 1)
        items[r, max_len - length :] = rng.integers(1, num_items + 1, length)
        fb[r, max_len - length :] = rng.integers(1, num_types + 1, length)
    return items, fb


def test_exported_top_k_and_vectors_equal_in_process(run):
    cfg, root, model, data, step = run
    rec = Recommender(root / "exp")
    ev = data.events
    rng = np.random.default_rng(0)
    items, fb = random_histories(
        rng, 37, ev.num_items, len(ev.feedback_types), int(cfg.data.max_len)
    )
    items = np.concatenate([items, data.test.items_NxL[:5]])
    fb = np.concatenate([fb, data.test.feedback_NxL[:5]])
    query = inference.user_query(model, items, fb)
    # Default serving rule: items given a feedback.negative type in the history are excluded.
    neg = np.array([False] + [t in cfg.feedback.negative for t in ev.feedback_types])
    exclude = np.where(neg[fb], items, 0)
    want_ids, want_scores = inference.top_k(query, model.item_table(), 5, exclude)
    for b in (1, 3, len(items)):  # any batch size
        ids, scores = rec._recommend.call(items[:b], fb[:b])
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids)[:b])
        np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores)[:b], rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(rec._query.call(items, fb)), np.asarray(query), rtol=1e-5, atol=1e-6
    )

    # Through source ids and feedback names (Recommender.recommend / user_vectors).
    hists = [
        [(ev.item_vocab[i], ev.feedback_types[f - 1]) for i, f in zip(ri, rf, strict=True) if i]
        for ri, rf in zip(items, fb, strict=True)
    ]
    answers = rec.recommend(hists)
    assert [a["items"] for a in answers] == [
        [ev.item_vocab[i].item() for i in row] for row in np.asarray(want_ids)
    ]
    assert not any(a["cold_start"] or a["unknown"] for a in answers)
    np.testing.assert_allclose(rec.user_vectors(hists), np.asarray(query), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.item_embeddings, np.asarray(model.item_table()), rtol=1e-6)
    assert [t[0] for t in rec(hists[0])] == answers[0]["items"]


def test_export_without_rules_is_plain_top_k(run, tmp_path):
    cfg, _, model, data, _ = run
    ev = data.events
    export.export(
        model, int(cfg.data.max_len), 7, tmp_path / "plain", ev.item_vocab, ev.feedback_types,
        ("cpu",),
    )  # fmt: skip
    rec = Recommender(tmp_path / "plain")
    items, fb = data.test.items_NxL[:8], data.test.feedback_NxL[:8]
    want_ids, want_scores = inference.top_k(
        inference.user_query(model, items, fb), model.item_table(), 7
    )
    ids, scores = rec._recommend.call(items, fb)
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores), rtol=1e-5)


def test_manifest(run):
    cfg, root, _, data, step = run
    m = json.loads((root / "exp" / "manifest.json").read_text())
    assert m["step"] == step == 30
    assert set(m["versions"]) >= {"jaxrec", "jax", "jaxlib"} and m["versions"]["jax"]
    assert m["config"]["data"]["max_len"] == cfg.data.max_len
    assert m["platforms"] == ["cpu", "cuda", "tpu"]
    assert "pairwise_accuracy" in m["metrics"]["valid"]
    assert "pairwise_accuracy" in m["metrics"]["test"]
    assert m["serving"]["exclude_feedback"] == list(cfg.feedback.negative)
    assert m["serving"]["exclude_heard"] is False
    rec_fn = m["functions"]["recommend"]
    assert rec_fn["inputs"][0] == {"name": "items", "shape": ["b", 12], "dtype": "int32"}
    assert rec_fn["outputs"][0] == {"name": "ids", "shape": ["b", 5], "dtype": "int32"}
    assert rec_fn["outputs"][1]["dtype"] == "float32"
    d = cfg.model.width
    assert m["functions"]["query"]["outputs"][0]["shape"] == ["b", d]
    assert m["item_embeddings"]["shape"] == [data.events.num_items + 1, d]
    assert m["item_embeddings"]["last_column_is_bias"] is False
    assert set(m["files"]) == {
        "recommend.jax", "query.jax", "item_embeddings.npy", "popularity.npy", "vocab.json"
    }  # fmt: skip


def test_export_of_a_given_step(run, capsys):
    cfg, root, *_ = run
    main(["export", "--workdir", str(root / "run"), "--out", str(root / "exp15"), "--step", "15"])
    assert "step-15" in capsys.readouterr().out
    m = json.loads((root / "exp15" / "manifest.json").read_text())
    assert m["step"] == 15
    assert "test" not in m["metrics"]  # eval_test.json measured step 30
    model15, data, _ = load_selected(cfg, root / "run", 15)
    items, fb = data.test.items_NxL[:4], data.test.feedback_NxL[:4]
    q = Recommender(root / "exp15")._query.call(items, fb)
    np.testing.assert_allclose(
        np.asarray(q), np.asarray(inference.user_query(model15, items, fb)), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint of step 7; saved steps: \[0, 15, 30\]"
    ):
        load_selected(cfg, root / "run", 7)


def test_item_bias_export(tmp_path):
    cfg = tiny_config()
    cfg.model.item_bias = True
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, 12, rngs=nnx.Rngs(params=0))
    types = ("thumbs_up", "play", "skip", "thumbs_down")
    export.export(model, 12, 4, tmp_path / "e", np.arange(-1, 30), types, ("cpu",))
    rec = Recommender(tmp_path / "e")
    assert rec.manifest["item_embeddings"]["last_column_is_bias"] is True
    table = rec.item_embeddings
    assert table.shape == (31, cfg.model.width + 1)
    vec = rec.user_vectors([[(3, "play"), (5, "thumbs_up")]])
    assert vec.shape == (1, cfg.model.width + 1) and vec[0, -1] == 1.0
    answer = rec.recommend([[(3, "play"), (5, "thumbs_up")]])[0]
    scores = vec[0] @ table.T
    np.testing.assert_allclose(answer["scores"], np.sort(scores[1:])[::-1][:4], rtol=1e-5)


def test_export_never_moves_a_damaged_checkpoint(run, tmp_path, capsys):
    cfg, root, *_ = run
    shutil.copytree(root / "run", tmp_path / "run")
    bests = [p.name for p in (tmp_path / "run" / "best").iterdir() if p.name.isdigit()]
    assert "30" in bests  # and the validation at initialisation's step 0
    for s in bests:
        (tmp_path / "run" / "best" / s / "jaxrec_checksums.json").unlink()
    main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "e"), "-k", "3"])
    assert "step-30" in capsys.readouterr().out  # from checkpoints/30
    assert (tmp_path / "run" / "best" / "30").is_dir()
    assert not (tmp_path / "run" / "damaged").exists()
    for s in ("15", "30"):
        (tmp_path / "run" / "checkpoints" / s / "jaxrec_checksums.json").unlink()
    with pytest.raises(SystemExit, match="no intact checkpoint to load"):
        main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "e")])


def test_responsiveness_on_a_trained_model(run):
    from jaxrec.eval.responsiveness import responsiveness

    cfg, _, model, data, _ = run
    types = data.events.feedback_types
    r = responsiveness(
        model,
        data.test.items_NxL[:40],
        data.test.feedback_NxL[:40],
        negative_type=types.index("thumbs_down") + 1,
        neutral_type=types.index("play") + 1,
        k=10,
    )
    assert r["sequences"] == 40
    for name in ("negative", "neutral"):
        assert r[name]["top1"]["in_top_k_before"] == 40
        assert 0.0 <= r[name]["top1"]["left_top_k"] <= 1.0
        assert 0 <= r[name]["neighbours"]["in_top_k_before"] <= 400
