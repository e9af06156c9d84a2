"""Shared test set-up: a persistent compilation cache and tiny configs, so the suite stays fast."""

import contextlib
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


@pytest.fixture
def nonfinite_loss_at():
    """``with nonfinite_loss_at(k): ...``: the training steps built inside (``step.Trainer``,
    ``train.train``) make the loss of step ``k`` (1-based, as in metrics.jsonl) NaN inside the
    jit; a step built there keeps doing so after the block."""
    import jax.numpy as jnp

    from jaxrec import step

    @contextlib.contextmanager
    def inject(k: int):
        def nan_at(hidden, i):  # i: the 0-based step the jitted step is called with
            return hidden + jnp.where(i + 1 == k, jnp.nan, 0.0).astype(hidden.dtype)

        step.fault_hook = nan_at
        try:
            yield
        finally:
            step.fault_hook = None

    return inject


# The slow tier (`-m slow`): end-to-end runs, subprocesses and multi-process jobs; everything
# else is the fast tier a developer runs (`python -m pytest -m "not slow"`, under 3 minutes on
# 2 cores). Chosen from measured durations (>= ~3 s on 2 busy cores); CI runs both tiers.
SLOW_MODULES = {
    "test_accelerator_check",
    "test_appeal_head",
    "test_experiments",
    "test_export",
    "test_faults",
    "test_loss_training",
    "test_multiprocess",
    "test_pallas_kernel",
    "test_real_data",
    "test_train",
}
SLOW_TESTS = {
    "test_bench_throughput": ("test_small_config_prints_throughput",),
    "test_budget": (
        "test_epoch_budget_stops_on_budget_and_warns_when_still_improving",
        "test_patience_stop_reason",
        "test_wall_clock_cap_stops_after_the_step_with_a_validation",
        "test_older_run_without_the_fields_resumes",
    ),
    "test_cli": ("test_train_then_eval_from_the_command_line",),
    "test_evaluator": ("test_evaluator_reads_pairs_from_the_appeal_head_and_catalog_on_request",),
    "test_kernel": (
        "test_row_exclusion_ids_match_the_row_mask",
        "test_query_rows_pick_each_querys_row_exclusion",
    ),
    "test_losses": ("test_context_positives_of_other_examples_are_never_negatives",),
    "test_num_negatives": ("test_num_random_negatives_arms_share_one_loss",),
    "test_pipeline": (
        "test_a_cut_batch_gives_the_uncut_loss_and_update",
        "test_packed_training_follows_unpacked_training",
    ),
    "test_responsiveness": ("test_eval_responsiveness_writes_and_prints",),
    "test_serving": (
        "test_export_of_a_checkpoint_from_another_mesh_equals_the_in_process_model",
        "test_loader_imports_no_flax_and_no_training_code",
    ),
    "test_sharding": ("test_sharded_training_and_cross_mesh_restore",),
    "test_sweep": ("test_sweep_runs_resumes_and_reports",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        name = item.originalname or item.name
        if module in SLOW_MODULES or name in SLOW_TESTS.get(module, ()):
            item.add_marker(pytest.mark.slow)
