"""What an adapter did to its input: rows read, kept, dropped (and why) and flagged.

Every input row an adapter reads is either kept or dropped with a reason, so
``rows_out + total_dropped == rows_in`` always holds. Flags count kept rows that looked odd
(an inconsistent ``previous_song``, a timestamp that goes backwards in the file) without
dropping them. Each reason keeps up to :data:`MAX_EXAMPLES` example rows, located by
``unit``: ``"line"`` is the 1-based physical line in a text file (the header is line 1),
``"row"`` the 0-based data row of a Parquet file. ``notes`` holds file-level remarks (e.g. that
a file was re-read because a quoted value spanned lines).
"""

from __future__ import annotations

import dataclasses
from typing import Any

MAX_EXAMPLES = 5


@dataclasses.dataclass
class Report:
    """Counts of what an adapter kept, dropped and flagged, with example rows per reason."""

    source: str
    path: str
    unit: str = "line"
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    flagged: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def total_flagged(self) -> int:
        return sum(self.flagged.values())

    def drop(self, reason: str, count: int, examples: list[dict[str, Any]] = ()) -> None:
        """Records ``count`` dropped rows under ``reason``."""
        self._add(self.dropped, reason, count, examples)

    def flag(self, reason: str, count: int, examples: list[dict[str, Any]] = ()) -> None:
        """Records ``count`` kept-but-suspicious rows under ``reason``."""
        self._add(self.flagged, reason, count, examples)

    def _add(self, counts: dict[str, int], reason: str, count: int, examples) -> None:
        if count <= 0:
            return
        counts[reason] = counts.get(reason, 0) + int(count)
        kept = self.examples.setdefault(reason, [])
        kept.extend(list(examples)[: MAX_EXAMPLES - len(kept)])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals, then ``reason -> {count, examples}`` per kind."""

        def entries(counts: dict[str, int]) -> dict[str, Any]:
            return {
                r: {"count": c, "examples": list(self.examples.get(r, []))}
                for r, c in counts.items()
            }

        return {
            "source": self.source,
            "path": self.path,
            "unit": self.unit,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "total_dropped": self.total_dropped,
            "total_flagged": self.total_flagged,
            "dropped": entries(self.dropped),
            "flagged": entries(self.flagged),
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """Human-readable summary, one reason per line followed by its examples."""
        where = "1-based file lines" if self.unit == "line" else "0-based rows"
        lines = [
            f"{self.source} {self.path}: read {self.rows_in} rows, kept {self.rows_out}, "
            f"dropped {self.total_dropped}, flagged {self.total_flagged} (examples by {where})"
        ]
        lines.extend(f"  note: {n}" for n in self.notes)
        for kind, counts in (("dropped", self.dropped), ("flagged", self.flagged)):
            for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {kind}: {reason}: {count}")
                for ex in self.examples.get(reason, []):
                    lines.append(f"    {_format_example(ex)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _format_example(ex: dict[str, Any]) -> str:
    loc = " ".join(f"{k} {ex[k]}" for k in ("line", "row") if k in ex)
    field = f", field {ex['field']!r}" if ex.get("field") else ""
    value = f": {ex['value']!r}" if "value" in ex else ""
    return f"{loc}{field}{value}"
