"""The one inference path: history -> query vector -> item scores. Used by evaluation,
recommendation and export alike, so that what is measured is what is served."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.model import SequenceModel


def user_query(
    model: SequenceModel,
    items_BxL: jax.Array,
    feedback_BxL: jax.Array,
    context_BxL: jax.Array | None = None,
    query_context_B: jax.Array | None = None,
) -> jax.Array:
    """The query vector ``[B, D]`` of each history: the model's output at the newest slot.

    Histories are left-padded, so the newest token is always in the last slot. A cloze
    (bidirectional) model instead reads a [MASK] token appended after the history, as in BERT4Rec.
    Listener histories pass each token's context (id + 1) and the context being scored; without
    them the whole history reads as one context.
    """
    items_BxL, feedback_BxL = _newest_slot_input(model, items_BxL, feedback_BxL)
    contexts = {}
    if context_BxL is not None:
        contexts = {"context_BxL": context_BxL, "query_context_B": query_context_B}
    return model(items_BxL, feedback_BxL, deterministic=True, **contexts)[:, -1]


def user_hidden(
    model: SequenceModel,
    items_BxL: jax.Array,
    feedback_BxL: jax.Array,
    context_BxL: jax.Array | None = None,
    query_context_B: jax.Array | None = None,
) -> jax.Array:
    """The hidden state ``[B, D]`` at the newest slot, which every head of the model reads."""
    items_BxL, feedback_BxL = _newest_slot_input(model, items_BxL, feedback_BxL)
    hidden_BxLxD = model.encode(
        items_BxL,
        feedback_BxL,
        context_BxL=context_BxL,
        query_context_B=query_context_B,
        deterministic=True,
    )
    return hidden_BxLxD[:, -1]


def _newest_slot_input(model, items_BxL: jax.Array, feedback_BxL: jax.Array):
    """The history as the model reads it (cloze models: a [MASK] appended)."""
    if not model.causal:
        b = items_BxL.shape[0]
        items_BxL = jnp.concatenate(
            [items_BxL[:, 1:], jnp.full((b, 1), model.mask_item, items_BxL.dtype)], axis=1
        )
        feedback_BxL = jnp.concatenate(
            [feedback_BxL[:, 1:], jnp.full((b, 1), model.mask_feedback, feedback_BxL.dtype)], axis=1
        )
    return items_BxL, feedback_BxL


def appeal_scores(
    model: SequenceModel,
    hidden_BxD: jax.Array,
    items_BxW: jax.Array,
    history_items_BxL: jax.Array,
    history_feedback_BxL: jax.Array,
) -> jax.Array:
    """The appeal head's scores ``[B, W]`` of chosen items: the logit that the listener likes
    each once it is played (id 0 scores -inf). The history (the model's input tokens) feeds
    the head's repeat term, if it has one."""
    s = score_items(model.appeal_query(hidden_BxD), model.appeal_table(), items_BxW)
    repeat_Bx1xW = model.repeat_scores(history_items_BxL, history_feedback_BxL, items_BxW[:, None])
    return s if repeat_Bx1xW is None else s + repeat_Bx1xW[:, 0]


def score_items(query_BxD: jax.Array, table_VxD: jax.Array, items_BxW: jax.Array) -> jax.Array:
    """Scores ``[B, W]`` of chosen items (id 0, padding, scores -inf)."""
    s = jnp.einsum("bd,bwd->bw", query_BxD, table_VxD[items_BxW])
    return jnp.where(items_BxW > 0, s, -jnp.inf)


def catalog_scores(
    query_BxD: jax.Array, table_VxD: jax.Array, exclude_BxS: jax.Array | None = None
):
    """Scores ``[B, V+1]`` over the whole catalog; padding and excluded items score -inf."""
    return mask_catalog(query_BxD @ table_VxD.T, exclude_BxS)


def model_catalog_scores(
    model: SequenceModel,
    query_BxD: jax.Array,
    items_BxL: jax.Array,
    feedback_BxL: jax.Array,
    exclude_BxS: jax.Array | None = None,
) -> jax.Array:
    """The model's catalog scores ``[B, V+1]`` of a history: the query's dot products plus,
    with ``model.catalog_repeats``, the repeat term of each item the history holds."""
    return mask_catalog(
        with_catalog_repeats(model, query_BxD @ model.item_table().T, items_BxL, feedback_BxL),
        exclude_BxS,
    )


def with_catalog_repeats(
    model: SequenceModel, raw_BxV: jax.Array, items_BxL: jax.Array, feedback_BxL: jax.Array
) -> jax.Array:
    """Raw catalog scores with the catalog repeat term added to the history's items (unchanged
    without ``model.catalog_repeats``: only items in the history have one)."""
    rep_Bx1xL = model.catalog_repeat_scores(items_BxL, feedback_BxL, items_BxL[:, None])
    if rep_Bx1xL is None:
        return raw_BxV
    rows = jnp.arange(raw_BxV.shape[0])[:, None]
    base_BxL = jnp.take_along_axis(raw_BxV, items_BxL, axis=1)
    # A repeated item gets the same value from each of its slots, so set (not add) is exact.
    return raw_BxV.at[rows, items_BxL].set(base_BxL + rep_Bx1xL[:, 0])


def catalog_repeat_offsets(
    model: SequenceModel, items_BxW: jax.Array, items_BxL: jax.Array, feedback_BxL: jax.Array
) -> jax.Array | None:
    """The catalog repeat term ``[B, W]`` of chosen items (None without one)."""
    rep = model.catalog_repeat_scores(items_BxL, feedback_BxL, items_BxW[:, None])
    return None if rep is None else rep[:, 0]


def mask_catalog(scores_BxV: jax.Array, exclude_BxS: jax.Array | None = None) -> jax.Array:
    """Catalog scores with padding (item 0) and each row's excluded items set to -inf."""
    s = scores_BxV.at[:, 0].set(-jnp.inf)
    if exclude_BxS is not None:
        rows = jnp.arange(s.shape[0])[:, None]
        s = s.at[rows, exclude_BxS].set(-jnp.inf)  # id 0 in the padding of exclude is -inf already
    return s


def target_ranks(scores_BxV: jax.Array, target_B: jax.Array) -> jax.Array:
    """0-based rank of each target among all items; ties count against the target."""
    t = jnp.take_along_axis(scores_BxV, target_B[:, None], axis=1)
    higher_or_tied = (scores_BxV >= t).sum(axis=1) - 1
    return higher_or_tied


def item_ranks(scores_BxV: jax.Array, items_BxW: jax.Array) -> jax.Array:
    """0-based catalog rank ``[B, W]`` of chosen items (ties against them).

    One [B, V] comparison per window slot (W is small): cheaper than sorting every row, and
    memory stays O(B x V) however large W is.
    """
    s_WxB = jnp.take_along_axis(scores_BxV, items_BxW, axis=1).T
    count = lambda s_B: (scores_BxV >= s_B[:, None]).sum(axis=1)
    return jax.lax.map(count, s_WxB).T - 1


def top_k(query_BxD: jax.Array, table_VxD: jax.Array, k: int, exclude_BxS: jax.Array | None = None):
    """The ``k`` best items (ids, scores) per query."""
    scores, ids = jax.lax.top_k(catalog_scores(query_BxD, table_VxD, exclude_BxS), k)
    return ids, scores
