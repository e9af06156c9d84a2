"""Responsiveness to negative feedback (after Wang et al., RecSys 2023).

For each history: take the model's current top-1 item, append one event on that item, and see
where the item (and its nearest items by item embedding) lands. Appending a negative type
(thumbs-down) should push it out of the top-k; appending a neutral or positive play of the same
item is the control. Goes through :mod:`jaxrec.inference` only, so it measures what is served
(without the serving rules of an export, which would remove a thumbed-down item outright).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxrec import inference


def _append(items_BxL: np.ndarray, fb_BxL: np.ndarray, item_B: np.ndarray, fb_type: int):
    """Histories with one event appended (newest last; the oldest slot drops off)."""
    items = np.concatenate([items_BxL[:, 1:], item_B[:, None]], axis=1).astype(items_BxL.dtype)
    fb = np.concatenate([fb_BxL[:, 1:], np.full((len(fb_BxL), 1), fb_type)], axis=1)
    return items, fb.astype(fb_BxL.dtype)


def nearest_items(table_VxD: np.ndarray, item_B: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` items ``[B, n]`` of highest cosine similarity to each item (not itself, not
    padding row 0)."""
    t = np.asarray(table_VxD, np.float64)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sim = t[item_B] @ t.T
    sim[:, 0] = -np.inf
    sim[np.arange(len(item_B)), item_B] = -np.inf
    return np.argsort(-sim, axis=1, kind="stable")[:, :n]


def _summary(before_BxW: np.ndarray, after_BxW: np.ndarray, k: int) -> dict[str, float]:
    was_in = before_BxW < k
    left = was_in & (after_BxW >= k)
    drop = (after_BxW - before_BxW).ravel()
    return {
        "left_top_k": float(left.sum() / max(was_in.sum(), 1)),
        "median_rank_drop": float(np.median(drop)) if drop.size else float("nan"),
        "in_top_k_before": int(was_in.sum()),
    }


def responsiveness(
    model: Any,
    items_NxL: np.ndarray,
    feedback_NxL: np.ndarray,
    negative_type: int,
    neutral_type: int,
    k: int = 10,
    neighbours: int = 10,
    batch_size: int = 256,
    context_NxL: np.ndarray | None = None,
    query_context_N: np.ndarray | None = None,
) -> dict[str, Any]:
    """Responsiveness of ``model`` on histories ``items_NxL`` / ``feedback_NxL`` (left-padded;
    rows without any event are skipped). Listener histories also pass each token's context
    (id + 1) and the context scored, ``query_context_N``, which the appended event joins.

    ``negative_type`` and ``neutral_type`` are feedback tokens (type index + 1), e.g. those of
    ``thumbs_down`` and ``play``. Ranks are 0-based over the catalog, ties counted against the
    item. Returns, for ``"negative"`` and ``"neutral"`` appends, ``{"top1": S, "neighbours":
    S}`` with S = ``{"left_top_k": share of the items in the top-k before that are out of it
    after, "median_rank_drop": median of rank after - rank before, "in_top_k_before": count}``;
    neighbours are the ``neighbours`` items nearest the top-1 item by cosine similarity of item
    embeddings (without the bias column of an item-bias model).
    """
    items_NxL = np.asarray(items_NxL)
    feedback_NxL = np.asarray(feedback_NxL)
    keep = (items_NxL > 0).any(axis=1)
    items_NxL, feedback_NxL = items_NxL[keep], feedback_NxL[keep]
    if context_NxL is not None:
        context_NxL = np.asarray(context_NxL)[keep]
        query_context_N = np.asarray(query_context_N)[keep]
    table = model.item_table()
    emb = np.asarray(table)[:, : int(model.width)]
    ranks: dict[str, list[np.ndarray]] = {"before": [], "negative": [], "neutral": []}
    for start in range(0, len(items_NxL), batch_size):
        items = items_NxL[start : start + batch_size]
        fb = feedback_NxL[start : start + batch_size]
        ctx = qctx = None
        if context_NxL is not None:
            ctx = context_NxL[start : start + batch_size]
            qctx = query_context_N[start : start + batch_size]
        scores = inference.model_catalog_scores(
            model, inference.user_query(model, items, fb, ctx, qctx), items, fb
        )
        top1 = np.asarray(jnp.argmax(scores, axis=1)).astype(np.int32)
        watched = np.concatenate([top1[:, None], nearest_items(emb, top1, neighbours)], axis=1)
        watched_j = jnp.asarray(watched, jnp.int32)
        ranks["before"].append(np.asarray(inference.item_ranks(scores, watched_j)))
        for name, fb_type in (("negative", negative_type), ("neutral", neutral_type)):
            it2, fb2 = _append(items, fb, top1, fb_type)
            ctx2 = None if ctx is None else _append(ctx, ctx, qctx, 0)[0]
            s2 = inference.model_catalog_scores(
                model, inference.user_query(model, it2, fb2, ctx2, qctx), it2, fb2
            )
            ranks[name].append(np.asarray(inference.item_ranks(s2, watched_j)))
    width = 1 + neighbours
    r = {n: np.concatenate(v) if v else np.zeros((0, width), np.int64) for n, v in ranks.items()}
    out: dict[str, Any] = {"sequences": int(len(items_NxL)), "k": int(k)}
    for name in ("negative", "neutral"):
        out[name] = {
            "top1": _summary(r["before"][:, :1], r[name][:, :1], k),
            "neighbours": _summary(r["before"][:, 1:], r[name][:, 1:], k),
        }
    return out


