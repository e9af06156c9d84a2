"""Serving: the loader's checks, the serving rules inside the export, and bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.cli import main
from jaxrec.serving import ArtifactError, Recommender, UnknownInput
from jaxrec.train import train
from tests.devices import run_on_fake_devices
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """A 10-step tiny run exported twice (CPU only): default rules, and --exclude_heard."""
    cfg = tiny_config()
    cfg.train.steps = cfg.train.eval_every = cfg.train.checkpoint_every = 10
    root = tmp_path_factory.mktemp("serving")
    train(cfg, root / "run", progress=False)
    common = ["export", "--workdir", str(root / "run"), "--k", "5", "--platforms", "cpu"]
    main([*common, "--out", str(root / "exp")])
    main([*common, "--out", str(root / "heard"), "--exclude_heard"])
    return root


@pytest.fixture(scope="module")
def rec(exp):
    return Recommender(exp / "exp")


def history(rec, n, seed=0, types=("play", "thumbs_up")):
    rng = np.random.default_rng(seed)
    items = rng.choice(np.arange(1, len(rec.items)), n, replace=False)
    return [(rec.items[int(i)], str(rng.choice(types))) for i in items]


def recommend_cli(capsys, *args):
    capsys.readouterr()
    main(["recommend", *args])
    return capsys.readouterr()


# ---------------------------------------------------------------- the artifact and its checks
def test_loader_imports_no_flax_and_no_training_code(exp, rec):
    hist = history(rec, 6)
    code = f"""
import json, sys
for name in ("flax", "optax", "orbax", "orbax.checkpoint", "ml_collections", "grain",
             "jaxrec.model", "jaxrec.train", "jaxrec.export", "jaxrec.inference"):
    sys.modules[name] = None  # any import of these now fails
from jaxrec.serving import Recommender
rec = Recommender({str(exp / "exp")!r})
print(json.dumps(rec.recommend([{hist!r}])[0]))
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want = rec.recommend([hist])[0]
    assert got["items"] == want["items"]
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)


@pytest.fixture
def copy(exp, tmp_path):
    shutil.copytree(exp / "exp", tmp_path / "e")
    return tmp_path / "e"


def test_tampered_byte_is_refused(copy, capsys):
    path = copy / "recommend.jax"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match=r"file recommend.jax fails its SHA-256"):
        Recommender(copy)
    with pytest.raises(SystemExit, match="jaxrec recommend: .*recommend.jax"):
        main(["recommend", "--export", str(copy), "--history", ""])


def test_truncated_file_is_refused(copy):
    path = copy / "item_embeddings.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ArtifactError, match=r"file item_embeddings.npy has \d+ bytes"):
        Recommender(copy)


def test_missing_file_is_refused(copy):
    (copy / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="missing file vocab.json"):
        Recommender(copy)


def test_extra_file_is_refused(copy):
    (copy / "sub").mkdir()
    (copy / "sub" / "notes.txt").write_text("hi")
    with pytest.raises(ArtifactError, match="unexpected file sub/notes.txt"):
        Recommender(copy)


def test_missing_manifest_or_dir_is_refused(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="missing file manifest.json"):
        Recommender(copy)
    with pytest.raises(ArtifactError, match="no such export directory"):
        Recommender(copy / "nope")


