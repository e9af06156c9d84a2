"""The experiments' Markdown reports: the report builder, the baseline comparison and the
closing provenance sections, and ``finish`` (report + results.json data of an experiment)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jaxrec.eval import paired
from jaxrec.experiments.overrides import flags_text, get_path, portable_json
from jaxrec.experiments.runner import ExperimentContext, Run
from jaxrec.experiments.stats import fmt_ms, metric_values


class MarkdownReport:
    """A markdown report assembled in order: text, tables, images, details."""

    def __init__(self, title: str):
        self.parts: list[str] = [f"# {title}"]

    def text(self, *paragraphs: str) -> None:
        """Paragraphs (empty ones skipped)."""
        self.parts.extend(p for p in paragraphs if p)

    def heading(self, text: str, level: int = 2) -> None:
        """A heading (``##`` by default)."""
        self.parts.append(f"{'#' * level} {text}")

    def bullets(self, items: Iterable[str]) -> None:
        """A bullet list (nothing for no items)."""
        items = [f"- {i}" for i in items]
        if items:
            self.parts.append("\n".join(items))

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A table with one header row."""
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.parts.append("\n".join(lines))

    def image(self, path: Path, alt: str) -> None:
        """An image next to the report (linked by file name)."""
        self.parts.append(f"![{alt}]({path.name})")

    def code(self, text: str, lang: str = "") -> None:
        """A fenced code block."""
        self.parts.append(f"```{lang}\n{text}\n```")

    def details(self, summary: str, body: str) -> None:
        """A collapsed ``<details>`` section."""
        self.parts.append(f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>")

    def render(self) -> str:
        """The whole report as Markdown text."""
        return "\n\n".join(self.parts) + "\n"


def add_provenance(report: MarkdownReport, ctx: ExperimentContext) -> None:
    """The closing sections: the exact command, the overrides and each arm's resolved config."""
    report.heading("How this was made")
    report.text("Command:")
    report.code(ctx.command, "bash")
    seeds = ", ".join(str(int(ctx.base.seed) + k) for k in range(ctx.seeds))
    report.bullets(
        [
            f"seeds: {seeds} (`config.seed` = base seed + k"
            + (
                "; the simulator's data depends on it too, so the spread covers data and "
                "initialisation)"
                if get_path(ctx.base, "data.source", "") == "simulator"
                else ")"
            ),
            f"quick mode: {'on' if ctx.quick else 'off'}"
            + (
                f"; caps applied to the base config: `{flags_text(ctx.quick_overrides)}`"
                if ctx.quick
                else ""
            ),
            "base config (the config file with its `--config.*` overrides"
            + (" and the quick caps" if ctx.quick else "")
            + "): `base_config.json`",
            f"overrides common to every arm: `{flags_text(ctx.common)}`",
            "each arm x seed is a `jaxrec.train.train` run in `runs/<arm>/seed<k>/` "
            "(`config.json`, `metrics.jsonl`, `eval_test.json`, `checkpoints/`); re-running the "
            "command reuses finished runs",
        ]
    )
    report.table(
        ["arm", "what", "overrides on the base config", "runs"],
        [
            (
                f"`{a.name}`",
                a.note or a.label,
                f"`{flags_text(a.overrides)}`",
                f"`runs/{a.name}/seed0`" + (f" … `seed{ctx.seeds - 1}`" if ctx.seeds > 1 else ""),
            )
            for a in ctx.arms
        ],
    )
    for arm in ctx.arms:
        report.details(
            f"resolved config of <code>{arm.name}</code> (seed {int(ctx.base.seed)})",
            "```json\n" + portable_json(ctx.config(arm, 0)) + "\n```",
        )


def write_report(ctx: ExperimentContext, report: MarkdownReport) -> Path:
    """Adds the provenance sections and writes ``OUT/report.md``."""
    add_provenance(report, ctx)
    path = ctx.out / "report.md"
    path.write_text(report.render())
    return path


BASELINE_KEYS = ("pairwise_accuracy", "hr@10", "ndcg@10")


def add_baselines(report: MarkdownReport, runs: dict[str, list[Run]]) -> None:
    """Every arm against the simplest scorers on the same test windows (same seed's data)."""
    first = next(iter(runs.values()), [])
    names = sorted({n for r in first for n in r.baselines})
    if not names:
        return
    report.heading("Against the baselines")
    report.text(
        "Non-personalised and item-item baselines (`jaxrec baselines`, jaxrec/eval/baselines.py) "
        "fitted on the training part of each run's own data and scored on exactly its test "
        "windows. A model arm below the best baseline has learned less than counting does."
    )
    rows = [
        [
            f"baseline: {n}",
            *(
                fmt_ms([r.baselines[n][k] for r in first if n in r.baselines])
                for k in BASELINE_KEYS
            ),
        ]
        for n in names
    ]
    rows += [
        [f"arm: {arm}", *(fmt_ms(metric_values(arm_runs, k)) for k in BASELINE_KEYS)]
        for arm, arm_runs in runs.items()
    ]
    for key, label in CEILINGS:
        if all(key in r.test for r in first):
            rows.append([f"ceiling: {label}", fmt_ms([r.test[key] for r in first]), "", ""])
    report.table(["scorer", *(f"test {k}" for k in BASELINE_KEYS)], rows)

    def best(run: Run, key: str) -> float:
        vals = [m[key] for m in run.baselines.values() if math.isfinite(m.get(key, math.nan))]
        return max(vals) if vals else math.nan

    margin = [
        [
            arm,
            fmt_ms([r.test["pairwise_accuracy"] - best(r, "pairwise_accuracy") for r in rs]),
            pooled_interval(rs, "pairwise_accuracy"),
            fmt_ms([r.test["hr@10"] - best(r, "hr@10") for r in rs if "hr@10" in r.test]),
            pooled_interval(rs, "hr@10"),
        ]
        for arm, rs in runs.items()
        if all(r.baselines for r in rs)
    ]
    report.table(
        [
            "arm",
            "pairwise accuracy − best baseline's",
            "paired 95% CI, verdict",
            "hr@10 − best baseline's",
            "paired 95% CI, verdict",
        ],
        margin,
    )
    report.text(
        f"The baseline rows use the first arm's runs; each arm's margin is against the best "
        f"baseline of its own runs (same seed, same split). {len(first)} seed(s). The interval "
        "is a paired bootstrap over the test windows of all seeds pooled (each seed's windows "
        "against its own best baseline; on the same data, each window's model terms averaged "
        'over seeds); "beats" only when it excludes 0, else "level".'
    )


# Known ceilings that simulator runs report (jaxrec/eval/ceilings.py), pairwise accuracy only.
CEILINGS = (
    ("oracle_pairwise_accuracy", "noise-free utility (simulator)"),
    ("history_ceiling_pairwise_accuracy", "taste from the history, true item vectors"),
)


def pooled_interval(runs: list[Run], metric: str) -> str:
    """``[low, high] verdict`` of the model minus each run's best baseline (by value) on
    ``metric``, paired over the pooled test windows of ``runs`` (``windows_test.npz``)."""
    loaded = []
    for r in runs:
        path = Path(r.workdir) / "windows_test.npz"
        if not path.exists() or not r.baselines:
            return "—"
        w = paired.load(path)
        if any(metric not in w.get(src, {}) for src in ("model", *r.baselines)):
            return "—"
        loaded.append((w, r.baselines))
    c, _ = paired.against_best(loaded, metric)
    return f"[{c['low']:+.4f}, {c['high']:+.4f}] {c['verdict']}"


def finish(
    ctx: ExperimentContext,
    report: MarkdownReport,
    plots: list[Path],
    runs: dict[str, list[Run]],
    summary: Any,
) -> dict[str, Any]:
    """Writes the report and returns an experiment's result (what results.json holds)."""
    add_baselines(report, runs)
    return {
        "report": write_report(ctx, report),
        "plots": plots,
        "arms": {k: [r.to_json() for r in v] for k, v in runs.items()},
        "summary": summary,
    }
