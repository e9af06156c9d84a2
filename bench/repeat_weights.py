"""The learned repeat weights of a trained run, per feedback type.

    python -m bench.repeat_weights WORKDIR

Prints, for the selected model of ``WORKDIR``, the catalog repeat term's weights (with
``model.catalog_repeats``) and the appeal head's (with ``model.appeal_repeats``): ``count`` is
w_t, per log(1 + earlier reactions of type t); ``newest`` is u_t, when the newest reaction to
the item was of type t (docs/losses.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from jaxrec.base_config import complete
from jaxrec.selection import load_selected


def main(workdir: str) -> None:
    cfg = complete(ConfigDict(json.loads((Path(workdir) / "config.json").read_text())), saved=True)
    model, data, step = load_selected(cfg, workdir)
    types = tuple(data.events.feedback_types)
    print(f"{workdir}: step {step}")
    for name in ("catalog_repeat", "appeal_repeat"):
        param = getattr(model, name)
        if param is None:
            continue
        # Columns: padding, the feedback types in order, the [MASK] type.
        w = np.asarray(param[...])[:, 1 : 1 + len(types)]
        print(f"{name}:")
        for row, label in zip(w, ("count", "newest"), strict=True):
            print(
                f"  {label:7s}"
                + "".join(f"  {t} {v:+.3f}" for t, v in zip(types, row, strict=True))
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
