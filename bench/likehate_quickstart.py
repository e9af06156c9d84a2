"""configs/quickstart.py as it is, on a like/hate CSV log (``bench/likehate_log.py``): only
the file and its column mapping are added. The log's path: ``$JAXREC_LIKEHATE_CSV``."""

import os

from jaxrec.cli_args import CONFIGS_DIR, load_config


def get_config():
    c = load_config(CONFIGS_DIR / "quickstart.py")
    c.data.source = "csv"
    c.data.path = os.environ.get("JAXREC_LIKEHATE_CSV", "runs/likehate.csv")
    c.data.options = {
        "columns": {"user_id": "uid", "item_id": "vid", "timestamp": "ts", "feedback": "action"},
        "feedback": {"values": {"like": "thumbs_up", "view": "play", "hate": "thumbs_down"}},
    }
    return c
