"""The quickstart config at growing numbers of simulated listeners (``jaxrec experiment scaling``).

    jaxrec experiment scaling --config configs/scaling.py --seeds 1 --out runs/scaling

Each size trains as many passes over its data as the quickstart does over 3,000 listeners
(steps scaled by size). Sizes: ``experiment.scaling_listeners``. Measured (the listener x item
and catalog repeat terms on; docs/results/README.md): 30,000 listeners with the taste term
(inherited from the quickstart), 3 seeds, 13 epochs = 6,058 steps, 36-37 min each on one core
while the other ran a second seed: pairs 0.8230 pooled, 61% of the way from
item_appeal_repeats to the history ceiling; 100,000 listeners before the taste term, one
seed, 13 epochs = 20,176 steps, 101 min on 2 cores shared with other jobs. Those runs selected
their last validation, still rising, and said so: the budget is the quickstart's passes over
the data on purpose, so that sizes compare at equal epochs.
"""

from pathlib import Path

from ml_collections import ConfigDict

from jaxrec.cli_args import load_config_module

base_config = load_config_module(Path(__file__).with_name("quickstart.py")).get_config


def get_config() -> ConfigDict:
    c = base_config()
    # Published without the catalog repeat term by default (the 30k point names it).
    c.model.catalog_repeats = False
    c.loss.counterfactual_weight = 0.0
    # and with the sampled softmax, without the appeal pool (the settings of its report).
    c.model.appeal_pool = False
    c.loss.full_softmax_weight, c.loss.sampled_weight = 0.0, 1.0
    c.experiment.scaling_listeners = (3000, 30000, 100000)
    return c