def test_export_refuses_a_foreign_nonempty_dir(exp, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a jaxrec export"):
        main(["export", "--workdir", str(exp / "run"), "--out", str(tmp_path / "x")])
    assert (tmp_path / "x" / "mine.txt").exists()


# ---------------------------------------------------------------- serving rules
def test_negative_feedback_items_are_never_recommended(rec):
    base = history(rec, 5, seed=1)
    top1 = rec.recommend([base])[0]["items"][0]
    for negative in ("thumbs_down", "skip"):  # the tiny run's feedback.negative
        answer = rec.recommend([[*base, (top1, negative)]])[0]
        assert top1 not in answer["items"]
    # Over many random mixed histories: no item with a negative event is ever returned.
    hists = [history(rec, 8, seed=s, types=rec.feedback_types) for s in range(40)]
    for h, answer in zip(hists, rec.recommend(hists), strict=True):
        negatives = {i for i, f in h if f in ("thumbs_down", "skip")}
        assert not negatives & set(answer["items"])
        assert len(answer["items"]) == 5


def test_exclude_heard(exp):
    heard = Recommender(exp / "heard")
    assert heard.manifest["serving"]["exclude_heard"] is True
    hists = [history(heard, 10, seed=s) for s in range(20)]
    for h, answer in zip(hists, heard.recommend(hists), strict=True):
        assert not {i for i, _ in h} & set(answer["items"])


def test_empty_history_gets_the_most_popular_items(rec, capsys):
    answer = rec.recommend([[]])[0]
    assert answer["cold_start"] and answer["items"] == rec.popularity[:5]
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    out = recommend_cli(capsys, "--export", str(rec.path), "--history", "")
    assert [int(x.split("\t")[1]) for x in out.out.splitlines()] == rec.popularity[:5]
    assert "most popular" in out.err
    # A history whose events are all unknown is empty too.
    answer = rec.recommend([[("no-such-item", "play")]])[0]
    assert answer["cold_start"] and answer["items"] == rec.popularity[:5]


def test_long_history_keeps_the_newest_max_len(rec):
    long = history(rec, rec.max_len + 7, seed=2)
    a, b = rec.recommend([long, long[-rec.max_len :]])
    assert a["items"] == b["items"]
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-6)
    items, _, _ = rec.encode([long])
    assert items.shape == (1, rec.max_len)


def test_k(rec, capsys):
    h = history(rec, 4)
    out = recommend_cli(capsys, "--export", str(rec.path), "--history", _fmt(h), "-k", "3")
    assert len(out.out.splitlines()) == 3
    with pytest.raises(SystemExit, match="k: between 1 and 5"):
        main(["recommend", "--export", str(rec.path), "--history", _fmt(h), "-k", "9"])


# ---------------------------------------------------------------- bad inputs
def _fmt(h):
    return ",".join(f"{i}:{f}" for i, f in h)


def test_unknown_items_and_feedback_skip_or_error(rec, capsys):
    h = history(rec, 4)
    bad = [*h[:2], ("no-such-item", "play"), (h[2][0], "meh"), *h[2:]]
    answer = rec.recommend([bad])[0]
    assert answer["items"] == rec.recommend([h])[0]["items"]  # the unknown ones are skipped
    assert answer["unknown"][0] == "event 2: unknown item 'no-such-item'"
    assert answer["unknown"][1].startswith("event 3: unknown feedback type 'meh'; known: [")
    with pytest.raises(UnknownInput, match="history 0: event 2: unknown item 'no-such-item'"):
        rec.recommend([bad], on_unknown="error")
    out = recommend_cli(capsys, "--export", str(rec.path), "--history", _fmt(bad))
    assert "skipped event 2: unknown item 'no-such-item'" in out.err
    assert "unknown feedback type 'meh'" in out.err
    args = ["recommend", "--export", str(rec.path), "--history", _fmt(bad)]
    with pytest.raises(SystemExit, match="unknown item 'no-such-item'"):
        main([*args, "--on_unknown", "error"])


def test_malformed_history_is_refused(rec):
    with pytest.raises(SystemExit, match="malformed event 'abc': expected item:feedback"):
        main(["recommend", "--export", str(rec.path), "--history", "abc"])
    with pytest.raises(SystemExit, match="one of --history or --input"):
        main(["recommend", "--export", str(rec.path)])


