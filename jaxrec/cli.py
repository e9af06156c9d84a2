"""The ``jaxrec`` command line.

    jaxrec train    [--config FILE] --workdir DIR [--config.a.b=value ...]
    jaxrec eval     --workdir DIR [--split test|valid]
                    [--responsiveness [--negative_type T] [--neutral_type T]]
    jaxrec simulate --out DIR [--config FILE] [--config.data.simulator.x=value ...]
    jaxrec data prepare --source NAME --input PATH --out DIR [--config FILE] [--beam_runner R]
    jaxrec data stats DIR
    jaxrec experiment NAME [--config FILE] [--seeds 3] --out DIR [--quick]
        NAME: negatives | skip_inputs | num_random_negatives | feedback_mix | embeddings
    jaxrec baselines [--config FILE] --out DIR [--config.a.b=value ...]
    jaxrec sweep    [--config FILE] --workdir DIR --space 'KEY=loguniform(a,b)' [--space ...]
                    [--trials 20] [--storage URL] [--study NAME] [--metric M]
                    [--pruner median|none] [--config.a.b=value ...]   (docs/sweep.md)
    jaxrec export   --workdir DIR --out EXPORT_DIR [--k 10]
    jaxrec recommend --export EXPORT_DIR --history item:feedback,item:feedback,...

Configs are plain-Python files with ``get_config()`` (ml_collections); any field can be
overridden as ``--config.a.b=value``. Without ``--config``, the quickstart config is used.

A bad input (a config value, a missing or malformed file) prints one line,
``jaxrec <command>: <message>``, and exits with status 1; ``--debug`` (or JAXREC_DEBUG=1)
shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import flags
from ml_collections import ConfigDict

from jaxrec.base_config import complete
from jaxrec.cli_args import parse_flags


def cmd_train(argv: Sequence[str]) -> None:
    """``jaxrec train``: trains a config into ``--workdir`` (optionally multi-host)."""

    def define(f):
        flags.DEFINE_string(
            "workdir", None, "output dir (shared by all hosts)", flag_values=f, required=True
        )
        flags.DEFINE_bool(
            "distributed", False, "multi-host: call jax.distributed.initialize()", flag_values=f
        )
        # Only for clusters that do not configure themselves (e.g. N processes on one machine);
        # any of them implies --distributed.
        flags.DEFINE_string(
            "coordinator_address", None, "host:port of process 0 (jax.distributed)", flag_values=f
        )
        flags.DEFINE_integer("num_processes", None, "processes in the job", flag_values=f)
        flags.DEFINE_integer("process_id", None, "this process's index", flag_values=f)

    fv = parse_flags(argv, define)
    explicit = {
        k: fv[k].value
        for k in ("coordinator_address", "num_processes", "process_id")
        if fv[k].value is not None
    }
    if fv.distributed or explicit:
        import jax

        # Without arguments, TPU VMs and SLURM/GKE clusters configure themselves.
        jax.distributed.initialize(**explicit)
    from jaxrec.train import train

    train(fv.config, fv.workdir, progress=sys.stderr.isatty())


def cmd_baselines(argv: Sequence[str]) -> None:
    """Fits the baselines on the config's training part; prints and writes their metrics."""
    fv = parse_flags(
        argv,
        lambda f: flags.DEFINE_string("out", None, "output dir", flag_values=f, required=True),
    )
    from jaxrec.config import validate_config

    validate_config(fv.config)  # before any data is read
    from jaxrec.train import run_baselines

    run_baselines(fv.config, fv.out)


def cmd_eval(argv: Sequence[str]) -> None:
    """``jaxrec eval``: evaluates a training run (and its responsiveness)."""

    def define(f):
        flags.DEFINE_string("workdir", None, "dir of a training run", flag_values=f, required=True)
        flags.DEFINE_enum("split", "test", ["test", "valid"], "split", flag_values=f)
        flags.DEFINE_bool(
            "responsiveness",
            False,
            "also measure the reaction to a thumbs-down on the top-1 item "
            "(writes responsiveness.json; docs/serving.md)",
            flag_values=f,
        )
        for name, what in (("negative_type", "negative"), ("neutral_type", "control")):
            flags.DEFINE_string(
                name, None, f"--responsiveness: the {what} feedback to append", flag_values=f
            )

    fv = parse_flags(argv, define, config=False)
    from jaxrec.train import evaluate

    cfg = _run_config(fv.workdir)
    inputs = list(cfg.feedback.input)
    for name in ("negative_type", "neutral_type"):
        if fv[name].value is not None and not fv.responsiveness:
            raise SystemExit(f"jaxrec eval: --{name} needs --responsiveness")
        if fv[name].value is not None and fv[name].value not in inputs:
            raise SystemExit(
                f"jaxrec eval: --{name}: {fv[name].value!r} is not an input feedback type of "
                f"this run (unknown, or not in its feedback.input); one of {inputs}"
            )
    negatives = set(inputs) & set(cfg.feedback.negative)
    if fv.responsiveness and fv.negative_type is None and not negatives:
        raise SystemExit(
            "jaxrec eval: --negative_type: no feedback type of this run is both an input and a "
            f"negative; name one of {inputs}"
        )
    evaluate(cfg, fv.workdir, fv.split)
    if not fv.responsiveness:
        return
    from jaxrec.eval.responsiveness import format_report, responsiveness_report
    from jaxrec.selection import load_selected

    model, data, step = load_selected(cfg, fv.workdir)
    try:
        report = responsiveness_report(
            model, data, int(cfg.eval.k), fv.negative_type, fv.neutral_type, split=fv.split
        )
    except ValueError as e:  # e.g. no negative input type and no --negative_type
        if not str(e).startswith(("negative_type:", "neutral_type:")):
            raise
        raise SystemExit(f"jaxrec eval: --{e}") from None
    report["step"] = step
    path = Path(fv.workdir) / "responsiveness.json"
    path.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"({path})")
    print(json.dumps(report, indent=2))


