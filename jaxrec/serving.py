"""Loading and calling an exported recommender: needs json, hashlib, numpy and jax only.

No flax and no jaxrec training code is imported here, so a serving host installs ``jax`` and
``numpy`` (plus ``flatbuffers``, which ``jax.export`` deserialisation uses) and nothing else.
``jaxrec export`` writes the artifact; docs/serving.md describes it file by file.

    rec = Recommender("EXPORT_DIR")               # verifies manifest.json first
    rec.recommend([[("item7", "play"), ("item3", "thumbs_down")], []])
    rec.user_vectors([[("item7", "play")]])       # [B, D'] for your own ANN index
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrec.hashing import artifact_files, file_digest

MANIFEST = "manifest.json"
FORMAT = "jaxrec-export/1"
ON_UNKNOWN = ("skip", "error")
# Batches are padded to one of these sizes (then chunked by the largest), so a long stream of
# requests compiles a handful of programs instead of one per batch size.
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ArtifactError(ValueError):
    """The export directory is incomplete, has unexpected files, or fails its checksums."""


class UnknownInput(ValueError):
    """A history names an item or a feedback type the export does not know (on_unknown='error')."""


def verify(path: str | Path) -> dict[str, Any]:
    """The manifest of an export directory, after checking that its files are exactly the ones it
    lists, with their sizes and SHA-256; raises ArtifactError naming the first bad file."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such export directory")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise ArtifactError(f"{path}: missing file {MANIFEST} (not a jaxrec export?)")
    try:
        manifest = json.loads(mpath.read_text())
        listed = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    files = artifact_files(path, MANIFEST)
    missing = sorted(set(listed) - set(files))
    if missing:
        raise ArtifactError(f"{path}: missing file {missing[0]}")
    extra = sorted(set(files) - set(listed))
    if extra:
        raise ArtifactError(f"{path}: unexpected file {extra[0]} (not in {MANIFEST})")
    for rel, want in sorted(listed.items()):
        p = files[rel]
        if p.stat().st_size != want["bytes"]:
            raise ArtifactError(
                f"{path}: file {rel} has {p.stat().st_size} bytes, the manifest says "
                f"{want['bytes']}"
            )
        if file_digest(p) != want["sha256"]:
            raise ArtifactError(f"{path}: file {rel} fails its SHA-256 check (modified?)")
    return manifest


