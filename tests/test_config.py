"""Config validation (jaxrec/config.py): a mistake is refused before any data is read, naming
the field; the combinations that would crash a cloze (BERT4Rec) run, last."""

import re

import pytest
from ml_collections import ConfigDict

from jaxrec import build as build_module
from jaxrec import train as train_module
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
        ({"loss.random_bits": "hashed"}, "config.loss.random_bits"),
        ({"feedback.target": ("thumbs_up", "thumbs_down")}, "config.feedback.target"),
        ({"feedback.target": ("thumbs_upp",)}, "config.feedback.target"),
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
    ("model.random_bits", "threefy", lambda c: validate_model_config(c.model)),
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


# ---- cloze training ---------------------------------------------------------------------------


def _cloze_with_appeal_head() -> ConfigDict:
    """The quickstart's appeal head and its window (tiny shapes), trained as a cloze model."""
    cfg = tiny_config()
    cfg.model.causal = False
    cfg.model.appeal_head, cfg.model.appeal_repeats = True, True
    cfg.loss.appeal_weight = 1.0
    cfg.data.contrast_window = 3
    return cfg


def _rejected(cfg: ConfigDict, match: str) -> str:
    with pytest.raises(ValueError, match=match) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_cloze_training_rejects_the_appeal_head():
    # cloze_batch keeps no next-W-events window: the head's term crashed on the first step.
    cfg = _cloze_with_appeal_head()
    message = _rejected(cfg, r"^config\.model\.appeal_head: ")
    assert "config.model.causal=False" in message and "cloze" in message
    cfg.loss.appeal_weight = 0.0  # an untrained head, scored at evaluation: rejected too
    _rejected(cfg, r"^config\.model\.appeal_head: ")
    cfg.model.appeal_head, cfg.loss.appeal_weight = False, 1.0
    message = _rejected(cfg, r"^config\.loss\.appeal_weight: ")
    assert "config.model.causal=False" in message  # not "set appeal_head=True"


def test_cloze_training_rejects_the_window_contrast():
    # Without a window the contrast term fell back to the gap negatives, without a word.
    cfg = _cloze_with_appeal_head()
    cfg.model.appeal_head, cfg.loss.appeal_weight = False, 0.0
    cfg.loss.contrast_weight = 1.0
    message = _rejected(cfg, r"^config\.data\.contrast_window: ")
    assert "config.model.causal=False" in message and "config.loss.contrast_weight" in message
    cfg.data.contrast_window = 0  # the gap contrast, asked for: fine
    validate_config(cfg)
    cfg.data.contrast_window, cfg.loss.contrast_weight = 3, 0.0  # a window nothing reads
    validate_config(cfg)


def test_cloze_training_rejects_the_catalog_repeat_term():
    cfg = _cloze_with_appeal_head()
    cfg.model.appeal_head, cfg.loss.appeal_weight, cfg.data.contrast_window = False, 0.0, 0
    cfg.model.catalog_repeats = True
    message = _rejected(cfg, r"^config\.model\.catalog_repeats: ")
    assert "config.model.causal=False" in message
    cfg.model.causal = True
    validate_config(cfg)


def test_causal_training_keeps_the_appeal_head_and_window_contrast():
    cfg = _cloze_with_appeal_head()
    cfg.model.causal = True
    cfg.loss.contrast_weight = 1.0
    validate_config(cfg)


def test_cloze_checks_come_before_any_data_is_read(tmp_path, monkeypatch):
    def no_data(cfg):
        raise AssertionError("data read before the config was checked")

    monkeypatch.setattr(build_module, "prepare_data", no_data)
    with pytest.raises(ValueError, match=r"^config\.model\.appeal_head: "):
        train_module.train(_cloze_with_appeal_head(), tmp_path, progress=False)
