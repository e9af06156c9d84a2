"""Model selection (jaxrec/selection.py): which way the selection metric points, and the best
step it picks."""

import pytest

from jaxrec.config import select_sign, validate_config
from jaxrec.selection import selection_state


def test_select_direction_defaults_by_metric_and_can_be_set(cfg):
    assert select_sign(cfg) == 1.0
    cfg.train.select_metric = "neg_hr@10"
    assert select_sign(cfg) == -1.0
    cfg.train.select_mode = "max"
    assert select_sign(cfg) == 1.0
    cfg.train.select_mode = "lowest"
    with pytest.raises(ValueError, match="config.train.select_mode"):
        validate_config(cfg)
    rows = [{"step": 1, "v": 0.5}, {"step": 2, "v": 0.3}, {"step": 3, "v": 0.4}]
    assert selection_state(rows, "v", -1.0) == (-0.3, 1, False)
    assert selection_state(rows, "v", 1.0) == (0.5, 2, False)
