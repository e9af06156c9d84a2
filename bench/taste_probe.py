"""How much listener taste a model can learn from a simulated log: probes outside the trainer.

Each probe adds a taste term to the ``item_appeal_repeats`` fit (item effects + repeat term,
frozen) and trains only that term by Adam on the training part's liked/disliked events, then
reports the pairwise accuracy of validation and test windows (every liked vs disliked pair of a
station's window, scored from the history before the window):

- ``mf``: per-listener vectors P_u . Q_i (logistic matrix factorisation, ridge ``--l2``): the
  most a model could learn about a listener who is in the training data.
- ``ridge``: gamma x v_i . beta, beta a ridge regression of learned feedback codes on the item
  vectors v of the station's history (learned, or the simulator's true ones with ``--true``):
  what a history-reading head of that form can do.

    python -m bench.taste_probe --probe mf --l2 3e-5 [--listeners 30000] [--steps 300]

Pair counts here include every window pair (the evaluator's figure differs by the repeat
features of within-window repeats, which the probes count from the whole station).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.assembly import prepare_data
from jaxrec.cli_args import CONFIGS_DIR, load_config
from jaxrec.data import simulator
from jaxrec.data.counts import TrainingCounts, fit_item_appeal, repeat_features


def _padded(data, base_E: np.ndarray):
    """Per-station arrays ``[C, Lmax]``: item, feedback + 1, split, base logit, label (1 liked,
    0 disliked, -1 neither) and each event's history end (its own slot for training events,
    its window's first slot for validation and test events)."""
    ev, labels, roles = data.events, data.labels, data.roles
    ctx, n = ev.context.astype(np.int64), ev.num_events
    fb = ev.feedback.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
    lens = np.diff(np.r_[starts, n])
    slot = np.arange(n) - np.repeat(starts, lens)
    row = np.repeat(np.arange(len(starts)), lens)
    first = np.r_[True, (ctx[1:] != ctx[:-1]) | (labels[1:] != labels[:-1])]
    group = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    hist_end = np.where(labels > 0, slot[group], slot)
    y = np.where(roles.positive_T[fb], 1.0, np.where(roles.negative_T[fb], 0.0, -1.0))
    out = []
    for x, fill in (
        (ev.item, 0),
        (fb + 1, 0),
        (labels.astype(np.int64), -9),
        (base_E, 0.0),
        (y, -1.0),
        (hist_end, 0),
    ):
        a = np.full((len(starts), int(lens.max())), fill, np.asarray(x).dtype)
        a[row, slot] = x
        out.append(a)
    return out


