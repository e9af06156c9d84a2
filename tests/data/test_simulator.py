import numpy as np
import pytest

from jaxrec.data import events, simulator


def test_same_seed_same_events_other_seed_other_events(cfg):
    a = simulator.simulate(cfg.data.simulator, seed=3)
    b = simulator.simulate(cfg.data.simulator, seed=3)
    c = simulator.simulate(cfg.data.simulator, seed=4)
    assert a.equals(b)
    assert not a.equals(c)


def test_feedback_proportions_follow_config(cfg):
    s = cfg.data.simulator
    s.feedback_proportions = dict(thumbs_up=0.3, play=0.2, skip=0.1, thumbs_down=0.4)
    table = simulator.simulate(s, seed=0)
    fb = np.asarray(table.column("feedback").to_pylist())
    for name, share in s.feedback_proportions.items():
        assert abs((fb == name).mean() - share) < 1e-3, name


def test_output_is_a_valid_event_table_with_time_order(cfg):
    table = simulator.simulate(cfg.data.simulator, seed=0)
    ev = events.encode(table, simulator.FEEDBACK_TYPES, "sim")
    assert ev.num_events == table.num_rows
    assert ev.num_contexts == cfg.data.simulator.num_users * cfg.data.simulator.contexts_per_user
    same = ev.context[1:] == ev.context[:-1]
    assert (np.diff(ev.timestamp)[same] > 0).all()


def test_users_like_what_fits_their_taste(cfg):
    """The ground truth is learnable: a user's thumbs-up items resemble each other."""
    cfg.data.simulator.noise = 0.0
    cfg.data.simulator.pickiness = 0.0
    cfg.data.simulator.quality_weight = 0.0
    table = simulator.simulate(cfg.data.simulator, seed=0).to_pydict()
    user, item, fb = (np.asarray(table[k]) for k in ("user_id", "item_id", "feedback"))
    # Same user, same item: with no noise the feedback is the same every time it is played.
    key = user * 10_000 + item
    order = np.argsort(key, kind="stable")
    dup = key[order][1:] == key[order][:-1]
    assert dup.sum() > 20
    assert (fb[order][1:][dup] == fb[order][:-1][dup]).mean() > 0.99


@pytest.mark.parametrize(
    "field,value",
    [("num_users", 0), ("events_per_context", (5, 2)), ("station_focus", 1.5), ("noise", -1.0)],
)
def test_bad_simulator_config_names_the_field(cfg, field, value):
    cfg.data.simulator[field] = value
    with pytest.raises(ValueError, match=f"config.data.simulator.{field}"):
        simulator.simulate(cfg.data.simulator, seed=0)


def test_unknown_feedback_type_in_proportions(cfg):
    cfg.data.simulator.feedback_proportions = dict(thumbs_up=0.5, meh=0.5)
    with pytest.raises(ValueError, match="feedback_proportions.*meh"):
        simulator.simulate(cfg.data.simulator, seed=0)
