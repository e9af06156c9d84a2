"""Where the public datasets live on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$JAXREC_DATA_DIR``, else ``../shared/data`` beside the repository (or the cwd)."""
    env = os.environ.get("JAXREC_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for base in (repo, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.exists():
            return candidate
    return repo.parent / "shared" / "data"
