"""Paired comparisons (jaxrec/eval/paired.py): "beats" needs an interval above 0, and pooling
counts a shared window once."""

import numpy as np

from jaxrec.eval import paired


def test_paired_interval_says_level_on_noise_and_beats_on_a_real_gap():
    rng = np.random.default_rng(0)
    n = 4000
    pairs = rng.integers(1, 6, n).astype(float)
    a_wins = rng.binomial(pairs.astype(int), 0.7).astype(float)
    # Noise: 19 of ~12,000 pairs flipped in favour of a (the quickstart's +0.0008).
    b_wins = a_wins.copy()
    flip = rng.choice(np.flatnonzero(a_wins > 0), 19, replace=False)
    b_wins[flip] -= 1
    a, b = np.stack([a_wins, pairs]), np.stack([b_wins, pairs])
    diff, lo, hi = paired.paired_interval(a, b)
    assert diff > 0 and paired.verdict(lo, hi) == "beats"  # all flips one way: real, if tiny
    noisy = b_wins.copy()
    up = rng.choice(np.flatnonzero(b_wins < pairs), 19, replace=False)
    noisy[up] += 1  # 19 flips each way
    diff, lo, hi = paired.paired_interval(np.stack([noisy, pairs]), b)
    assert lo < diff < hi
    c = paired.paired_interval(np.stack([a_wins, pairs]), np.stack([noisy, pairs]))
    assert paired.verdict(c[1], c[2]) == "level"
    # Lower is better: a smaller value beats.
    assert paired.verdict(-0.2, -0.1, sign=-1.0) == "beats"
    assert paired.verdict(-0.2, 0.1) == "level"


def test_pooling_counts_a_shared_window_once():
    rng = np.random.default_rng(1)
    den = rng.integers(1, 5, 50).astype(float)
    base = {"m": np.stack([rng.binomial(den.astype(int), 0.5).astype(float), den])}
    runs = [
        {"m": np.stack([rng.binomial(den.astype(int), 0.6).astype(float), den])} for _ in range(3)
    ]
    # Same data (identical baseline terms): one window set, the model's terms averaged.
    model, other = paired.pool(runs, [base] * 3)
    assert model["m"].shape == (2, 50) and np.array_equal(other["m"], base["m"])
    np.testing.assert_allclose(model["m"][0], np.mean([r["m"][0] for r in runs], axis=0))
    # Different data per seed (the simulator): concatenated.
    other_bases = [{"m": base["m"] + i} for i in range(3)]
    model, other = paired.pool(runs, other_bases)
    assert model["m"].shape == (2, 150) and other["m"].shape == (2, 150)
