"""Export: the serialised recommender answers like the in-process inference path."""

import numpy as np
import pytest

from jaxrec import inference
from jaxrec.cli import main
from jaxrec.export import Recommender
from jaxrec.train import load_trained, train


def test_exported_top_k_equals_in_process_top_k(cfg, tmp_path, capsys):
    cfg.train.steps = 10
    train(cfg, tmp_path / "run", progress=False)
    main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--k", "5"])
    rec = Recommender(tmp_path / "exp")
    model, data, _ = load_trained(cfg, tmp_path / "run")
    items, fb = data.test.items_NxL[:3], data.test.feedback_NxL[:3]
    want_ids, want_scores = inference.top_k(
        inference.user_query(model, items, fb), model.item_table(), 5
    )
    for b in (1, 3):  # any batch size
        ids, scores = rec._fn.call(items[:b], fb[:b])
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(want_ids)[:b])
        np.testing.assert_allclose(np.asarray(scores), np.asarray(want_scores)[:b], rtol=1e-5)

    # Through source ids and feedback names, from the command line.
    ev = data.events
    row = data.test.items_NxL[0]
    hist = [
        (ev.item_vocab[i], ev.feedback_types[f - 1])
        for i, f in zip(row, data.test.feedback_NxL[0], strict=True)
        if i
    ]
    top = rec(hist)
    assert [t[0] for t in top] == [ev.item_vocab[i] for i in np.asarray(want_ids)[0]]
    capsys.readouterr()
    main(
        [
            "recommend",
            "--export",
            str(tmp_path / "exp"),
            "--history",
            ",".join(f"{i}:{f}" for i, f in hist),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert [int(x.split("\t")[1]) for x in lines] == [t[0] for t in top]
    with pytest.raises(ValueError, match="unknown feedback type"):
        rec([(hist[0][0], "meh")])