def cmd_simulate(argv: Sequence[str]) -> None:
    """``jaxrec simulate``: writes the simulator's event table to ``--out``."""

    fv = parse_flags(
        argv, lambda f: flags.DEFINE_string("out", None, "output dir", flag_values=f, required=True)
    )
    from jaxrec.data import events, simulator

    cfg = fv.config
    table = simulator.simulate(cfg.data.simulator, int(cfg.seed))
    path = Path(fv.out) / "events.parquet"
    events.write_parquet(table, path)
    counts = table.group_by("feedback").aggregate([("feedback", "count")]).to_pydict()
    print(f"wrote {table.num_rows} events to {path}")
    for name, n in sorted(zip(counts["feedback"], counts["feedback_count"], strict=True)):
        print(f"feedback.{name}: {n}")


def cmd_data(argv: Sequence[str]) -> None:
    """``jaxrec data prepare ...`` and ``jaxrec data stats DIR``."""
    if not argv or argv[0] not in ("prepare", "stats"):
        raise SystemExit(
            "usage: jaxrec data prepare --source NAME --input PATH --out DIR [--config FILE] "
            "[--beam_runner DirectRunner]\n       jaxrec data stats DIR"
        )
    from jaxrec.data import prepare, registry

    if argv[0] == "stats":
        if len(argv) != 2:
            raise SystemExit("usage: jaxrec data stats DIR")
        ev = prepare.load_prepared(argv[1])
        positive = tuple(prepare.dataset_info(argv[1]).get("positive", ()))
        print(prepare.stats_lines(ev, positive))
        return

    def define(f):
        flags.DEFINE_string(
            "source", None, f"one of {sorted(registry.SOURCES)}", flag_values=f, required=True
        )
        flags.DEFINE_string("input", None, "source file", flag_values=f)
        flags.DEFINE_string("out", None, "output dir", flag_values=f, required=True)
        flags.DEFINE_string(
            "beam_runner", None, "build with Apache Beam on this runner", flag_values=f
        )
        flags.DEFINE_string(
            "beam_options",
            None,
            "Beam pipeline options, e.g. '--project=p --region=r'",
            flag_values=f,
        )

    fv = parse_flags(argv[1:], define)
    try:
        registry.get_source(fv.source)
    except ValueError as e:
        raise SystemExit(f"jaxrec data: --source: {e}") from None
    cfg = fv.config
    out = prepare.prepare(
        fv.source,
        fv.input,
        fv.out,
        cfg.data.options,
        sim_cfg=cfg.data.simulator,
        seed=int(cfg.seed),
        beam_runner=fv.beam_runner,
        beam_options=fv.beam_options,
    )
    if out["report"] is not None:
        print(out["report"].format())
    info = out["info"]
    print(f"prepared {info['events']} events of {fv.source} in {Path(fv.out) / info['tfds_dir']}")
    print(prepare.stats_lines(out["events"], tuple(info.get("positive", ()))))


