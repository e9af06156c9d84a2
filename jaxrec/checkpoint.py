"""Orbax checkpoints of the training state, restorable onto any mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores pytrees of arrays under ``WORKDIR/checkpoints/<step>``."""

    def __init__(self, workdir: str | Path, max_to_keep: int = 2, name: str = "checkpoints"):
        self.directory = Path(workdir).absolute() / name
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict[str, Any] | None = None) -> None:
        """Saves arrays ``state`` and a JSON-able ``extra`` (e.g. the data iterator's state)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {})
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings that ``abstract_state``'s ShapeDtypeStructs carry."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()
            ),
        )
        return out["state"], dict(out["extra"] or {})

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def drop_after(self, step: int) -> None:
        """Deletes the checkpoints saved after ``step`` (e.g. before resuming at ``step``)."""
        for s in self.all_steps():
            if s > step:
                self.manager.delete(s)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) matching a pytree of arrays, as a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
