"""Tiny shapes for tests: compile in a second or two, train in a few more."""

from configs.quickstart import get_config


def tiny_config():
    c = get_config()
    s = c.data.simulator
    s.num_users, s.num_items, s.num_genres, s.latent_dim = 150, 120, 6, 8
    s.events_per_context = (12, 24)
    c.data.window = 3
    c.data.max_len = 12
    c.data.max_explicit = 4
    c.model.width, c.model.depth, c.model.heads, c.model.mlp_ratio = 16, 1, 2, 2
    c.model.dropout = 0.0
    c.loss.num_random_negatives = 16
    c.optim.warmup_steps = 5
    c.optim.learning_rate = 1e-2
    c.train.batch_size = 16
    c.train.steps = 30
    c.train.log_every = 10
    c.train.eval_every = 30
    c.train.checkpoint_every = 15
    c.eval.batch_size = 64
    return c
