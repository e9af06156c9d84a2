"""Device mesh and shardings: data parallel over ``data``, model parallel over ``model``."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

AXES = ("data", "model")
# The model's logical parameter axes (jaxrec.model.LOGICAL_AXES) onto mesh axes: item rows and
# the attention / MLP hidden width split over 'model', the model width replicated (None).
# config.mesh.rules overrides them, e.g. (("vocab", "model"), ("hidden", None), ("embed", None))
# to split only the item tables.
AXIS_RULES = (("vocab", "model"), ("hidden", "model"), ("embed", None))


def as_axis_rules(rules: Any) -> tuple[tuple[str, str | None], ...]:
    """``config.mesh.rules`` as (logical axis, mesh axis or None) pairs; raises ValueError for
    a pair of another shape or a mesh axis not in :data:`AXES`."""
    out = []
    for rule in rules:
        pair = tuple(rule) if isinstance(rule, (list, tuple)) else (rule,)
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(
                f"config.mesh.rules: each rule is (logical axis, mesh axis or None), got {rule!r}"
            )
        if pair[1] is not None and pair[1] not in AXES:
            raise ValueError(
                f"config.mesh.rules: {pair[0]!r} -> {pair[1]!r}; mesh axes: {list(AXES)} or None"
            )
        out.append((pair[0], pair[1]))
    return tuple(out)


def validate_mesh_config(cfg: Any, logical_axes: tuple[str, ...]) -> None:
    """Raises ValueError when ``config.mesh.rules`` (``cfg``: the mesh section) is malformed or
    does not map each of the model's ``logical_axes`` (``jaxrec.model.LOGICAL_AXES``; this
    module does not import the model) exactly once. ``config.mesh.shape`` depends on the devices
    present: :func:`make_mesh` checks it."""
    named = [logical for logical, _ in as_axis_rules(cfg.rules)]
    if sorted(named) != sorted(logical_axes):
        raise ValueError(
            f"config.mesh.rules: one rule for each of the model's axes {list(logical_axes)}, "
            f"got {named}"
        )


def make_mesh(cfg: Any) -> jax.sharding.Mesh:
    """Builds the mesh from ``config.mesh.shape`` (one entry may be -1: all remaining devices).

    Axes use Auto types so that XLA propagates shardings pjit-style through gathers.
    """
    shape = [int(s) for s in cfg.shape]
    if len(shape) != len(AXES):
        raise ValueError(f"config.mesh.shape: need {len(AXES)} entries {AXES}, got {shape}")
    n = jax.device_count()
    if shape.count(-1) > 1:
        raise ValueError(f"config.mesh.shape: at most one -1, got {shape}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if rest <= 0 or n % rest:
            raise ValueError(f"config.mesh.shape: {shape} does not divide {n} devices")
        shape[shape.index(-1)] = n // rest
    if int(np.prod(shape)) != n or min(shape) < 1:
        raise ValueError(
            f"config.mesh.shape: {shape} needs {int(np.prod(shape))} devices, have {n}"
        )
    return jax.make_mesh(tuple(shape), AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along the batch axis.

    On several hosts each process passes its own slice of the global batch.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return {k: jax.device_put(v, sharding) for k, v in batch.items()}
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
