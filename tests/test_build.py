"""jaxrec/build.py: what a run prints about its set-up before it trains."""

from tests.tiny import tiny_config


def test_a_full_softmax_over_a_large_catalog_warns_with_its_cost():
    from jaxrec.build import FULL_SOFTMAX_WARN_ITEMS, full_softmax_warning

    cfg = tiny_config()
    cfg.loss.full_softmax_weight = 1.0
    assert full_softmax_warning(cfg, FULL_SOFTMAX_WARN_ITEMS - 1) is None
    text = full_softmax_warning(cfg, 1_000_000)
    positions = cfg.train.batch_size * cfg.data.max_len
    tflop = 6 * positions * 1_000_000 * cfg.model.width / 1e12
    assert f"about {tflop:.1f} TFLOP per step" in text
    assert "--config.loss.full_softmax_weight=0 --config.loss.sampled_weight=1" in text
    cfg.loss.full_softmax_weight = 0.0  # the sampled softmax: nothing to say
    assert full_softmax_warning(cfg, 1_000_000) is None