NEGATIVE_PREFERENCE = ("thumbs_down", "skip")


def choose_appended_types(
    feedback_types: tuple[str, ...],
    roles: Any,
    negative: str | None = None,
    neutral: str | None = None,
) -> tuple[str, str]:
    """The (negative, neutral) feedback-type names to append.

    Defaults: negative, the input type with a negative role named ``thumbs_down``, else ``skip``,
    else the first such type; neutral, the first input type that is neither positive nor
    negative, else ``play`` if it is a positive input type, else the first positive input type.
    A given name must be an input type; a bad one raises ``ValueError`` naming the argument
    (``negative_type`` / ``neutral_type``).
    """
    types = tuple(feedback_types)
    inputs = [t for t, i in zip(types, np.asarray(roles.input_T), strict=True) if i]
    for what, name in (("negative_type", negative), ("neutral_type", neutral)):
        if name is None:
            continue
        if name not in types:
            raise ValueError(f"{what}: unknown feedback type {name!r}; this data has {list(types)}")
        if name not in inputs:
            raise ValueError(
                f"{what}: {name!r} is not an input feedback type of this run (the model never "
                f"sees it); input types: {inputs}"
            )
    role = {
        t: (bool(p), bool(n))
        for t, p, n in zip(
            types, np.asarray(roles.positive_T), np.asarray(roles.negative_T), strict=True
        )
    }
    if negative is None:
        candidates = [t for t in inputs if role[t][1]]
        preferred = [t for t in NEGATIVE_PREFERENCE if t in candidates]
        if not (preferred or candidates):
            raise ValueError(
                "negative_type: no feedback type is both an input and a negative; name one"
            )
        negative = (preferred or candidates)[0]
    if neutral is None:
        neither = [t for t in inputs if not any(role[t])]
        # A plain play is the natural control for a thumbs-down; a thumbs-up would be a second
        # treatment, not a control.
        positive = sorted((t for t in inputs if role[t][0]), key=lambda t: t != "play")
        neutral = (neither or positive)[0]  # Roles guarantees an input type exists
    return negative, neutral


def responsiveness_report(
    model: Any,
    data: Any,
    k: int,
    negative: str | None = None,
    neutral: str | None = None,
    *,
    split: str = "test",
    max_sequences: int | None = None,
    neighbours: int = 10,
) -> dict[str, Any]:
    """:func:`responsiveness` of ``model`` on the covered histories of ``data``'s ``split``
    (a :class:`jaxrec.train.Data`), at most ``max_sequences`` of them (the first ones).

    The feedback types are picked by :func:`choose_appended_types`; the result adds their names,
    the split and the histories available (``covered_sequences``) to :func:`responsiveness`'s.
    """
    types = tuple(data.events.feedback_types)
    negative, neutral = choose_appended_types(types, data.roles, negative, neutral)
    eval_set = getattr(data, split)
    rows = np.flatnonzero((np.asarray(eval_set.items_NxL) > 0).any(axis=1))
    covered = len(rows)
    if max_sequences is not None:
        rows = rows[: int(max_sequences)]
    context_NxL, query_context_N = eval_set.contexts(rows)
    out = responsiveness(
        model,
        np.asarray(eval_set.items_NxL)[rows],
        np.asarray(eval_set.feedback_NxL)[rows],
        context_NxL=context_NxL,
        query_context_N=query_context_N,
        negative_type=types.index(negative) + 1,
        neutral_type=types.index(neutral) + 1,
        k=int(k),
        neighbours=int(neighbours),
    )
    return {
        "split": split,
        "negative_type": negative,
        "neutral_type": neutral,
        "covered_sequences": int(covered),
        "neighbours_per_item": int(neighbours),
        **out,
    }


def format_report(r: dict[str, Any]) -> str:
    """A few lines for a terminal: each append's effect on the top-1 item and its neighbours."""
    k = r["k"]
    lines = [
        f"responsiveness on {r['sequences']} {r['split']} histories (k = {k}): append one event "
        f"on the current top-1 item"
    ]
    for name in ("negative", "neutral"):
        fb = r[f"{name}_type"]
        for who in ("top1", "neighbours"):
            s = r[name][who]
            what = "top-1 item" if who == "top1" else f"{r['neighbours_per_item']} nearest items"
            lines.append(
                f"  + {fb:<12} {what:<18} left top-{k}: {s['left_top_k']:.3f} of "
                f"{s['in_top_k_before']}, median rank drop {s['median_rank_drop']:+g}"
            )
    return "\n".join(lines)
