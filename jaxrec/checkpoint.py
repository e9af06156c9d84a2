"""Orbax checkpoints of the training state, restorable onto any mesh, and checksummed.

Orbax writes a step atomically (a temporary directory renamed when complete), but nothing
checks array bytes on restore: a flipped or truncated chunk restores silently as garbage. So
every saved step gets ``jaxrec_checksums.json`` (SHA-256 and size of each file) once orbax has
finished it, and :meth:`Checkpointer.verify` compares the step against it before a restore.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxrec.hashing import artifact_files, file_digest

MANIFEST = "jaxrec_checksums.json"


class DamagedCheckpoint(RuntimeError):
    """A checkpoint whose files do not match their checksums (or cannot be restored)."""


class CheckpointSaveError(OSError):
    """A save that failed (disk full, unwritable, ...); the steps saved before are intact."""


def _files(step_dir: Path) -> dict[str, Path]:
    return artifact_files(step_dir, MANIFEST)


class Checkpointer:
    """Saves and restores pytrees of arrays under ``WORKDIR/<name>/<step>``."""

    def __init__(self, workdir: str | Path, max_to_keep: int = 2, name: str = "checkpoints"):
        self.workdir = Path(workdir).absolute()
        self.name = name
        self.directory = self.workdir / name
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, extra: dict[str, Any] | None = None) -> None:
        """Saves arrays ``state`` and a JSON-able ``extra`` (e.g. the data iterator's state),
        waits for orbax to finish the step, then writes its checksum manifest.

        Raises CheckpointSaveError (one line: the step, the cause, the free space) when the
        save fails; orbax writes a step to a temporary directory and renames it only when
        complete, so the steps saved before stay intact."""
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {})
                ),
            )
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                self._write_manifest(step)
        except Exception as e:
            cause = " ".join(str(e).split())
            if "No space left on device" in cause:  # tensorstore buries it in a long path
                cause = "No space left on device"
            cause = cause[:300] or type(e).__name__
            free = shutil.disk_usage(self.directory).free
            try:
                last = [s for s in self.all_steps() if s != step and self.has_manifest(s)]
            except Exception:  # the manager itself may be unusable now
                last = []
            raise CheckpointSaveError(
                f"{self.directory / str(step)}: cannot be saved ({cause}); "
                f"{free / 2**20:.1f} MiB free on its filesystem; the steps saved before in "
                f"{self.directory} are untouched ({last or 'none yet'})"
            ) from e

    def _write_manifest(self, step: int) -> None:
        step_dir = self.directory / str(step)
        manifest = {
            rel: {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for rel, p in _files(step_dir).items()
        }
        tmp = step_dir / (MANIFEST + ".tmp")
        try:
            tmp.write_text(json.dumps(manifest, indent=1))
            tmp.replace(step_dir / MANIFEST)  # atomic: a manifest is whole or absent
        finally:
            tmp.unlink(missing_ok=True)

    def has_manifest(self, step: int) -> bool:
        return (self.directory / str(step) / MANIFEST).exists()

    def verify(self, step: int) -> str | None:
        """None when ``step``'s files match its manifest; else why not (one line)."""
        step_dir = self.directory / str(step)
        manifest_path = step_dir / MANIFEST
        if not manifest_path.exists():
            return f"no {MANIFEST}"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            return f"unreadable {MANIFEST}: {e}"
        files = _files(step_dir)
        missing = sorted(set(manifest) - set(files))
        if missing:
            return f"missing file {missing[0]}" + (
                f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            )
        extra = sorted(set(files) - set(manifest))
        if extra:
            return f"unexpected file {extra[0]}"
        for rel, want in manifest.items():
            path = files[rel]
            if path.stat().st_size != want["bytes"]:
                return (
                    f"{rel}: {path.stat().st_size} bytes, {want['bytes']} were saved (truncated?)"
                )
            if file_digest(path) != want["sha256"]:
                return f"{rel}: SHA-256 differs from the one saved (corrupted bytes)"
        return None

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores onto the shardings that ``abstract_state``'s ShapeDtypeStructs carry.

        Raises DamagedCheckpoint when the files fail their checksums or orbax cannot read them.
        A step without a manifest (saved by a jaxrec before checksums, or killed between orbax's
        atomic rename and the manifest) is complete by orbax's own guarantee but unverified: it
        is restored with a warning.
        """
        if not self.has_manifest(step):
            print(
                f"warning: checkpoint {self.directory / str(step)} has no {MANIFEST}; "
                "restoring it unverified"
            )
        else:
            why = self.verify(step)
            if why is not None:
                raise DamagedCheckpoint(f"{self.directory / str(step)}: {why}")
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # tensorstore DATA_LOSS, a bad JSON, ...: all mean damage
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DamagedCheckpoint(f"{self.directory / str(step)}: cannot be read: {first}") from e
        return out["state"], dict(out["extra"] or {})

    def restore_newest_intact(
        self, abstract_state: Any, log: Any = print
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest step that restores intact: (step, state, extra), or None without steps.

        A damaged step is reported (step and reason), moved aside to ``WORKDIR/damaged/`` so a
        resumed run can save that step again, and the previous one is tried. Raises
        DamagedCheckpoint when steps exist but none is intact: a run must never silently start
        over and overwrite its own history."""
        steps = self.all_steps()
        reasons = []
        for step in reversed(steps):
            try:
                state, extra = self.restore(step, abstract_state)
            except DamagedCheckpoint as e:
                reasons.append(str(e))
                log(f"warning: damaged checkpoint, not used: {e}")
                self.move_aside(step)
                continue
            return step, state, extra
        if reasons:
            raise DamagedCheckpoint(
                f"{self.directory}: no intact checkpoint among steps {steps} ({reasons[-1]}); "
                f"damaged ones were moved to {self.workdir / 'damaged'}"
            )
        return None

    def move_aside(self, step: int) -> None:
        """Moves a step out of orbax's sight (kept for inspection, never deleted)."""
        if jax.process_index() == 0:
            dest = self.workdir / "damaged" / f"{self.name}-{step}-{int(time.time())}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), dest)
        self.manager.reload()

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
