"""The feedback-mix analyses (jaxrec/experiments/feedback_mix.py, embeddings.py) use the run's
own split."""

import numpy as np

from jaxrec.assembly import prepare_data
from jaxrec.data import simulator
from jaxrec.data.sequences import split_labels

TYPES = simulator.FEEDBACK_TYPES


# Experiment analyses use the run's own split.


def test_history_shares_and_dominant_type_follow_the_runs_split(cfg):
    from jaxrec.experiments.embeddings import dominant_type
    from jaxrec.experiments.feedback_mix import history_shares

    cfg.data.split = "temporal"
    cfg.data.negative_keep_fraction = 0.5
    data = prepare_data(cfg)
    assert (data.labels != split_labels(data.events, int(cfg.data.window))).any()
    shares = history_shares(data.events, data.labels, data.test.context_N)
    keep = (data.labels >= 0) & (data.labels < 2)
    for row, c in enumerate(data.test.context_N[:20]):
        sel = keep & (data.events.context == c)
        counts = np.bincount(data.events.feedback[sel], minlength=len(TYPES))
        np.testing.assert_allclose(shares[row], counts / counts.sum())
    dom = dominant_type(data.events, data.labels)
    train_part = data.labels == 0
    item = int(data.events.item[train_part][0])
    fb = data.events.feedback[train_part & (data.events.item == item)]
    assert dom[item] == np.bincount(fb, minlength=len(TYPES)).argmax()
