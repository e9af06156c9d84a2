"""How much liked-vs-disliked signal a history holds beyond item quality: a transductive probe.

    python -m bench.appeal_ceiling --config configs/quickstart.py --owner context --l2 0.04
    python -m bench.appeal_ceiling --config configs/spotify_sessions.py --owner context --l2 0.05

Fits a logistic matrix factorisation ``logit P(liked) = g + a_item + c_owner + u_owner . v_item``
(ridge ``l2`` on the factors of each event) by full-batch Adam on every labelled event before
the test windows (training part and validation windows: exactly what the test histories hold;
``--fit train``: the training part only, what the models learn from), with one vector per
context (``--owner context``: what a sequence model sees) or per user (``--owner user``: the
listener's other stations too). Prints the test pairwise accuracy of
the whole score and of the item effects alone, on the evaluator's windows. The owner vectors
are fitted on the owners' own events, so this is an optimistic ceiling for a model that must
read the listener from the history, not a baseline.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.assembly import prepare_data
from jaxrec.cli_args import load_config
from jaxrec.eval.metrics import pairwise_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.py")
    ap.add_argument("--owner", choices=("context", "user"), default="context")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--l2", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument(
        "--fit",
        choices=("history", "train"),
        default="history",
        help="history: training part + validation windows; train: the training part only",
    )
    args = ap.parse_args()

    data = prepare_data(load_config(args.config))
    ev, roles, labels = data.events, data.roles, data.labels
    fb = ev.feedback.astype(np.int64)
    pos, neg = roles.positive_T[fb], roles.negative_T[fb]
    last = 2 if args.fit == "history" else 1
    fit = (labels >= 0) & (labels < last) & (pos | neg)
    owner_E = ev.user if args.owner == "user" else ev.context
    n_owner, n_rows = int(owner_E.max()) + 1, ev.num_items + 1
    u, i = jnp.asarray(owner_E[fit]), jnp.asarray(ev.item[fit])
    y = jnp.asarray(pos[fit].astype(np.float32))

    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "u": 0.01 * jax.random.normal(k1, (n_owner, args.dim)),
        "v": 0.01 * jax.random.normal(k2, (n_rows, args.dim)),
        "a": jnp.zeros(n_rows),
        "c": jnp.zeros(n_owner),
        "g": jnp.zeros(()),
    }

    def loss(p):
        s = (p["u"][u] * p["v"][i]).sum(-1) + p["a"][i] + p["c"][u] + p["g"]
        reg = ((p["u"][u] ** 2).sum(-1) + (p["v"][i] ** 2).sum(-1)).mean()
        return optax.sigmoid_binary_cross_entropy(s, y).mean() + args.l2 * reg

    opt = optax.adam(0.03)

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state = opt.init(params)
    for _ in range(args.steps):
        params, state, value = step(params, state)

    test = data.test
    owner_N = test.user_N if args.owner == "user" else test.context_N
    win = test.window_items_NxW
    item_only = np.asarray(params["a"][win])
    personal = np.asarray((params["u"][owner_N][:, None, :] * params["v"][win]).sum(-1))
    cov, lab = test.covered_N, test.window_label_NxW
    full = pairwise_accuracy((item_only + personal)[cov], lab[cov])["micro"]
    alone = pairwise_accuracy(item_only[cov], lab[cov])["micro"]
    print(f"training loss {float(value):.4f}")
    print(f"{args.owner} factors + item effects: test pairwise accuracy {full:.4f}")
    print(f"item effects alone: test pairwise accuracy {alone:.4f}")


if __name__ == "__main__":
    main()
