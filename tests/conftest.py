"""Shared test set-up: a persistent compilation cache and tiny configs, so the suite stays fast."""

import os
from pathlib import Path

# Before jax is imported anywhere: reuse compiled programs across tests and test processes.
_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from jaxrec.data.paths import data_dir  # noqa: E402
from tests.tiny import tiny_config  # noqa: E402


@pytest.fixture
def cfg():
    """A fresh tiny config (tests may change it freely)."""
    return tiny_config()


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data("movielens-100k/ml-100k.inter")`` -> Path, or skip when absent.

    The data dir is ``$JAXREC_DATA_DIR`` (default ``<repo>/../shared/data``). With ``CI=true`` a
    missing file fails instead of skipping, so CI cannot pass by not testing.
    """

    def need(rel: str) -> Path:
        path = data_dir() / rel
        if not path.exists():
            msg = f"shared data file {path} is absent (set JAXREC_DATA_DIR)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(msg)
            pytest.skip(msg)
        return path

    return need
