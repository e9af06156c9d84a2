"""Serving: top-k recommendation from a history, and export of that function with jax.export.

The exported artifact takes left-padded histories ``items[B, L]`` (dense item ids, 0 padding) and
``feedback[B, L]`` (feedback-type index + 1, 0 padding) for any batch size B, and returns the
``k`` best dense item ids and their scores, through the same :mod:`jaxrec.inference` path that
evaluation measures. Parameters are baked in as constants, so the artifact is self-contained;
``vocab.json`` beside it maps dense ids back to the source's item ids and names the feedback
types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec import inference
from jaxrec.model import SequenceModel

PLATFORMS = ("cpu", "cuda", "tpu")


def recommend_fn(model: SequenceModel, k: int):
    """A pure function (items_BxL, feedback_BxL) -> (ids_Bxk, scores_Bxk) closing over ``model``."""
    graphdef, state = nnx.split(model)

    def fn(items_BxL: jax.Array, feedback_BxL: jax.Array):
        m = nnx.merge(graphdef, state)
        query = inference.user_query(m, items_BxL, feedback_BxL)
        return inference.top_k(query, m.item_table(), k)

    return fn


def export(
    model: SequenceModel,
    max_len: int,
    k: int,
    out: str | Path,
    item_vocab: np.ndarray,
    feedback_types: tuple[str, ...],
    platforms=PLATFORMS,
) -> Path:
    """Serialises top-k recommendation to ``out/recommend.jax`` (+ ``vocab.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, max_len), jnp.int32)
    exported = jax.export.export(jax.jit(recommend_fn(model, k)), platforms=platforms)(spec, spec)
    (out / "recommend.jax").write_bytes(exported.serialize())
    (out / "vocab.json").write_text(
        json.dumps(
            {
                "items": [
                    None if v is None else (v.item() if hasattr(v, "item") else v)
                    for v in item_vocab.tolist()
                ],
                "feedback_types": list(feedback_types),
                "max_len": max_len,
                "k": k,
            }
        )
    )
    return out / "recommend.jax"


class Recommender:
    """Loads an exported artifact and answers with source item ids."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self._fn = jax.export.deserialize(bytearray((path / "recommend.jax").read_bytes()))
        meta = json.loads((path / "vocab.json").read_text())
        self.items = meta["items"]
        self.feedback_types = meta["feedback_types"]
        self.max_len = int(meta["max_len"])
        self._item_index = {v: i for i, v in enumerate(self.items) if i > 0}

    def encode(self, history: list[tuple[Any, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded arrays from ``[(source_item_id, feedback_type), ...]`` (oldest first);
        unknown items are skipped, unknown feedback types are an error."""
        items = np.zeros((1, self.max_len), np.int32)
        fb = np.zeros((1, self.max_len), np.int32)
        known = [(self._item_index[i], f) for i, f in history if i in self._item_index]
        for slot, (i, f) in zip(
            range(self.max_len - len(known[-self.max_len :]), self.max_len),
            known[-self.max_len :],
            strict=True,
        ):
            if f not in self.feedback_types:
                raise ValueError(f"unknown feedback type {f!r}; known: {self.feedback_types}")
            items[0, slot], fb[0, slot] = i, self.feedback_types.index(f) + 1
        return items, fb

    def __call__(self, history: list[tuple[Any, str]]) -> list[tuple[Any, float]]:
        items, fb = self.encode(history)
        ids, scores = self._fn.call(items, fb)
        return [(self.items[int(i)], float(s)) for i, s in zip(ids[0], scores[0], strict=True)]
