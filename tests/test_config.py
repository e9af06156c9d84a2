"""Config validation (jaxrec/config.py): a mistake is refused before any data is read, naming
the field (combinations that would crash the training: tests/test_config_checks.py)."""

import re

import pytest

from jaxrec.budget import validate_budget_config
from jaxrec.config import validate_config
from jaxrec.data.checks import validate_data_config
from jaxrec.eval.evaluator import validate_eval_config
from jaxrec.model import LOGICAL_AXES, validate_model_config
from jaxrec.selection import validate_selection_config
from jaxrec.sharding import validate_mesh_config
from jaxrec.step import validate_step_config
from tests.tiny import tiny_config

# A misspelt select_metric is refused before any data is read.


def test_misspelt_select_metric_is_refused_naming_field_and_valid_names(cfg):
    cfg.train.select_metric = "pairwise_acc"
    cfg.data.source = "movielens"
    cfg.feedback.input = cfg.feedback.positive = ("thumbs_up",)
    cfg.feedback.negative = ("thumbs_down",)
    cfg.data.path = "/nonexistent/never-read.inter"  # reading it would fail differently
    with pytest.raises(ValueError, match="config.train.select_metric") as err:
        validate_config(cfg)
    assert "'pairwise_accuracy'" in str(err.value) and "'ndcg@10'" in str(err.value)
    cfg.train.select_metric = "ndcg@10"
    cfg.eval.k = 5  # the cut-off is part of the name
    with pytest.raises(ValueError, match="ndcg@5"):
        validate_config(cfg)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"loss.appeal_weight": 1.0, "data.contrast_window": 3}, "config.loss.appeal_weight"),
        (
            {"loss.appeal_weight": 1.0, "model.appeal_head": True, "data.contrast_window": 0},
            "config.loss.appeal_weight",
        ),
        ({"eval.pair_score": "apeal"}, "config.eval.pair_score"),
        ({"eval.pair_score": "appeal"}, "config.eval.pair_score"),
        ({"loss.appeal_weight": -1.0}, "config.loss.appeal_weight"),
        ({"model.appeal_width": -1}, "config.model.appeal_width"),
        ({"optim.bias_lr_multiplier": -1.0}, "config.optim.bias_lr_multiplier"),
    ],
)
def test_appeal_config_mistakes_are_named(overrides, field):
    cfg = tiny_config()
    for path, value in overrides.items():
        section, name = path.split(".")
        cfg[section][name] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate_config(cfg)


def test_cloze_models_refuse_listener_rows():
    cfg = tiny_config()
    cfg.data.sequence = "listener"
    cfg.model.causal = False
    with pytest.raises(ValueError, match="config.data.sequence"):
        validate_config(cfg)
    cfg.model.causal = True
    cfg.data.sequence = "listeners"
    with pytest.raises(ValueError, match="config.data.sequence"):
        validate_config(cfg)


def _data(c):
    return validate_data_config(c.data, c.feedback)


# One bad field per owner's check, each called alone (validate_config calls them in turn).
OWNER_CASES = [
    ("data.packing", "yes", _data),
    ("model.dropout", 1.5, lambda c: validate_model_config(c.model)),
    ("optim.learning_rate", 0.0, lambda c: validate_step_config(c.optim, c.train)),
    ("train.max_minutes", -1.0, lambda c: validate_budget_config(c.train)),
    ("eval.pair_score", "apeal", lambda c: validate_eval_config(c.eval)),
    ("train.select_mode", "lowest", lambda c: validate_selection_config(c.train, c.eval.k)),
    ("mesh.rules", (("vocab", "model"),), lambda c: validate_mesh_config(c.mesh, LOGICAL_AXES)),
]


@pytest.mark.parametrize("path, value, check", OWNER_CASES, ids=[c[0] for c in OWNER_CASES])
def test_each_owner_checks_its_own_section(path, value, check):
    cfg = tiny_config()
    check(cfg)  # the tiny config passes
    section, name = path.split(".")
    cfg[section][name] = value
    with pytest.raises(ValueError, match="^" + re.escape(f"config.{path}: ")):
        check(cfg)


def test_data_check_returns_the_feedback_vocabulary():
    cfg = tiny_config()
    assert _data(cfg) == ("thumbs_up", "play", "skip", "thumbs_down")
    cfg.feedback.positive = ("liked",)
    with pytest.raises(ValueError, match=r"^config\.feedback\.positive: unknown feedback type"):
        _data(cfg)