def test_jsonl_input_one_answer_per_line_in_order(rec, capsys, tmp_path):
    h = history(rec, 4)
    pairs = [[i, f] for i, f in h]
    lines = [
        json.dumps({"id": "a", "history": pairs}),
        json.dumps(pairs),
        json.dumps(_fmt(h)),
        json.dumps({"history": [{"item": i, "feedback": f} for i, f in h]}),
        "",  # blank: not a request
        json.dumps([*pairs, ["no-such-item", "play"]]),
        "{not json",
        json.dumps({"items": pairs}),
        json.dumps([[1, 2, 3]]),
        json.dumps([]),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    args = ["--export", str(rec.path), "--input", str(tmp_path / "in.jsonl")]
    out = [json.loads(x) for x in recommend_cli(capsys, *args).out.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    want = rec.recommend([h])[0]["items"]
    assert out[0]["id"] == "a"
    for o in out[:5]:
        assert o["items"] == want and not o["cold_start"]
    assert out[4]["unknown"] == ["event 4: unknown item 'no-such-item'"]
    assert out[5]["error"].startswith("not JSON")
    assert "history" in out[6]["error"]
    assert out[7]["error"].startswith("event 0: expected")
    assert out[8]["cold_start"] and out[8]["items"] == rec.popularity[:5]
    # --on_unknown error refuses that line only.
    out = [
        json.loads(x)
        for x in recommend_cli(capsys, *args, "--on_unknown", "error").out.split("\n")
        if x
    ]
    assert out[4] == {"line": 6, "error": "event 4: unknown item 'no-such-item'"}
    assert out[0]["items"] == want


# ---------------------------------------------------------------- export across meshes
_TRAIN_ON_8 = """
import json, sys
import jax
from jaxrec.train import train
from tests.tiny import tiny_config

cfg = tiny_config()
cfg.mesh.shape = (4, 2)
cfg.train.steps = cfg.train.eval_every = cfg.train.checkpoint_every = 10
train(cfg, sys.argv[1], progress=False)
print("RESULT " + json.dumps({"devices": jax.device_count()}))
"""


def test_export_of_a_checkpoint_from_another_mesh_equals_the_in_process_model(tmp_path):
    """Trained and checkpointed on a (4, 2) mesh of 8 devices, exported here on 1 device: the
    export's top-k and user vectors are those of the model ``load_selected`` restores here."""
    from ml_collections import ConfigDict

    from jaxrec import inference
    from jaxrec.export import export_run
    from jaxrec.selection import load_selected

    wd = tmp_path / "run"
    assert run_on_fake_devices(_TRAIN_ON_8, str(wd))["devices"] == 8

    cfg = ConfigDict(json.loads((wd / "config.json").read_text()))
    assert list(cfg.mesh.shape) == [4, 2]
    cfg.mesh.shape = (-1, 1)  # this process has one device
    model, data, step = load_selected(cfg, wd)
    k = 5
    path, exported_step = export_run(
        cfg, wd, tmp_path / "exp", k=k, platforms=("cpu",), exclude_feedback=()
    )
    assert exported_step == step
    rec = Recommender(path)

    items, fb = data.test.items_NxL, data.test.feedback_NxL
    rows = np.flatnonzero((items > 0).any(axis=1))[:64]
    items, fb = items[rows], fb[rows]
    vocab, types = data.events.item_vocab, data.events.feedback_types
    histories = [
        [(vocab[i].item(), types[f - 1]) for i, f in zip(it, f_, strict=True) if i > 0]
        for it, f_ in zip(items, fb, strict=True)
    ]
    enc_items, enc_fb, problems = rec.encode(histories, on_unknown="error")
    np.testing.assert_array_equal(enc_items, items)  # same encoding, so same model inputs
    np.testing.assert_array_equal(enc_fb, fb)
    assert not any(problems)

    query = np.asarray(inference.user_query(model, jnp.asarray(items), jnp.asarray(fb)))
    np.testing.assert_allclose(rec.user_vectors(histories), query, rtol=1e-5, atol=1e-5)
    want_ids, want_scores = inference.top_k(jnp.asarray(query), model.item_table(), k)
    answers = rec.recommend(histories)
    got_ids = np.array([[rec.item_index(i) for i in a["items"]] for a in answers])
    got_scores = np.array([a["scores"] for a in answers])
    np.testing.assert_allclose(got_scores, np.asarray(want_scores), rtol=1e-5, atol=1e-5)
    same = (got_ids == np.asarray(want_ids)).all(axis=1)
    # Ids may only differ where scores tie (to float precision).
    gap = np.abs(np.diff(np.asarray(want_scores), axis=1)).min(axis=1)
    assert (same | (gap < 1e-4)).all() and same.mean() > 0.9
