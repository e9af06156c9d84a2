"""Why sampled BCE ranks the catalog below chance on Spotify sessions (issue 8, item 7).

    python -m bench.bce_diagnosis runs/bce/softmax runs/bce/bce runs/bce/bce_noexp

For each finished run (``jaxrec train`` workdirs of configs/spotify_sessions.py with
overrides), prints the median catalog rank of the test windows' next positive, and how the
model's top-10 splits between items seen in training and items never played there, with their
training plays, positives and explicit-negative counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jaxrec import inference
from jaxrec.base_config import complete
from jaxrec.eval.evaluator import Evaluator
from jaxrec.selection import load_selected


def main(workdirs: list[str]) -> None:
    for wd in workdirs:
        cfg = complete(ConfigDict(json.loads((Path(wd) / "config.json").read_text())), saved=True)
        model, data, _ = load_selected(cfg, wd)
        train = data.labels == 0
        item, fb = data.events.item[train], data.events.feedback[train]
        v = data.events.num_items + 1
        plays = np.bincount(item, minlength=v)
        pos = np.bincount(item[data.roles.positive_T[fb]], minlength=v)
        neg = np.bincount(item[data.roles.negative_T[fb]], minlength=v)
        _, ranks = Evaluator(cfg.eval).scores(model, data.test)
        rows = np.arange(min(512, len(data.test)))
        query = inference.user_query(
            model, jnp.asarray(data.test.items_NxL[rows]), jnp.asarray(data.test.feedback_NxL[rows])
        )
        top, _ = inference.top_k(query, model.item_table(), 10)
        top = np.asarray(top).ravel()
        unseen = plays[top] == 0
        print(
            f"{wd}: median rank of the next positive {np.median(ranks):.0f} of {v - 1}; "
            f"top-10 items never played in training: {unseen.mean():.1%} "
            f"(catalog share {np.mean(plays[1:] == 0):.1%}); top-10 items seen in training: "
            f"mean plays {plays[top][~unseen].mean() if (~unseen).any() else 0:.1f}, "
            f"positives {pos[top][~unseen].mean() if (~unseen).any() else 0:.1f}, "
            f"explicit negatives {neg[top][~unseen].mean() if (~unseen).any() else 0:.1f}; "
            f"all played items: mean plays {plays[plays > 0].mean():.1f}, "
            f"explicit negatives / positives {neg.sum() / max(pos.sum(), 1):.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