def cmd_export(argv: Sequence[str]) -> None:
    """Writes a serving artifact of a run (docs/serving.md)."""

    def define(f):
        flags.DEFINE_string("workdir", None, "dir of a training run", flag_values=f, required=True)
        flags.DEFINE_string("out", None, "output dir", flag_values=f, required=True)
        flags.DEFINE_integer("k", 10, "recommendations per history", flag_values=f)
        flags.DEFINE_integer(
            "step", None, "checkpoint step to export (default: the selected one)", flag_values=f
        )
        flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "target platforms", flag_values=f)
        flags.DEFINE_list(
            "exclude_feedback",
            None,
            "never recommend items the history gave these feedback types (default: the run's "
            "feedback.negative; --exclude_feedback= for none)",
            flag_values=f,
        )
        flags.DEFINE_bool(
            "exclude_heard", False, "never recommend any item of the history", flag_values=f
        )

    fv = parse_flags(argv, define, config=False)
    from jaxrec import export

    cfg = _run_config(fv.workdir)
    path, step = export.export_run(
        cfg,
        fv.workdir,
        fv.out,
        k=fv.k,
        step=fv.step,
        platforms=tuple(fv.platforms),
        exclude_feedback=None if fv.exclude_feedback is None else tuple(fv.exclude_feedback),
        exclude_heard=fv.exclude_heard,
    )
    print(f"exported the step-{step} model of {fv.workdir} to {path}")


def cmd_recommend(argv: Sequence[str]) -> None:
    """Top-k from an export: one ``--history`` (tab-separated lines) or ``--input`` JSONL."""

    def define(f):
        flags.DEFINE_string(
            "export", None, "dir written by jaxrec export", flag_values=f, required=True
        )
        flags.DEFINE_string(
            "history", None, "item:feedback,item:feedback,... oldest first", flag_values=f
        )
        flags.DEFINE_string(
            "input", None, "JSONL file of histories ('-': stdin); JSON lines out", flag_values=f
        )
        flags.DEFINE_integer("k", None, "recommendations (<= the export's k)", flag_values=f)
        flags.DEFINE_enum(
            "on_unknown", "skip", ["skip", "error"], "unknown items / feedback", flag_values=f
        )

    fv = parse_flags(argv, define, config=False)
    from jaxrec import serving

    if (fv.history is None) == (fv.input is None):
        raise SystemExit("jaxrec recommend: give one of --history or --input")
    try:
        rec = serving.Recommender(fv.export)
        if fv.input is not None:
            text = sys.stdin.read() if fv.input == "-" else Path(fv.input).read_text()
            for line in serving.recommend_lines(rec, text.splitlines(), fv.k, fv.on_unknown):
                print(line)
            return
        history = serving.parse_history(fv.history)
        answer = rec.recommend([history], fv.k, fv.on_unknown)[0]
    except ValueError as e:  # a damaged export, a bad history, an unknown item (--on_unknown)
        raise SystemExit(f"jaxrec recommend: {' '.join(str(e).split())}") from None
    for problem in answer["unknown"]:
        print(f"jaxrec recommend: skipped {problem}", file=sys.stderr)
    if answer["cold_start"]:
        print("jaxrec recommend: no known history: the most popular items", file=sys.stderr)
    for rank, (item, score) in enumerate(zip(answer["items"], answer["scores"], strict=True), 1):
        print(f"{rank}\t{item}\t{score:.4f}")


def _run_config(workdir: str) -> ConfigDict:
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise SystemExit(f"jaxrec: {path} not found; is {workdir} a training workdir?")
    cfg = complete(ConfigDict(json.loads(path.read_text())), saved=True)
    # Evaluation and export restore onto whatever devices this machine has (checkpoints move
    # across meshes): a run trained on a (4, 2) mesh is still evaluated on a laptop.
    cfg.mesh.shape = (-1, 1)
    return cfg


def cmd_experiment(argv: Sequence[str]) -> None:
    """``jaxrec experiment NAME ...`` (see :mod:`jaxrec.experiments`)."""
    from jaxrec.experiments import cmd_experiment as run

    run(argv)


def cmd_sweep(argv: Sequence[str]) -> None:
    """``jaxrec sweep ...``: an Optuna search of ``jaxrec train`` runs (:mod:`jaxrec.sweep`)."""
    from jaxrec.sweep import cmd_sweep as run

    run(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "baselines": cmd_baselines,
    "experiment": cmd_experiment,
    "export": cmd_export,
    "recommend": cmd_recommend,
    "data": cmd_data,
    "train": cmd_train,
    "eval": cmd_eval,
    "simulate": cmd_simulate,
    "sweep": cmd_sweep,
}


def is_user_error(e: BaseException) -> bool:
    """Errors caused by the user's input (config, files), as opposed to bugs."""
    from jaxrec.checkpoint import DamagedCheckpoint
    from jaxrec.data.events import DataError
    from jaxrec.eval.evaluator import NonFiniteScores
    from jaxrec.train import NonFiniteLoss

    if isinstance(e, DataError | NonFiniteScores | DamagedCheckpoint | NonFiniteLoss | OSError):
        return True
    return isinstance(e, ValueError) and "config." in str(e)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``jaxrec`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("JAXREC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"jaxrec: unknown command {argv[0]!r}; one of {sorted(COMMANDS)}")
        return
    try:
        COMMANDS[argv[0]](argv[1:])
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        raise SystemExit(f"jaxrec {argv[0]}: {message}") from None


if __name__ == "__main__":
    main()
