"""Checkpoints (jaxrec/checkpoint.py): a resume forgets best steps past its step (the save and
restore round trip of a model: tests/test_model.py)."""

import jax.numpy as jnp


def test_resume_drops_best_checkpoints_past_the_resumed_step(tmp_path):
    from jaxrec.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path, 3, name="best")
    for step in (10, 20, 30):
        ck.save(step, {"x": jnp.ones(2) * step})
    ck.wait()
    ck.drop_after(15)
    assert ck.all_steps() == [10]
    ck.close()