def _svd_vectors(data, base_E: np.ndarray, v_rows: int, d: int) -> np.ndarray:
    """Unit item vectors ``[V + 1, d]``: the right singular vectors (times the singular
    values) of the listener x item sums of liked (1) / disliked (0) minus the fit's
    probability, over the training part only."""
    ev, roles = data.events, data.roles
    fb = ev.feedback.astype(np.int64)
    y = np.where(roles.positive_T[fb], 1.0, np.where(roles.negative_T[fb], 0.0, np.nan))
    keep = (data.labels == 0) & np.isfinite(y)
    resid = y[keep] - 1.0 / (1.0 + np.exp(-base_E[keep]))
    m = np.zeros((ev.num_users, v_rows))
    np.add.at(m, (ev.user[keep].astype(np.int64), ev.item[keep].astype(np.int64)), resid)
    _, sv, vt = np.linalg.svd(m, full_matrices=False)
    vec = (vt[:d] * sv[:d, None]).T
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-6)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probe", choices=("mf", "ridge", "knn"), default="mf")
    p.add_argument("--true", action="store_true", help="ridge: the simulator's item vectors")
    p.add_argument(
        "--vectors", default="", help="ridge: a trained run's item table (frozen), its workdir"
    )
    p.add_argument(
        "--svd",
        action="store_true",
        help="ridge / knn: item vectors from a truncated SVD (--dim) of the training part's "
        "listener x item liked (+) / disliked (-) residuals after the fit",
    )
    p.add_argument("--listeners", type=int, default=0, help="0: the quickstart's 3,000")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--l2", type=float, default=3e-5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    args = p.parse_args()
    if args.probe == "knn" and not (args.true or args.vectors or args.svd):
        p.error("--probe knn reads fixed item vectors: add --true, --svd or --vectors WORKDIR")

    cfg = load_config(CONFIGS_DIR / "quickstart.py")
    if args.listeners:
        cfg.data.simulator.num_users = args.listeners
    data = prepare_data(cfg)
    ev, roles = data.events, data.roles
    types = len(ev.feedback_types)
    fb = ev.feedback.astype(np.int64)
    base_V, w = fit_item_appeal(TrainingCounts.from_split(ev, roles, data.labels))
    rep = repeat_features(ev.context, ev.item.astype(np.int64), fb, roles.input_T[fb], types)
    base_E = (base_V[ev.item] + rep @ w).astype(np.float32)
    arrays = [jnp.asarray(a) for a in _padded(data, base_E)]
    items, fbs, split, base, y, hend = arrays
    user_C = jnp.asarray(ev.user[np.flatnonzero(np.r_[True, ev.context[1:] != ev.context[:-1]])])
    rng = np.random.default_rng(0)
    v_rows, d = ev.num_items + 1, args.dim
    if args.true:
        truth = simulator.ground_truth(cfg.data.simulator, cfg.seed)
        raw = ev.item_vocab.astype(object)
        raw[0] = 0
        true_V = jnp.asarray(truth.item_vec_IxD[np.asarray(raw, np.int64)], jnp.float32)
        d = true_V.shape[1]
    elif args.vectors:
        from jaxrec.cli import _run_config as load_run_config
        from jaxrec.selection import load_selected

        model, _, _ = load_selected(load_run_config(args.vectors), args.vectors)
        table = np.asarray(model.item_table())[:v_rows, : int(model.width)]
        table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-6)
        true_V = jnp.asarray(table, jnp.float32)
        d = true_V.shape[1]
    elif args.svd:
        true_V = jnp.asarray(_svd_vectors(data, base_E, v_rows, d), jnp.float32)
    init = lambda *s: jnp.asarray(0.1 * rng.normal(size=s), jnp.float32)
    params = {"q": init(v_rows, d), "g": jnp.asarray(1.0)}
    if args.probe == "mf":
        params["p"] = init(ev.num_users, d)
    elif args.probe == "knn":
        params = {k: jnp.zeros(types) for k in ("w_max", "w_mean", "w_has")}
    else:
        params.update(code=jnp.linspace(1.0, -1.0, types + 1), lam=jnp.asarray(0.0))
        if args.true or args.vectors or args.svd:
            params.pop("q")

    def taste(prm, rows):
        if args.probe == "mf":
            return jnp.einsum("cd,cld->cl", prm["p"][user_C[rows]], prm["q"][items[rows]])
        it, h = items[rows], hend[rows]
        v = true_V[it] if "q" not in prm else prm["q"][it]
        if args.probe == "knn":
            # Per type: the nearest and the mean similarity of the history's other songs
            # that got that reaction (the exact repeats are the fit's).
            sim = jnp.einsum("cld,cmd->clm", v, v)
            slots = jnp.arange(it.shape[1])
            seen = (slots[None, None, :] < h[..., None]) & (it[:, None, :] > 0)
            seen = seen & (it[..., None] != it[:, None, :])
            out = jnp.zeros(it.shape)
            for t in range(types):
                m = seen & (fbs[rows][:, None, :] == t + 1)
                has = m.any(-1)
                near = jnp.where(has, jnp.max(jnp.where(m, sim, -1.0), -1), 0.0)
                mean = (sim * m).sum(-1) / jnp.maximum(m.sum(-1), 1)
                out = out + prm["w_max"][t] * near + prm["w_mean"][t] * mean
                out = out + prm["w_has"][t] * has
            return out
        real = (it > 0).astype(jnp.float32)[..., None]
        x = jnp.concatenate([v, jnp.ones_like(v[..., :1])], -1) * real  # intercept column
        code = prm["code"][fbs[rows]] * real[..., 0]
        gram = jnp.cumsum(jnp.einsum("cla,clb->clab", x, x), axis=1)
        rhs = jnp.cumsum(x * code[..., None], axis=1)
        gram = jnp.concatenate([jnp.zeros_like(gram[:, :1]), gram], 1)  # [:, s]: sum over < s
        rhs = jnp.concatenate([jnp.zeros_like(rhs[:, :1]), rhs], 1)
        gram_h = jnp.take_along_axis(gram, h[..., None, None], 1)
        rhs_h = jnp.take_along_axis(rhs, h[..., None], 1)
        ridge = jax.nn.softplus(prm["lam"] + 1.0) * jnp.r_[jnp.ones(d), 1e-3]
        beta = jnp.linalg.solve(gram_h + jnp.diag(ridge), rhs_h[..., None])[..., 0]
        return prm["g"] * jnp.einsum("cld,cld->cl", v, beta[..., :d])

    def loss(prm, rows):
        z = base[rows] + taste(prm, rows)
        m = ((split[rows] == 0) & (y[rows] >= 0)).astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(z, jnp.maximum(y[rows], 0.0))
        reg = sum(jnp.sum(prm[k] ** 2) for k in ("p", "q") if k in prm)
        return (bce * m).sum() / m.sum() + args.l2 * reg

    opt = optax.adam(args.lr)
    state = opt.init(params)
    n_ctx = items.shape[0]
    batch = n_ctx if args.probe == "mf" else min(256, n_ctx)

    @jax.jit
    def step(prm, st, rows):
        grads = jax.grad(loss)(prm, rows)
        upd, st = opt.update(grads, st, prm)
        return optax.apply_updates(prm, upd), st

    @jax.jit
    def scores(prm, rows):
        return base[rows] + taste(prm, rows)

    def accuracy(prm, which: int, zero: bool = False) -> float:
        wins = pairs = 0.0
        for s0 in range(0, n_ctx, 1024):
            rows = jnp.arange(s0, min(s0 + 1024, n_ctx))
            z = np.asarray(base[rows] if zero else scores(prm, rows))
            m = np.asarray(split[rows] == which)
            yy = np.asarray(y[rows])
            pair = (m & (yy == 1))[:, :, None] & (m & (yy == 0))[:, None, :]
            cmp = (z[:, :, None] > z[:, None, :]) + 0.5 * (z[:, :, None] == z[:, None, :])
            wins, pairs = wins + (cmp * pair).sum(), pairs + pair.sum()
        return wins / pairs

    print(
        f"{args.probe}{' (true vectors)' if args.true else ''}, {ev.num_users} listeners, "
        f"{ev.num_events} events: item_appeal_repeats alone valid "
        f"{accuracy(params, 1, True):.4f} test {accuracy(params, 2, True):.4f}",
        flush=True,
    )
    t0 = time.time()
    for i in range(1, args.steps + 1):
        rows = jnp.asarray(rng.choice(n_ctx, batch, replace=False))
        params, state = step(params, state, rows)
        if i % args.every == 0 or i == args.steps:
            print(
                f"step {i}: valid {accuracy(params, 1):.4f} test {accuracy(params, 2):.4f} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
