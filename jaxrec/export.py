"""Export of a trained run as a self-contained serving artifact (docs/serving.md).

``export_run`` (``jaxrec export``) writes, into one directory:

- ``recommend.jax``: ``(items[B, L], feedback[B, L]) -> (ids[B, k], scores[B, k])``, serialised
  with ``jax.export`` for any batch size B, parameters baked in. Serving semantics live inside
  it, so every consumer gets them: events whose feedback type is not a model input are dropped
  from the model's input; items the history gave an excluded feedback type (default: the run's
  ``feedback.negative``) are never recommended, nor (``exclude_heard``) any item of the
  history; a history without input events gets the most popular training items.
- ``query.jax``: ``(items[B, L], feedback[B, L]) -> user vectors [B, D']``, for teams with their
  own ANN index over ``item_embeddings.npy`` (``[V + 1, D']``, row 0 padding).
- ``appeal.jax`` (models with an appeal head): ``(items[B, L], feedback[B, L], candidates[B, C])
  -> logits [B, C]`` that the listener likes each candidate once played: how to order a
  station's candidates (the score pairwise accuracy measures); candidate 0 scores -inf.
- ``vocab.json`` (dense id -> source item id; feedback type names), ``popularity.npy`` (dense ids,
  most positive training events first) and ``manifest.json`` (versions, config, step, metrics,
  shapes, platforms, SHA-256 of every other file).

Inputs are left-padded (newest event last), item 0 and feedback 0 are padding, and feedback is
the type index + 1. Load with :class:`jaxrec.serving.Recommender` (jax and numpy only).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec import inference
from jaxrec.hashing import artifact_files, file_digest
from jaxrec.model import SequenceModel
from jaxrec.serving import FORMAT, MANIFEST, Recommender

__all__ = ["PLATFORMS", "Recommender", "export", "export_run", "serving_fns"]

PLATFORMS = ("cpu", "cuda", "tpu")


def _type_mask(names: tuple[str, ...], feedback_types: tuple[str, ...], what: str) -> np.ndarray:
    """Boolean mask over feedback tokens (index + 1; 0 padding and the [MASK] type are False)."""
    unknown = [n for n in names if n not in feedback_types]
    if unknown:
        raise ValueError(f"{what}: unknown feedback type(s) {unknown}; known: {feedback_types}")
    mask = np.zeros(len(feedback_types) + 2, bool)
    for n in names:
        mask[feedback_types.index(n) + 1] = True
    return mask


def serving_fns(
    model: SequenceModel,
    k: int,
    feedback_types: tuple[str, ...],
    input_feedback: tuple[str, ...] | None = None,
    exclude_feedback: tuple[str, ...] = (),
    exclude_heard: bool = False,
    popularity_V: np.ndarray | None = None,
):
    """Pure ``(query_fn, recommend_fn, appeal_fn)`` of ``(items[B, L], feedback[B, L])``
    (``appeal_fn`` also takes ``candidates[B, C]``; None without an appeal head), closing over
    ``model`` and the serving rules (see the module docstring)."""
    graphdef, state = nnx.split(model)
    input_mask = jnp.asarray(
        _type_mask(tuple(input_feedback or feedback_types), feedback_types, "input_feedback")
    )
    exclude_mask = jnp.asarray(_type_mask(tuple(exclude_feedback), feedback_types, "exclude"))
    n_rows = model.num_items + 1
    pop = np.zeros(n_rows, np.float32) if popularity_V is None else popularity_V[:n_rows]
    pop = jnp.asarray(pop, jnp.float32)

    def model_input(items_BxL, feedback_BxL):
        """Keeps the input-role events, left-aligned again (newest last); (items, fb, keep)."""
        fb = jnp.clip(feedback_BxL, 0, input_mask.shape[0] - 1)
        keep = (items_BxL > 0) & input_mask[fb]
        b, length = items_BxL.shape
        slot = length - keep.sum(1, keepdims=True) + jnp.cumsum(keep, axis=1) - 1
        slot = jnp.where(keep, slot, length)  # out of range: dropped
        rows = jnp.arange(b)[:, None]
        new_items = jnp.zeros_like(items_BxL).at[rows, slot].set(items_BxL, mode="drop")
        new_fb = jnp.zeros_like(fb).at[rows, slot].set(fb, mode="drop")
        return new_items, new_fb, keep, fb

    def query_fn(items_BxL, feedback_BxL):
        m = nnx.merge(graphdef, state)
        items, fb, _, _ = model_input(items_BxL, feedback_BxL)
        return inference.user_query(m, items, fb)

    def recommend_fn(items_BxL, feedback_BxL):
        m = nnx.merge(graphdef, state)
        items, fb_in, keep, fb = model_input(items_BxL, feedback_BxL)
        query = inference.user_query(m, items, fb_in)
        excluded = exclude_mask[fb] | (exclude_heard & (items_BxL > 0))
        exclude = jnp.where(excluded, items_BxL, 0)
        scores = inference.model_catalog_scores(m, query, items, fb_in, exclude)
        cold_scores = inference.catalog_scores(
            jnp.ones((items_BxL.shape[0], 1), jnp.float32), pop[:, None], exclude
        )
        cold = ~keep.any(axis=1, keepdims=True)
        scores, ids = jax.lax.top_k(jnp.where(cold, cold_scores, scores), k)
        return ids, scores

    def appeal_fn(items_BxL, feedback_BxL, candidates_BxC):
        m = nnx.merge(graphdef, state)
        items, fb, _, _ = model_input(items_BxL, feedback_BxL)
        hidden = inference.user_hidden(m, items, fb)
        return inference.appeal_scores(m, hidden, candidates_BxC, items, fb)

    return query_fn, recommend_fn, (appeal_fn if model.has_appeal_head else None)


def _aval(name: str, a: Any) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [d if isinstance(d, int) else str(d) for d in a.shape],
        "dtype": str(a.dtype),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def export(
    model: SequenceModel,
    max_len: int,
    k: int,
    out: str | Path,
    item_vocab: np.ndarray,
    feedback_types: tuple[str, ...],
    platforms=PLATFORMS,
    *,
    input_feedback: tuple[str, ...] | None = None,
    exclude_feedback: tuple[str, ...] = (),
    exclude_heard: bool = False,
    popularity_V: np.ndarray | None = None,
    config: dict[str, Any] | None = None,
    step: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Writes the artifact to ``out`` (replacing an earlier export there); returns ``out``."""
    out = Path(out)
    feedback_types = tuple(feedback_types)
    num_items = int(model.num_items)
    if not 1 <= k <= num_items:
        raise ValueError(f"k: between 1 and the number of items ({num_items}), got {k}")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise FileExistsError(f"{out}: exists, is not empty and is not a jaxrec export")
    platforms = tuple(platforms)
    input_feedback = tuple(input_feedback or feedback_types)
    query_fn, rec_fn, appeal_fn = serving_fns(
        model, k, feedback_types, input_feedback, tuple(exclude_feedback), exclude_heard,
        popularity_V,
    )  # fmt: skip
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, max_len), jnp.int32)
    exp_rec = jax.export.export(jax.jit(rec_fn), platforms=platforms)(spec, spec)
    exp_query = jax.export.export(jax.jit(query_fn), platforms=platforms)(spec, spec)
    exp_appeal = None
    if appeal_fn is not None:
        b_c, c = jax.export.symbolic_shape("b, c")  # one scope for both symbolic sizes
        hist = jax.ShapeDtypeStruct((b_c, max_len), jnp.int32)
        cand = jax.ShapeDtypeStruct((b_c, c), jnp.int32)
        exp_appeal = jax.export.export(jax.jit(appeal_fn), platforms=platforms)(hist, hist, cand)
    table = np.asarray(jax.device_get(model.item_table()), np.float32)
    pop = np.zeros(num_items + 1) if popularity_V is None else np.asarray(popularity_V)
    order = np.argsort(-pop[1 : num_items + 1], kind="stable").astype(np.int32) + 1

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        (tmp / "recommend.jax").write_bytes(exp_rec.serialize())
        (tmp / "query.jax").write_bytes(exp_query.serialize())
        if exp_appeal is not None:
            (tmp / "appeal.jax").write_bytes(exp_appeal.serialize())
        np.save(tmp / "item_embeddings.npy", table, allow_pickle=False)
        np.save(tmp / "popularity.npy", order, allow_pickle=False)
        items = [None if v is None else (v.item() if hasattr(v, "item") else v) for v in item_vocab]
        (tmp / "vocab.json").write_text(
            json.dumps({"items": items, "feedback_types": list(feedback_types)})
        )
        inputs = [_aval("items", exp_rec.in_avals[0]), _aval("feedback", exp_rec.in_avals[1])]
        manifest = {
            "format": FORMAT,
            "versions": {
                "jaxrec": _version("jaxrec"),
                "jax": jax.__version__,
                "jaxlib": _version("jaxlib"),
                "numpy": np.__version__,
            },
            "platforms": list(platforms),
            "step": step,
            "metrics": metrics or {},
            "config": config,
            "serving": {
                "k": int(k),
                "max_len": int(max_len),
                "num_items": num_items,
                "input_feedback": list(input_feedback),
                "exclude_feedback": list(exclude_feedback),
                "exclude_heard": bool(exclude_heard),
                "cold_start": "a history without input events gets the items with the most "
                "positive training events; its scores are those counts",
                "padding": "left-padded, newest event last; item 0 / feedback 0 = padding; "
                "feedback = index into feedback_types + 1",
            },
            "functions": {
                "recommend": {
                    "file": "recommend.jax",
                    "inputs": inputs,
                    "outputs": [
                        _aval("ids", exp_rec.out_avals[0]),
                        _aval("scores", exp_rec.out_avals[1]),
                    ],
                },
                "query": {
                    "file": "query.jax",
                    "inputs": inputs,
                    "outputs": [_aval("user_vectors", exp_query.out_avals[0])],
                },
            },
            "item_embeddings": {
                "file": "item_embeddings.npy",
                "shape": list(table.shape),
                "dtype": str(table.dtype),
                "last_column_is_bias": model.item_bias is not None,
                "score": "user_vector @ item_embeddings[i]; row 0 is padding",
            },
            "popularity": {"file": "popularity.npy", "dtype": "int32"},
            "vocab": {"file": "vocab.json"},
        }
        if exp_appeal is not None:
            manifest["functions"]["appeal"] = {
                "file": "appeal.jax",
                "inputs": [*inputs, _aval("candidates", exp_appeal.in_avals[2])],
                "outputs": [_aval("like_logits", exp_appeal.out_avals[0])],
                "score": "log-odds that the listener likes each candidate once played; "
                "candidate 0 (padding) scores -inf",
            }
        manifest["files"] = {
            rel: {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for rel, p in artifact_files(tmp, MANIFEST).items()
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def step_metrics(workdir: str | Path, step: int) -> dict[str, Any]:
    """The validation metrics logged at ``step`` (metrics.jsonl) and the test metrics when
    eval_test.json was measured on that step; absent ones are left out."""
    workdir = Path(workdir)
    out: dict[str, Any] = {}
    log = workdir / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            valid = {k[6:]: v for k, v in row.items() if k.startswith("valid/")}
            if row.get("step") == step and valid:
                out["valid"] = valid
    test = workdir / "eval_test.json"
    if test.exists():
        try:
            t = json.loads(test.read_text())
        except ValueError:
            t = {}
        if t.get("selected_step") == step:
            out["test"] = {k: v for k, v in t.items() if k != "selected_step"}
    return out


def export_run(
    cfg: Any,
    workdir: str | Path,
    out: str | Path,
    k: int = 10,
    step: int | None = None,
    platforms=PLATFORMS,
    exclude_feedback: tuple[str, ...] | None = None,
    exclude_heard: bool = False,
) -> tuple[Path, int]:
    """Exports a training run's selected model (or that of ``step``); (out, step).

    ``exclude_feedback`` defaults to ``cfg.serving.exclude_feedback``, or when that is None to
    the run's ``feedback.negative`` types."""
    from jaxrec.data.counts import TrainingCounts
    from jaxrec.selection import load_selected

    model, data, step = load_selected(cfg, workdir, None if step is None else int(step))
    if exclude_feedback is None:
        exclude_feedback = cfg.serving.exclude_feedback
        if exclude_feedback is None:
            exclude_feedback = tuple(cfg.feedback.negative)
    counts = TrainingCounts.from_split(data.events, data.roles, data.labels)
    config = json.loads(cfg.to_json_best_effort()) if hasattr(cfg, "to_json_best_effort") else cfg
    path = export(
        model,
        int(cfg.data.max_len),
        int(k),
        out,
        data.events.item_vocab,
        data.events.feedback_types,
        platforms,
        input_feedback=tuple(cfg.feedback.input),
        exclude_feedback=tuple(exclude_feedback),
        exclude_heard=exclude_heard,
        popularity_V=counts.positives_V,
        config=config,
        step=int(step),
        metrics=step_metrics(workdir, int(step)),
    )
    return path, int(step)