def _json_id(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


class Recommender:
    """An exported recommender, answering with source item ids.

    Histories are ``[(source_item_id, feedback_type_name), ...]``, oldest first. Unknown items
    or feedback names are skipped (and reported) or refused, per ``on_unknown``. Histories
    longer than the export's ``max_len`` keep their newest ``max_len`` events. A history with no
    known input event gets the training part's most popular items (cold start).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = verify(self.path)
        m = self.manifest
        fns = m["functions"]
        self._recommend = jax.export.deserialize(
            bytearray((self.path / fns["recommend"]["file"]).read_bytes())
        )
        self._query = jax.export.deserialize(
            bytearray((self.path / fns["query"]["file"]).read_bytes())
        )
        self._appeal = None
        if "appeal" in fns:  # exports of models with an appeal head
            self._appeal = jax.export.deserialize(
                bytearray((self.path / fns["appeal"]["file"]).read_bytes())
            )
        vocab = json.loads((self.path / m["vocab"]["file"]).read_text())
        self.items: list[Any] = vocab["items"]
        self.feedback_types: tuple[str, ...] = tuple(vocab["feedback_types"])
        self.max_len = int(m["serving"]["max_len"])
        self.k = int(m["serving"]["k"])
        # Cross-checks: the manifest must describe the programs it ships with.
        if self._recommend.in_avals[0].shape[1] != self.max_len:
            raise ArtifactError(f"{self.path}: max_len in {MANIFEST} does not match the program")
        if self._recommend.out_avals[0].shape[1] != self.k:
            raise ArtifactError(f"{self.path}: k in {MANIFEST} does not match the program")
        self._index: dict[Any, int] = {}
        for i, v in enumerate(self.items):
            if i > 0:
                self._index[v] = i
                self._index.setdefault(str(v), i)
        self._fb_index = {name: t + 1 for t, name in enumerate(self.feedback_types)}

    # ------------------------------------------------------------------ arrays
    @property
    def item_embeddings(self) -> np.ndarray:
        """``[V + 1, D']`` as the scores use it (row 0 padding; see manifest['item_embeddings']
        for whether the last column is a bias)."""
        return np.load(self.path / self.manifest["item_embeddings"]["file"], allow_pickle=False)

    @property
    def popularity(self) -> list[Any]:
        """Source item ids, most popular first (positive training events): the cold start."""
        order = np.load(self.path / self.manifest["popularity"]["file"], allow_pickle=False)
        return [self.items[int(i)] for i in order]

    def item_index(self, item: Any) -> int | None:
        """The dense id of a source item id, or None."""
        if item in self._index:
            return self._index[item]
        return self._index.get(str(item))

    def encode(
        self, histories: list[list[tuple[Any, str]]], on_unknown: str = "skip"
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """Left-padded ``items[B, L]``, ``feedback[B, L]`` (type index + 1) and, per history,
        the problems found (unknown items / feedback names, skipped)."""
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown: one of {list(ON_UNKNOWN)}, got {on_unknown!r}")
        b, length = len(histories), self.max_len
        items = np.zeros((b, length), np.int32)
        fb = np.zeros((b, length), np.int32)
        problems: list[list[str]] = []
        for row, history in enumerate(histories):
            known, bad = [], []
            for pos, (item, feedback) in enumerate(history):
                i, f = self.item_index(item), self._fb_index.get(feedback)
                if i is None:
                    bad.append(f"event {pos}: unknown item {item!r}")
                if f is None:
                    bad.append(
                        f"event {pos}: unknown feedback type {feedback!r}; "
                        f"known: {list(self.feedback_types)}"
                    )
                if i is not None and f is not None:
                    known.append((i, f))
            if bad and on_unknown == "error":
                raise UnknownInput(f"history {row}: " + "; ".join(bad))
            known = known[-length:]  # the newest L events
            if known:
                items[row, length - len(known) :] = [i for i, _ in known]
                fb[row, length - len(known) :] = [f for _, f in known]
            problems.append(bad)
        return items, fb, problems

    def _run(self, fn, *arrays: np.ndarray) -> list[np.ndarray]:
        """Calls an exported function on row-aligned ``[B, ...]`` arrays in bucketed batches
        (padding rows are empty)."""
        outs = []
        top = _BUCKETS[-1]
        for start in range(0, len(arrays[0]), top):
            parts = [a[start : start + top] for a in arrays]
            size = next(s for s in _BUCKETS if s >= len(parts[0]))
            pad = size - len(parts[0])
            if pad:
                parts = [np.pad(a, ((0, pad), (0, 0))) for a in parts]
            res = fn.call(*parts)
            res = res if isinstance(res, tuple | list) else (res,)
            outs.append([np.asarray(r)[: size - pad] for r in res])
        if not outs:
            return [np.zeros((0, *a.shape[1:]), a.dtype) for a in fn.out_avals]
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    # ------------------------------------------------------------------ answers
    def recommend(
        self,
        histories: list[list[tuple[Any, str]]],
        k: int | None = None,
        on_unknown: str = "skip",
    ) -> list[dict[str, Any]]:
        """Per history: ``{"items": [...], "scores": [...], "cold_start": bool, "unknown":
        [...]}``, best first. Cold-start scores are training popularity counts, not model
        scores."""
        k = self.k if k is None else int(k)
        if not 1 <= k <= self.k:
            raise ValueError(f"k: between 1 and {self.k} (the k this export was made with)")
        items, fb, problems = self.encode(histories, on_unknown)
        ids, scores = self._run(self._recommend, items, fb)
        cold = ~self._input_present(items, fb)
        out = []
        for row in range(len(histories)):
            keep = np.isfinite(scores[row, :k])  # fewer than k items left after exclusion
            out.append(
                {
                    "items": [_json_id(self.items[int(i)]) for i in ids[row, :k][keep]],
                    "scores": [float(s) for s in scores[row, :k][keep]],
                    "cold_start": bool(cold[row]),
                    "unknown": problems[row],
                }
            )
        return out

    def _input_present(self, items: np.ndarray, fb: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(self.feedback_types) + 2, bool)
        for name in self.manifest["serving"]["input_feedback"]:
            mask[self._fb_index[name]] = True
        return ((items > 0) & mask[fb]).any(axis=1)

    def user_vectors(
        self, histories: list[list[tuple[Any, str]]], on_unknown: str = "skip"
    ) -> np.ndarray:
        """The query vectors ``[B, D']`` of the histories: score item i as
        ``vector @ item_embeddings[i]`` (no exclusion, no cold start: those are yours)."""
        items, fb, _ = self.encode(histories, on_unknown)
        (q,) = self._run(self._query, items, fb)
        return q

    @property
    def has_appeal(self) -> bool:
        """Whether the export carries the appeal head (``appeal.jax``)."""
        return self._appeal is not None

    def appeal(
        self,
        histories: list[list[tuple[Any, str]]],
        candidates: list[list[Any]],
        on_unknown: str = "skip",
    ) -> list[dict[str, Any]]:
        """Orders each history's candidates (e.g. the songs a station can play next) by how
        likely the listener is to like them once played: per history ``{"items": [...],
        "like_probability": [...], "unknown": [...]}``, most liked first. Unknown candidates
        are skipped and reported (``on_unknown="error"`` raises)."""
        if self._appeal is None:
            raise ArtifactError(f"{self.path}: this export has no appeal head (appeal.jax)")
        if len(candidates) != len(histories):
            raise ValueError(f"candidates: {len(candidates)} lists for {len(histories)} histories")
        items, fb, problems = self.encode(histories, on_unknown)
        width = max([len(c) for c in candidates] + [1])
        cand = np.zeros((len(histories), width), np.int32)
        for row, names in enumerate(candidates):
            ids = []
            for pos, item in enumerate(names):
                i = self.item_index(item)
                if i is None:
                    msg = f"candidate {pos}: unknown item {item!r}"
                    if on_unknown == "error":
                        raise UnknownInput(f"history {row}: {msg}")
                    problems[row].append(msg)
                else:
                    ids.append(i)
            cand[row, : len(ids)] = ids
        logits = np.concatenate(
            [
                np.asarray(
                    self._appeal.call(items[s : s + 256], fb[s : s + 256], cand[s : s + 256])
                )
                for s in range(0, len(items), 256)
            ]
            or [np.zeros((0, width), np.float32)]
        )
        out = []
        for row in range(len(histories)):
            keep = cand[row] > 0
            ids, lg = cand[row][keep], logits[row][keep]
            order = np.argsort(-lg, kind="stable")
            out.append(
                {
                    "items": [_json_id(self.items[int(i)]) for i in ids[order]],
                    "like_probability": [float(1 / (1 + np.exp(-x))) for x in lg[order]],
                    "unknown": problems[row],
                }
            )
        return out

    def __call__(self, history: list[tuple[Any, str]], on_unknown: str = "skip"):
        """``[(source_item_id, score), ...]`` for one history, best first."""
        r = self.recommend([history], on_unknown=on_unknown)[0]
        return list(zip(r["items"], r["scores"], strict=True))


# ---------------------------------------------------------------------- request parsing
def parse_history(text: str) -> list[tuple[str, str]]:
    """``"item:feedback,item:feedback,..."`` (oldest first) -> pairs; the item is everything
    before the last ``:``. Raises ValueError naming a malformed token."""
    history = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        item, sep, feedback = token.rpartition(":")
        if not sep or not item or not feedback:
            raise ValueError(f"malformed event {token!r}: expected item:feedback")
        history.append((item, feedback))
    return history


def parse_request(line: str) -> tuple[list[tuple[Any, str]], Any]:
    """One JSONL request -> (history, request id or None). Accepted: ``{"history": H, "id":
    ...}`` or a bare H, where H is a list of ``[item, feedback]`` pairs or ``{"item": ...,
    "feedback": ...}`` objects, or an ``"item:feedback,..."`` string."""
    try:
        req = json.loads(line)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    rid = None
    if isinstance(req, dict):
        if "history" not in req:
            raise ValueError('a JSON object needs a "history" field')
        rid, req = req.get("id"), req["history"]
    if isinstance(req, str):
        return parse_history(req), rid
    if not isinstance(req, list):
        raise ValueError(f"history: expected a list or a string, got {type(req).__name__}")
    history = []
    for pos, ev in enumerate(req):
        if isinstance(ev, dict) and "item" in ev and "feedback" in ev:
            ev = [ev["item"], ev["feedback"]]
        if not (isinstance(ev, list) and len(ev) == 2 and isinstance(ev[1], str)):
            raise ValueError(f"event {pos}: expected [item, feedback] or {{item, feedback}}")
        history.append((ev[0], ev[1]))
    return history, rid


def request_candidates(line: str) -> list[Any] | None:
    """The ``"candidates"`` list of a JSONL request object (to order by appeal), or None."""
    req = json.loads(line)
    if not isinstance(req, dict) or "candidates" not in req:
        return None
    cands = req["candidates"]
    if not isinstance(cands, list):
        raise ValueError(f"candidates: expected a list of item ids, got {type(cands).__name__}")
    return cands


def recommend_lines(
    rec: Recommender, lines: list[str], k: int | None = None, on_unknown: str = "skip"
) -> list[str]:
    """One JSON answer per non-blank request line, in order, each with its 1-based ``line``:
    ``{"items", "scores", "cold_start", "unknown"}``; for a request with ``"candidates"``
    (exports with an appeal head), those candidates ordered by like-probability,
    ``{"items", "like_probability", "unknown"}``; or ``{"error"}`` for a malformed line or
    (``on_unknown='error'``) one naming unknown items or feedback types."""
    if on_unknown not in ON_UNKNOWN:
        raise ValueError(f"on_unknown: one of {list(ON_UNKNOWN)}, got {on_unknown!r}")
    parsed: list[tuple[int, Any, list | None, list | None, str | None]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            history, rid = parse_request(line)
            cands = request_candidates(line)
            if cands is not None and not rec.has_appeal:
                raise ValueError("candidates: this export has no appeal head to order them")
            parsed.append((n, rid, history, cands, None))
        except ValueError as e:
            parsed.append((n, None, None, None, str(e)))
    ok = [p for p in parsed if p[4] is None]
    top = [p[2] for p in ok if p[3] is None]
    ordered = [p for p in ok if p[3] is not None]
    top_answers = iter(rec.recommend(top, k=k, on_unknown="skip") if top else [])
    appeal_answers = iter(
        rec.appeal([p[2] for p in ordered], [p[3] for p in ordered]) if ordered else []
    )
    out = []
    for n, rid, _, cands, error in parsed:
        head: dict[str, Any] = {"line": n} if rid is None else {"line": n, "id": rid}
        if error is None:
            answer = next(top_answers) if cands is None else next(appeal_answers)
            if answer["unknown"] and on_unknown == "error":
                error = "; ".join(answer["unknown"])
            else:
                head.update(answer)
        if error is not None:
            head["error"] = error
        out.append(json.dumps(head))
    return out
