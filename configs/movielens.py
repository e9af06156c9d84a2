"""MovieLens-100k ratings: 4-5 stars thumbs_up, 1-2 thumbs_down, 3 neutral (input only).

    jaxrec train --config configs/movielens.py --workdir runs/ml100k

Leave-last-out with a window of 1 gives the usual leave-one-out protocol for HR@10/NDCG@10
(full ranking, seen movies filtered; users whose last rating is not a thumbs_up are not
ranked). Every rating is a training target (``feedback.target``): any rating says the user
chose the movie, and learning from all of them is what lets the model beat EASE; only
thumbs-ups are judged. Pairwise accuracy needs a positive and a negative in one window: use
--config.data.window=5 with --config.feedback.negative="('thumbs_down',)" and
--config.feedback.target="('thumbs_up', 'neutral')" for that.

Measured (2026-12-07, 54 epochs = 1,998 steps, 4 validations; 5.5 min a run on one core
while the other ran another job): test HR@10 0.2428 / 0.2490 / 0.2346 and NDCG@10 0.1440 /
0.1466 / 0.1365 (seeds 0 / 1 / 2) on the 486 ranked users; pooled 0.2421 / 0.1424 against the
best baseline EASE's 0.1831 / 0.0988 (HR@10 +0.0590 [+0.0224, +0.0952], NDCG@10 +0.0435
[+0.0205, +0.0648]: beats; with the thumbs-up targets it had before: 0.1941 / 0.1037, level).
Seed 1 selected epoch 40.5; seeds 0 and 2 their last validation, still rising, and their runs
say so (why 54 epochs all the same: the comment at ``c.train.epochs``). Details and the
held-out checks: docs/results/README.md ("Learning from every rating").
"""

from pathlib import Path

from jaxrec.cli_args import load_config_module
from jaxrec.data.paths import data_dir

base_config = load_config_module(Path(__file__).with_name("quickstart.py")).get_config


def get_config():
    c = base_config()
    # Measured without the catalog repeat term (a rating is never repeated): off.
    c.model.catalog_repeats = False
    c.loss.counterfactual_weight = 0.0
    c.data.source = "movielens"
    c.data.path = str(data_dir() / "movielens-100k" / "ml-100k.inter")
    c.data.window = 1
    # Width 64 (the quickstart's), max_len 50, dropout 0.2, learning rate 2e-3 and the cosine
    # schedule were each checked against other values on a held-out part of the data too;
    # no other value won on validation on both (docs/results/README.md, "The last catalog
    # defaults").
    c.data.max_len = 50
    c.feedback.input = ("thumbs_up", "neutral", "thumbs_down")
    c.feedback.positive = ("thumbs_up",)  # what evaluation ranks
    # Learn the next rating of any kind: 3x the targets of thumbs-ups alone. A target cannot
    # be an explicit negative, so thumbs-downs are inputs and targets only.
    c.feedback.target = ("thumbs_up", "neutral", "thumbs_down")
    c.feedback.negative = ()
    c.feedback.codes = {"thumbs_up": 1.0, "neutral": 0.0, "thumbs_down": -1.0}
    c.model.dropout = 0.2
    c.train.batch_size = 64
    # 37 steps per epoch on ML-100k (about 2,000 steps); a larger log gets proportionally
    # more. Validation with window 1 is noisy (one rating per user): with validation every 5
    # epochs and patience 3 a run stopped at epoch 35 on a noisy dip, so no patience. Two
    # seeds of three select the last validation here; 81 epochs let them select earlier at
    # the same test figures, but on a sparse held-out part the longer schedule let the noisy
    # validation pick later, overfit models (docs/results/README.md): 54 it is.
    c.train.epochs = 54.0
    c.train.eval_every_epochs = 13.5
    c.train.early_stop_patience = 0
    c.train.checkpoint_every = 500
    c.train.select_metric = "ndcg@10"  # window 1 has no (liked, disliked) pairs
    c.eval.filter_seen = True  # a movie is rated once: never recommend a seen one
    # Window 1 has no pairs for an appeal head to order: the catalog model alone, as measured.
    c.model.appeal_head = False
    c.loss.appeal_weight = 0.0
    c.data.contrast_window = 0
    return c
