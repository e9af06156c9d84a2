"""SHA-256 checksums of the files of a directory: what export manifests and checkpoint
checksum manifests record, and what :mod:`jaxrec.serving` and :mod:`jaxrec.checkpoint` verify.

Standard library only, so both a serving host and the trainer can import it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_files(path: Path, manifest: str) -> dict[str, Path]:
    """Every file under ``path`` except the manifest, by POSIX relative path (what an export's
    manifest and a checkpoint step's checksum manifest cover)."""
    return {
        p.relative_to(path).as_posix(): p
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.relative_to(path).as_posix() != manifest
    }
