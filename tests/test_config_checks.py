"""Config combinations that would crash or silently change the training: rejected by
``validate_config``, with a one-line message naming the fields, before any data is read."""

import pytest
from ml_collections import ConfigDict

from jaxrec import build as build_module
from jaxrec import train as train_module
from jaxrec.config import validate_config
from tests.tiny import tiny_config


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
