"""Template: your own explicit-ratings log (user, item, rating, timestamp), read by ``csv``.

configs/movielens.py with the MovieLens file described by a mapping instead of read by its
adapter, so the same mapping reads any ratings file. For yours, edit in ``get_config``:

* ``c.data.path``: your file (or ``--config.data.path=ratings.csv`` on the command line);
* ``"delimiter"``: ``","`` for a CSV (the shipped file is a TSV); ``"header": False`` if it has
  none (``columns`` then names 0-based positions);
* ``"columns"``: your header's names for user, item, rating and timestamp (drop ``timestamp`` if
  there is none: rows in file order are then each user's time; ``timestamp_format`` for dates);
* ``"thresholds"``: a rating gets the type of the largest minimum it reaches, e.g. for 1-10
  scores ``[[8, "thumbs_up"], [5, "neutral"], [1, "thumbs_down"]]``; below all: dropped.

    jaxrec train --config configs/ratings.py --workdir runs/ratings

Leave-last-out, window 1, full ranking of the catalog (users whose last rating is not a
thumbs_up are not ranked), as configs/movielens.py. The mapping reads the same events as the
movielens adapter (tests/e2e/test_templates.py), so the run is that config's (the figures
and wall clock in configs/movielens.py).
"""

from pathlib import Path

from ml_collections import ConfigDict

from jaxrec.cli_args import load_config_module
from jaxrec.data.paths import data_dir

base_config = load_config_module(Path(__file__).with_name("movielens.py")).get_config


def get_config():
    c = base_config()
    c.data.source = "csv"
    # Header: user_id:token  item_id:token  rating:float  timestamp:float (tab-separated).
    c.data.path = str(data_dir() / "movielens-100k" / "ml-100k.inter")
    c.data.options = ConfigDict(
        {
            "delimiter": "\t",
            "columns": {
                "user_id": "user_id:token",
                "item_id": "item_id:token",
                "feedback": "rating:float",
                "timestamp": "timestamp:float",
            },
            # The movielens adapter's split: >= 4 thumbs_up, <= 2 thumbs_down, else neutral
            # (2.5 rather than 3 keeps half-star 2.5 neutral, as the adapter does).
            "feedback": {"thresholds": [[4, "thumbs_up"], [2.5, "neutral"], [0, "thumbs_down"]]},
            # The vocabulary in the adapter's order (its index is the input token's type id).
            "feedback_types": ["thumbs_up", "neutral", "thumbs_down"],
        }
    )
    # Roles, as configs/movielens.py: every rating is history and a next item to learn; a 4-5
    # is what evaluation ranks.
    c.feedback.input = ("thumbs_up", "neutral", "thumbs_down")
    c.feedback.positive = ("thumbs_up",)
    c.feedback.target = ("thumbs_up", "neutral", "thumbs_down")
    c.feedback.negative = ()
    return c
