"""Template: your own event log (plays, likes, dislikes, skips), read by ``csv``.

configs/spotify_sessions.py with the shipped session file described by a mapping instead of
read by its adapter, so the same mapping reads any log with one row per event. For yours, edit
in ``get_config``:

* ``c.data.path``: your file (or ``--config.data.path=log.csv`` on the command line);
* ``"columns"``: your header's names. ``user_id`` is whose history it is; add ``"context_id"``
  (a session, a station) to cut it into sequences and ``"timestamp"`` (numbers, or dates with
  ``timestamp_format``) to order it; without one, rows in file order are each user's time;
* ``"feedback"``: each value of your action column -> a feedback type, e.g. for
  ``listener,track,played_at,action`` rows::

      "columns": {"user_id": "listener", "item_id": "track", "timestamp": "played_at",
                  "feedback": "action"},
      "feedback": {"values": {"play": "play", "like": "thumbs_up",
                              "dislike": "thumbs_down", "skip": "skip"}},
      "feedback_types": ["thumbs_up", "play", "skip", "thumbs_down"],

  and then the roles: ``c.feedback.input = ("thumbs_up", "play", "skip", "thumbs_down")``,
  ``c.feedback.positive = ("thumbs_up", "play")``, ``c.feedback.negative = ("skip",
  "thumbs_down")``. Rows with a value not listed are dropped and counted in the run's
  data_report.json;
* ``c.feedback.codes``: how much each type says the listener likes the song, in [-1, 1], for
  the taste the appeal head reads (e.g. ``{"complete": 1.0, "partial": 0.0, "skip": -1.0}``
  below); a type left out gets the radio vocabulary's code (thumbs_up 1, play 0.33, skip
  -0.33, thumbs_down -1) or +1 positive / -1 negative / 0;
* ``c.data.window`` / ``c.data.max_len``: events per test window and per input (the shipped
  sessions hold 15-20 events).

    jaxrec train --config configs/events.py --workdir runs/events

The mapping reads the same events as the spotify-sessions adapter (tests/test_templates.py), so
on the shipped 10,000-session subset the run is configs/spotify_sessions.py's (its docstring has
the figures: HR@10 0.3887 / NDCG@10 0.2187 on seed 0, above the best baseline).
"""

from pathlib import Path

from ml_collections import ConfigDict

from jaxrec.cli_args import load_config_module
from jaxrec.data.paths import data_dir

base_config = load_config_module(Path(__file__).with_name("spotify_sessions.py")).get_config


def get_config():
    c = base_config()
    c.data.source = "csv"
    # Header: "user_id","song_id","previous_song","skipped"; user_id is a listening session,
    # skipped how far the track played (0-1 skipped early, 2-3 partly, 4 to the end).
    c.data.path = str(data_dir() / "spotify-sessions" / "mini-spotify-data.csv")
    c.data.options = ConfigDict(
        {
            "columns": {"user_id": "user_id", "item_id": "song_id", "feedback": "skipped"},
            # The spotify-sessions adapter's mapping (values are matched as text).
            "feedback": {
                "values": {
                    "4": "complete",
                    "3": "partial",
                    "2": "partial",
                    "1": "skip",
                    "0": "skip",
                }
            },
            # The vocabulary in the adapter's order (its index is the input token's type id).
            "feedback_types": ["complete", "partial", "skip"],
        }
    )
    # Roles, as configs/spotify_sessions.py: complete plays are positives, early skips explicit
    # negatives, partial plays input only.
    c.feedback.input = ("complete", "partial", "skip")
    c.feedback.positive = ("complete",)
    c.feedback.negative = ("skip",)
    return c
