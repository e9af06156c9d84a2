"""Shared test helpers: tiny configs (compile in a second or two, train in a few more) and
hand-written event tables."""

import pyarrow as pa
from ml_collections import ConfigDict

from jaxrec.base_config import complete, get_config
from jaxrec.cli_args import CONFIGS_DIR, load_config, load_config_module
from jaxrec.data import simulator

_QUICKSTART = load_config_module(CONFIGS_DIR / "quickstart.py")

# Every simulator feedback type is an input; the quickstart's positive and negative roles.
ALL_INPUTS = ConfigDict(
    dict(
        input=simulator.FEEDBACK_TYPES,
        positive=("thumbs_up", "play"),
        negative=("skip", "thumbs_down"),
    )
)


def repo_config(name: str) -> ConfigDict:
    """``get_config()`` of ``configs/<name>.py`` of this repository."""
    return load_config(CONFIGS_DIR / f"{name}.py")


def tiny_config() -> ConfigDict:
    """The quickstart config at tiny shapes."""
    c = _QUICKSTART.get_config()
    s = c.data.simulator
    s.num_users, s.num_items, s.num_genres, s.latent_dim = 150, 120, 6, 8
    s.events_per_context = (12, 24)
    c.data.window = 3
    c.data.max_len = 12
    c.data.max_explicit = 4
    c.model.width, c.model.depth, c.model.heads, c.model.mlp_ratio = 16, 1, 2, 2
    c.model.dropout = 0.0
    # The shipped catalog repeat term and its counterfactual have tests of their own
    # (tests/test_model.py, tests/losses/test_losses.py, tests/data/test_pipeline.py); the
    # rest of the suite runs the plain head.
    c.model.catalog_repeats = False
    c.loss.counterfactual_weight = 0.0
    # The same for the shipped appeal pool and taste term and the full softmax: the suite's
    # losses are sampled.
    c.model.appeal_pool = False
    c.model.appeal_taste = False
    c.loss.full_softmax_weight, c.loss.sampled_weight = 0.0, 1.0
    c.loss.num_random_negatives = 16
    c.optim.warmup_steps = 5
    c.optim.learning_rate = 1e-2
    c.train.batch_size = 16
    # Tests count steps (the quickstart counts epochs; tests/test_budget.py covers those).
    c.train.epochs = 0.0
    c.train.eval_every_epochs = 0.0
    c.train.steps = 30
    c.train.log_every = 10
    c.train.eval_every = 30
    c.train.checkpoint_every = 15
    # The catalog model alone: most tests are about it (tests/e2e/test_appeal_head.py and
    # tests/test_model.py turn the appeal head of the quickstart back on).
    c.model.appeal_head = False
    c.loss.appeal_weight = 0.0
    c.data.contrast_window = 0
    c.eval.batch_size = 64
    return complete(c)  # locked: a misspelt field in a test fails


def model_config(**fields) -> ConfigDict:
    """The base config's ``model`` section with every optional term off (no appeal head, no
    repeat terms, no pool), then ``fields``: the plain catalog transformer."""
    c = get_config().model
    c.update(
        appeal_head=False,
        appeal_personal=True,
        appeal_repeats=False,
        appeal_pool=False,
        appeal_taste=False,
        catalog_repeats=False,
    )
    c.update(fields)
    return c


def optim_config(**fields) -> ConfigDict:
    """The base config's ``optim`` section with every learning-rate multiplier at 1, then
    ``fields``."""
    c = get_config().optim
    for name in list(c.keys()):
        if name.endswith("_lr_multiplier"):
            c[name] = 1.0
    c.update(fields)
    return c


def tiny_model(param: str = "", value=None, **fields):
    """The tiny config's model with ``fields`` of ``config.model`` changed, unsharded, and its
    parameter ``param`` set to ``value`` when both are given."""
    import jax.numpy as jnp
    from flax import nnx

    from jaxrec.model import SequenceModel

    cfg = tiny_config()
    cfg.model.update(fields)
    with nnx.use_eager_sharding(False):
        model = SequenceModel(cfg.model, 30, 4, int(cfg.data.max_len), nnx.Rngs(params=0))
    if param and value is not None:
        getattr(model, param)[...] = jnp.asarray(value, jnp.float32)
    return model


def catalog_repeat_model(weights_2xT=None):
    """The tiny model with the catalog repeat term, its weights set when given."""
    return tiny_model("catalog_repeat", weights_2xT, catalog_repeats=True)


def event_table(rows: list[tuple]) -> pa.Table:
    """An event table from ``(user, context, item, timestamp, feedback)`` tuples."""
    user, ctx, item, ts, fb = zip(*rows, strict=True)
    return pa.table(
        {
            "user_id": list(user),
            "context_id": list(ctx),
            "item_id": list(item),
            "timestamp": list(ts),
            "feedback": list(fb),
        }
    )
