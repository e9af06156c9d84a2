"""Spotify Music Streaming Sessions (the paper's public dataset), 10,000-session subset.

Sessions are the contexts (MSSD has no user ids). `complete` plays are positives, `skip`
(skipped early, the challenge's skip_2) explicit negatives, `partial` plays input only.

    jaxrec train --config configs/spotify_sessions.py --workdir runs/spotify

The catalog head: the full softmax (from the quickstart) with the skips as explicit negatives,
the explicit contrast over the next 4 events (weight 3) and a learned item bias started at the
logit of each track's training positive rate. The appeal head (which orders a session's pairs)
starts at the item_appeal_taste fit (item effects, repeats and the session's taste through ALS
item factors, codes below) and reads item-kNN over the session's reactions (model.appeal_pool,
from the quickstart); its item effects stay at the fit, its repeat and pool weights and mood
train. The catalog score also reads the session's earlier reactions to each
track (model.catalog_repeats, docs/losses.md): sessions replay tracks, and the learned weights
say a track completed earlier is likely again while the one just heard is not.
Measured (3 seeds, 2026-12-07, code of ec94e8f, 24 epochs = 1,512 steps, 5-9 min each,
`python -m bench.pooled_comparison` on the three workdirs): test HR@10 0.3843 / 0.3928 /
0.3719, NDCG@10 0.2166 / 0.2175 / 0.2110, both beating the best baseline, ease_repeats 0.2811 /
0.1425 (HR@10 +0.1019 [+0.0895, +0.1147]); pairwise accuracy 0.6104 / 0.6103 / 0.6083, pooled
0.6096, above item_appeal 0.6008 (+0.0089 [+0.0003, +0.0177]) and level with item_appeal_taste
0.6083 (+0.0013 [-0.0022, +0.0050]). Before the taste term: pairs 0.6054 pooled. With the
sampled softmax and no pool (an earlier config, seeds 0-2): HR@10 0.3754 / 0.3652 / 0.3724.
The run selects its last validation (and says so): the cosine schedule decays to a tenth of
the rate there.
"""

from pathlib import Path

from jaxrec.cli_args import load_config_module
from jaxrec.data.paths import data_dir

base_config = load_config_module(Path(__file__).with_name("quickstart.py")).get_config


def get_config():
    c = base_config()
    # No thumbs-down in sessions: the repeat weights learn from the data alone.
    c.loss.counterfactual_weight = 0.0
    c.data.source = "spotify-sessions"
    c.data.path = str(data_dir() / "spotify-sessions" / "mini-spotify-data.csv")
    c.data.window = 4  # sessions hold 15-20 plays: 4 for test, 4 for validation
    c.data.max_len = 20
    c.data.max_explicit = 8
    c.feedback.input = ("complete", "partial", "skip")
    c.feedback.positive = ("complete",)
    c.feedback.negative = ("skip",)
    c.feedback.codes = {"complete": 1.0, "partial": 0.0, "skip": -1.0}
    c.model.item_bias = True
    c.model.item_bias_init = "positive_rate"  # start from item quality, learn the rest
    # +9 points of HR@10 over the same config without it (3 seeds, docs/results/README.md).
    c.model.catalog_repeats = True
    c.loss.contrast_weight = 3.0
    # The appeal head orders a session's pairs. Nothing it learned per item here beat its
    # starting point on validation (docs/results/README.md, "The appeal head"), so its item
    # appeal stays at that start, the item_appeal_repeats fit (item quality with each
    # session's mood taken out); the repeat weights and the mood c(h) train.
    c.model.appeal_head = True
    c.model.appeal_personal = False
    c.optim.appeal_bias_lr_multiplier = 0.0
    # The pair order moves by tenths of a point: select on the catalog ranking.
    c.train.select_metric = "ndcg@10"
    c.data.contrast_window = 4
    c.train.batch_size = 128
    c.train.epochs = 24.0  # 63 steps per epoch on the 10,000-session subset
    c.train.eval_every_epochs = 4.0
    c.train.checkpoint_every = 252
    return c
