"""Piki Music (likes, superlikes and dislikes of songs), the 50-user evaluation histories.

    jaxrec train --config configs/piki.py --workdir runs/piki

The shared sample is tiny (894 events); point data.path at the full piki_dataset.csv
(github.com/sstoikov/piki-music-dataset) for a real run. On the sample (2026-12-07): 28 s on
2 cores shared with other jobs, 100 epochs = 200 steps, the model selected at epoch 50 of 100;
its test figures are level with the baselines (HR@10 0 for both): too few events to learn from.
"""

from pathlib import Path

from jaxrec.cli_args import load_config_module
from jaxrec.data.paths import data_dir

base_config = load_config_module(Path(__file__).with_name("quickstart.py")).get_config


def get_config():
    c = base_config()
    # Measured without the catalog repeat term: off (the quickstart turns it on).
    c.model.catalog_repeats = False
    c.loss.counterfactual_weight = 0.0
    # Also measured with the sampled softmax and without the appeal pool.
    c.model.appeal_pool = False
    c.loss.full_softmax_weight, c.loss.sampled_weight = 0.0, 1.0
    c.data.source = "piki"
    c.data.path = str(data_dir() / "piki-sample" / "piki_eval.histories")
    c.data.window = 3
    c.data.max_len = 20
    c.feedback.input = ("superlike", "like", "dislike")
    c.feedback.positive = ("superlike", "like")
    c.feedback.negative = ("dislike",)
    c.feedback.codes = {"superlike": 1.0, "like": 0.5, "dislike": -1.0}
    c.model.width = 32
    c.loss.num_random_negatives = 32
    c.train.batch_size = 16
    c.train.epochs = 100.0  # 2 steps per epoch on the 50-user sample
    c.train.eval_every_epochs = 50.0
    c.train.early_stop_patience = 0  # two validations: nothing to be patient about
    c.train.log_every = 50
    c.train.checkpoint_every = 100
    c.eval.batch_size = 64
    return c
