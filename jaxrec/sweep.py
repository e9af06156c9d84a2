"""``jaxrec sweep``: a hyper-parameter search with Optuna, each trial a normal training run.

    jaxrec sweep [--config FILE] --workdir DIR --space 'optim.learning_rate=loguniform(1e-4,3e-3)'
                 [--space 'model.dropout=[0.1,0.3,0.5]' ...] [--trials 20] [--storage URL]
                 [--study NAME] [--metric ndcg@10] [--pruner median|none] [--config.a.b=value ...]

A space is ``KEY=loguniform(a,b)``, ``uniform(a,b)``, ``int(a,b)``, ``logint(a,b)`` or a list
``[v1,v2,...]`` of Python literals (categorical). Trial ``N`` is ``jaxrec train`` in
``DIR/trial_NNN``, run as a subprocess with the config, the ``--config.*`` overrides and the
trial's values as ``--config.KEY=value`` flags: exactly the run a user would start by hand.

The study lives in ``--storage`` (default ``sqlite:///DIR/study.db``): rerunning the same command
resumes it (finished trials count toward ``--trials``; a trial cut off by a crash of the sweep is
redone from its workdir's checkpoint), and several machines may share one study through a
database URL. The objective is the best validation value of ``--metric`` in the trial's
``metrics.jsonl``; test figures are only read, for the winner, from its ``eval_test.json``.
Writes ``DIR/sweep.md``, ``DIR/sweep.json`` and (with matplotlib) ``DIR/sweep.png``; see
docs/sweep.md.

Optuna is imported only when a sweep runs (``pip install -e '.[sweep]'``).
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_collections import ConfigDict

if TYPE_CHECKING:
    import optuna

MISSING_OPTUNA = "jaxrec sweep needs optuna: pip install -e '.[sweep]'"
KINDS = ("loguniform", "uniform", "int", "logint")
SPACE_FORMS = "KEY=loguniform(a,b) | uniform(a,b) | int(a,b) | logint(a,b) | [v1,v2,...]"
# A sweep process records a heartbeat in the storage; a RUNNING trial without one for
# GRACE_S seconds (its machine died) is failed and redone by whichever sweep runs next.
HEARTBEAT_S, GRACE_S = 60, 300
# Pruning never acts on the step-0 validation (the untrained model: differences are noise).
PRUNE_WARMUP_STEPS = 1


class SweepError(ValueError):
    """A bad ``jaxrec sweep`` argument; its message is one line."""


class TrialFailed(RuntimeError):
    """A trial's training run exited with an error or logged no validation value."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SystemExit(MISSING_OPTUNA) from None
    return optuna


# --- the search space --------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One ``--space`` entry: a config field and its distribution."""

    key: str
    kind: str  # one of KINDS, or "choice"
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def encoded(self) -> bool:
        """Whether the choices are stored in Optuna as their ``repr`` (it only takes None,
        bool, int, float and str; a tuple-valued field needs tuples)."""
        return not all(v is None or isinstance(v, bool | int | float | str) for v in self.choices)

    @property
    def numeric(self) -> bool:
        return self.kind in KINDS

    @property
    def log(self) -> bool:
        return self.kind in ("loguniform", "logint")

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value (decoded: what the config field gets)."""
        if self.kind in ("loguniform", "uniform"):
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        options = [repr(v) for v in self.choices] if self.encoded else list(self.choices)
        return self.decode(trial.suggest_categorical(self.key, options))

    def decode(self, stored: Any) -> Any:
        """A value as Optuna stores it -> the config value."""
        return ast.literal_eval(stored) if self.kind == "choice" and self.encoded else stored

    def checked_values(self) -> tuple[Any, ...]:
        """Values that must fit the config field: the bounds, or every choice."""
        if self.kind in ("loguniform", "uniform"):
            return (float(self.low), float(self.high))
        if self.kind in ("int", "logint"):
            return (self.low, self.high)
        return self.choices


def _literal(text: str) -> Any:
    return ast.literal_eval(text.strip())


def _choices(body: str) -> list[Any]:
    """``[v1,v2,...]`` as Python literals; bare words (``[dense,chunked]``) are strings, since
    quotes are awkward on a command line."""
    try:
        value = _literal(body)
    except (ValueError, SyntaxError):
        inner = body.strip()[1:-1]
        if any(c in inner for c in "[]()'\""):
            raise
        value = []
        for part in inner.split(","):
            try:
                value.append(_literal(part))
            except (ValueError, SyntaxError):
                if not re.fullmatch(r"\s*[\w.+-]+\s*", part):
                    raise
                value.append(part.strip())
    if not isinstance(value, list):
        raise ValueError("not a list")
    return value


def parse_space(text: str) -> Param:
    """``KEY=EXPR`` -> :class:`Param`; raises :class:`SweepError` (one line) when malformed."""
    m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*=\s*(.+?)\s*", text, flags=re.S)
    if not m:
        raise SweepError(f"--space {text!r}: expected {SPACE_FORMS}")
    key, expr = m.groups()
    where = f"--space {key}={expr}"
    if expr.startswith("["):
        try:
            choices = _choices(expr)
        except (ValueError, SyntaxError):
            raise SweepError(f"{where}: not a list of Python literals") from None
        if not choices:
            raise SweepError(f"{where}: an empty list")
        if len({repr(v) for v in choices}) < len(choices):
            raise SweepError(f"{where}: a value is listed twice")
        return Param(key, "choice", choices=tuple(choices))
    m = re.fullmatch(r"(\w+)\((.*)\)", expr, flags=re.S)
    if not m or m.group(1) not in KINDS:
        raise SweepError(f"{where}: expected {SPACE_FORMS}")
    kind, args = m.groups()
    try:
        bounds = [_literal(a) for a in args.split(",")]
    except (ValueError, SyntaxError):
        bounds = []
    integer = kind in ("int", "logint")
    ok_type = int if integer else int | float
    if len(bounds) != 2 or not all(
        isinstance(b, ok_type) and not isinstance(b, bool) for b in bounds
    ):
        what = "integers" if integer else "numbers"
        raise SweepError(f"{where}: {kind}(a,b) takes two {what}")
    low, high = bounds if integer else map(float, bounds)
    if not low < high:
        raise SweepError(f"{where}: needs a < b")
    if kind == "loguniform" and low <= 0 or kind == "logint" and low < 1:
        raise SweepError(f"{where}: a log scale needs a {'>= 1' if integer else '> 0'}")
    return Param(key, kind, low, high)


def _leaves(cfg: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, ConfigDict) else [f"{prefix}{k}"]
    return out


def check_space(cfg: ConfigDict, params: Sequence[Param], fixed: Sequence[str] = ()) -> None:
    """Every key must be an existing config field (not a group), given once, not also set by
    a ``--config.KEY`` override (``fixed``), and every value of its range must fit the field's
    type and pass :func:`jaxrec.config.validate_config`. Reads no data."""
    from jaxrec.config import validate_config

    seen: set[str] = set()
    for p in params:
        node: Any = cfg
        for part in p.key.split("."):
            node = node[part] if isinstance(node, ConfigDict) and part in node else None
            if node is None:
                break
        if node is None or isinstance(node, ConfigDict):
            close = difflib.get_close_matches(p.key, _leaves(cfg), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SweepError(f"--space {p.key}: no such config field (config.{p.key}){hint}")
        if p.key in seen:
            raise SweepError(f"--space {p.key}: given twice")
        seen.add(p.key)
        if p.key in fixed:
            raise SweepError(f"--space {p.key}: also set by --config.{p.key}; drop one")
        for value in p.checked_values():
            trial_cfg = copy.deepcopy(cfg)
            trial_cfg.unlock()
            *parents, leaf = p.key.split(".")
            group = trial_cfg
            for part in parents:
                group = group[part]
            try:
                group[leaf] = value
                validate_config(trial_cfg)
            except (TypeError, ValueError) as e:
                message = " ".join(str(e).split())
                raise SweepError(f"--space {p.key}: the value {value!r}: {message}") from None


def trial_flag(key: str, value: Any) -> str:
    """A value as the ``--config.KEY=value`` flag of ``jaxrec train``."""
    if isinstance(value, tuple | list):
        text = repr(tuple(value))
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"--config.{key}={text}"


def config_overrides(argv: Sequence[str], fv: Any) -> list[str]:
    """The ``--config.a.b=value`` (or ``--config.a.b value``) arguments of ``argv``, verbatim,
    so every trial gets exactly what the user typed (tuple flags do not re-serialise)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-") and name.startswith(("config.", "noconfig.")):
            out.append(arg)
            takes_value = name.startswith("config.") and not fv[name].boolean
            if "=" not in arg and takes_value and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return out


def _override_keys(overrides: Sequence[str]) -> set[str]:
    return {
        a.lstrip("-").split("=", 1)[0].removeprefix("no").removeprefix("config.")
        for a in overrides
        if a.startswith("-")
    }


# --- one trial ---------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` so far (a line still being written is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def best_value(rows: Sequence[dict[str, Any]], key: str, sign: float) -> tuple[float, int] | None:
    """(best finite value of ``key``, its step); ``sign`` +1 maximises, -1 minimises."""
    found = [(r[key], int(r["step"])) for r in rows if isinstance(r.get(key), int | float)]
    found = [(v, s) for v, s in found if math.isfinite(v)]
    return max(found, key=lambda vs: sign * vs[0]) if found else None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: the run stops; its checkpoints on disk stay whole
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_process(
    cmd: Sequence[str],
    metrics: Path,
    key: str,
    on_value: Callable[[float, int], bool],
    log: Path,
    poll_s: float = 1.0,
    on_start: Callable[[int], None] | None = None,
) -> int | None:
    """Runs ``cmd`` (output appended to ``log``), calling ``on_value(value, step)`` for every
    new finite ``key`` in ``metrics`` while it runs; ``on_value`` returning True stops the run
    (then None is returned, else the exit status). The process never outlives this call."""
    reported: set[int] = set()

    def poll() -> bool:
        for row in read_rows(metrics):
            value, step = row.get(key), int(row.get("step", -1))
            if step in reported or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            reported.add(step)
            if on_value(float(value), step):
                return True
        return False

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            if on_start is not None:
                on_start(proc.pid)
            while proc.poll() is None:
                if poll():
                    return None
                time.sleep(poll_s)
            poll()  # the rows of the last interval (the run has ended: no pruning left to do)
            return proc.returncode
        finally:
            _stop(proc)


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        return ""
    return next((line for line in reversed(lines) if line), "")


# --- the study ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_orphan(pid: int | None, trial_dir: str) -> None:
    """Kills a ``jaxrec train`` left running by a killed sweep (it would write into the
    workdir the retry resumes); only when /proc shows it is that run."""
    if not pid or not _alive(pid):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"jaxrec.cli" in cmdline and trial_dir.encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


def enqueue_retry(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial) -> None:
    """Queues a cut-off trial's values again, in its workdir (resumed from its checkpoint)."""
    attrs = {"retry_of": trial.number}
    if "workdir" in trial.user_attrs:
        attrs["workdir"] = trial.user_attrs["workdir"]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs, skip_if_exists=False)


def recover(study: optuna.Study, workdir: Path) -> list[int]:
    """Fails and re-queues the RUNNING trials of this machine whose sweep process is gone (a
    crash, a kill); returns their numbers. Other machines' trials are left to the heartbeat."""
    optuna = _optuna()
    host, lost = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or _alive(pid):
            continue
        if "workdir" in t.user_attrs:
            _kill_orphan(t.user_attrs.get("train_pid"), str(workdir / t.user_attrs["workdir"]))
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):  # another process got there first
            continue
        enqueue_retry(study, t)
        lost.append(t.number)
    return lost


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished trials, running trials). Finished: complete, pruned, or failed by the run
    itself; a trial cut off and re-queued is not (its retry is)."""
    state = _optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    finished = (state.COMPLETE, state.PRUNED)
    done = sum(
        t.state in finished or t.state == state.FAIL and t.number not in retried for t in trials
    )
    return done, sum(t.state == state.RUNNING for t in trials)


def _storage(url: str) -> Any:
    optuna = _optuna()
    kwargs: dict[str, Any] = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    # optuna 4.9 renamed the stale-trial callback; older 4.x only knows the first name.
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    name = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in params
        else "failed_trial_callback"
    )
    kwargs[name] = enqueue_retry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental"
        return optuna.storages.RDBStorage(url, **kwargs)


def _sampler(seed: int) -> Any:
    """TPE reseeded from each trial's number: deterministic for a seed, and a resumed or
    parallel sweep does not redraw the random starting points of trials 0, 1, ..."""
    optuna = _optuna()

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._tpe = optuna.samplers.TPESampler(seed=seed)

        def before_trial(self, study, trial):
            self._tpe = optuna.samplers.TPESampler(seed=seed * 100_003 + trial.number)
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self._tpe.after_trial(study, trial, state, values)

    return TrialSeededTPE()


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: show only its scheme
        return url.split("://", 1)[0] + "://..."


@dataclass
class Sweep:
    """Everything a sweep needs, checked before any trial starts."""

    workdir: Path
    config_file: Path
    overrides: list[str]  # --config.* flags of every trial (the user's, the metric's)
    params: list[Param]
    space: list[str]  # the --space texts, as given
    metric: str
    sign: float  # +1 maximise, -1 minimise
    trials: int
    storage: str
    study_name: str
    pruner: str
    seed: int

    @property
    def key(self) -> str:
        return f"valid/{self.metric}"

    @property
    def direction(self) -> str:
        return "maximize" if self.sign > 0 else "minimize"

    def spec(self) -> dict[str, Any]:
        """What must not change when a study is resumed (--trials may)."""
        return {
            "config": self.config_file.name,
            "overrides": self.overrides,
            "space": self.space,
            "metric": self.metric,
            "direction": self.direction,
        }

    def command(self, trial_dir: Path, values: dict[str, Any]) -> list[str]:
        """The trial's ``jaxrec train`` command line."""
        flags = [trial_flag(k, v) for k, v in values.items()]
        return [
            sys.executable,
            "-m",
            "jaxrec.cli",
            "train",
            "--workdir",
            str(trial_dir),
            "--config",
            str(self.config_file),
            *self.overrides,
            *flags,
        ]


def objective(sweep: Sweep, poll_s: float = 1.0) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: one ``jaxrec train`` subprocess per trial."""
    optuna = _optuna()

    def run(trial: optuna.Trial) -> float:
        values = {p.key: p.suggest(trial) for p in sweep.params}
        name = trial.user_attrs.get("workdir") or f"trial_{trial.number:03d}"
        trial_dir = sweep.workdir / name
        cmd = sweep.command(trial_dir, values)
        trial.set_user_attr("workdir", name)
        trial.set_user_attr("overrides", [trial_flag(k, v) for k, v in values.items()])
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        retry = trial.user_attrs.get("retry_of")
        print(
            f"trial {trial.number}: {_params_text(values)} -> {trial_dir}"
            + (f" (resumes trial {retry})" if retry is not None else ""),
            flush=True,
        )

        last_step = [0]

        def on_value(value: float, step: int) -> bool:
            trial.report(value, step)
            last_step[0] = step
            return sweep.pruner != "none" and trial.should_prune()

        log = trial_dir / "train.log"
        try:
            status = run_process(
                cmd,
                trial_dir / "metrics.jsonl",
                sweep.key,
                on_value,
                log,
                poll_s,
                on_start=lambda pid: trial.set_user_attr("train_pid", pid),
            )
        except KeyboardInterrupt:
            # The sweep is stopping (Ctrl-C, SIGTERM): this trial fails now and is redone,
            # from its checkpoint, when the same command runs again.
            enqueue_retry(trial.study, trial)
            raise
        best = best_value(read_rows(trial_dir / "metrics.jsonl"), sweep.key, sweep.sign)
        shown = "no value"
        if best is not None:
            trial.set_user_attr("best_value", best[0])
            trial.set_user_attr("best_step", best[1])
            shown = f"best {sweep.key} {best[0]:.4f} (step {best[1]})"
        if status is None:
            print(f"trial {trial.number}: pruned at step {last_step[0]}, {shown}", flush=True)
            raise optuna.TrialPruned(f"pruned at step {last_step[0]}")
        if status != 0 or best is None:
            line = _last_line(log) if status != 0 else f"no finite {sweep.key} logged"
            trial.set_user_attr("error", line)
            print(f"trial {trial.number}: failed: {line} ({log})", flush=True)
            raise TrialFailed(line)
        print(f"trial {trial.number}: complete, {shown}", flush=True)
        return best[0]

    return run


def _value_text(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else repr(v)


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value_text(v)}" for k, v in values.items())


def _open_study(sweep: Sweep) -> optuna.Study:
    optuna = _optuna()
    pruner = (
        optuna.pruners.MedianPruner(n_warmup_steps=PRUNE_WARMUP_STEPS)
        if sweep.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=_storage(sweep.storage),
        study_name=sweep.study_name,
        direction=sweep.direction,
        sampler=_sampler(sweep.seed),
        pruner=pruner,
        load_if_exists=True,
    )
    old = study.user_attrs.get("jaxrec_sweep")
    if old is None:
        study.set_user_attr("jaxrec_sweep", sweep.spec())
    elif old != sweep.spec():
        field = next(k for k in sweep.spec() if old.get(k) != sweep.spec()[k])
        raise SweepError(
            f"study {sweep.study_name!r} in {_redact(sweep.storage)} was started with "
            f"{field} {old.get(field)!r}, now {sweep.spec()[field]!r}: rerun it with the same "
            "arguments, or start another (--study NAME or another --workdir)"
        )
    return study


def run_sweep(sweep: Sweep, poll_s: float = 1.0) -> dict[str, Any]:
    """Runs trials until ``sweep.trials`` have finished (earlier runs of the study included),
    then writes the report; returns ``sweep.json``'s content."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here
    sweep.workdir.mkdir(parents=True, exist_ok=True)
    study = _open_study(sweep)
    lost = recover(study, sweep.workdir)
    if lost:
        print(f"trials {lost} were cut off by an earlier sweep: failed and queued again")
    done, _ = counts(study)
    if done:
        print(f"study {sweep.study_name!r}: {done} trial(s) already finished")
    func = objective(sweep, poll_s)
    while sum(counts(study)) < sweep.trials:
        study.optimize(func, n_trials=1, catch=(TrialFailed,))
    return write_report(sweep, study)


# --- the report --------------------------------------------------------------------------


def _trial_rows(sweep: Sweep, study: optuna.Study) -> list[dict[str, Any]]:
    trials = study.get_trials(deepcopy=False)
    retries = {t.user_attrs.get("retry_of"): t.number for t in trials}
    by_key = {p.key: p for p in sweep.params}
    rows = []
    for t in trials:
        state = t.state.name
        if t.state.name == "FAIL" and t.number in retries:
            state = f"FAIL (cut off; redone as trial {retries[t.number]})"
        rows.append(
            {
                "number": t.number,
                "params": {
                    k: by_key[k].decode(v) if k in by_key else v for k, v in t.params.items()
                },
                "state": state,
                "value": t.user_attrs.get("best_value"),
                "step": t.user_attrs.get("best_step"),
                "workdir": t.user_attrs.get("workdir"),
                "overrides": t.user_attrs.get("overrides", []),
                **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
            }
        )
    return rows


def write_report(sweep: Sweep, study: optuna.Study) -> dict[str, Any]:
    """Writes ``sweep.md``, ``sweep.json`` and (with matplotlib) ``sweep.png``; prints the
    winner. The winner's test metrics are read from its ``eval_test.json``, never computed."""
    rows = _trial_rows(sweep, study)
    try:
        best = study.best_trial
    except ValueError:  # no complete trial
        best = None
    winner: dict[str, Any] | None = None
    if best is not None:
        winner = next(r for r in rows if r["number"] == best.number)
        test_path = sweep.workdir / str(winner["workdir"]) / "eval_test.json"
        winner = {**winner, "test_file": str(test_path), "test": None}
        if test_path.exists():
            winner["test"] = json.loads(test_path.read_text())
    report = {
        "study": sweep.study_name,
        "storage": _redact(sweep.storage),
        "metric": sweep.key,
        "direction": sweep.direction,
        "space": sweep.space,
        "config": str(sweep.config_file),
        "overrides": sweep.overrides,
        "trials": rows,
        "winner": winner,
    }
    (sweep.workdir / "sweep.json").write_text(json.dumps(report, indent=2))
    md = sweep.workdir / "sweep.md"
    md.write_text(_markdown(sweep, rows, winner))
    png = _plot(sweep, rows, winner)
    print(f"sweep table: {md}" + (f" (plot: {png})" if png else ""))
    if winner is None:
        print("no trial completed: no winner")
    else:
        print(
            f"winner: trial {winner['number']} ({_params_text(winner['params'])}): "
            f"{sweep.key} {winner['value']:.4f} at step {winner['step']}"
            + _test_text(sweep, winner)
        )
    return report


def _test_text(sweep: Sweep, winner: dict[str, Any]) -> str:
    test = winner["test"]
    if test is None:
        return f"; no {winner['test_file']} on this machine"
    value = test.get(sweep.metric)
    shown = f"{value:.4f}" if isinstance(value, int | float) else "n/a"
    step = test.get("selected_step")
    return f"; test {sweep.metric} {shown} (step {step}, {winner['test_file']})"


def _cell(v: Any) -> str:
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _markdown(sweep: Sweep, rows: list[dict[str, Any]], winner: dict[str, Any] | None) -> str:
    keys = [p.key for p in sweep.params]
    head = ["", "trial", *keys, "state", f"best {sweep.key}", "step", "workdir"]
    lines = [
        f"# Sweep {sweep.study_name}",
        "",
        f"Objective: the best `{sweep.key}` of each run ({sweep.direction}), validation only; "
        f"{len(rows)} trial(s) in {_redact(sweep.storage)}.",
        f"Space: {', '.join(f'`{s}`' for s in sweep.space)}. Config: `{sweep.config_file}`"
        + (f" with `{' '.join(sweep.overrides)}`" if sweep.overrides else "")
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        mark = "**winner**" if winner is not None and r["number"] == winner["number"] else ""
        params = [_value_text(r["params"].get(k)) for k in keys]
        cells = [mark, str(r["number"]), *params, r["state"], _cell(r["value"]), _cell(r["step"])]
        lines.append("| " + " | ".join([*cells, f"`{r['workdir']}`"]) + " |")
    lines.append("")
    if winner is None:
        lines.append("No trial completed: no winner.")
    else:
        run_dir = sweep.workdir / str(winner["workdir"])
        command = shlex.join(
            ["jaxrec", "train", "--workdir", str(run_dir), "--config", str(sweep.config_file)]
            + sweep.overrides
            + winner["overrides"]
        )
        lines += [
            f"## Winner: trial {winner['number']}",
            "",
            f"`{sweep.key}` {winner['value']:.4f} at step {winner['step']}; the run: "
            f"`{run_dir}`, the same by hand: `{command}`.",
            "",
        ]
        if winner["test"] is None:
            lines.append(f"Test figures: `{winner['test_file']}` is not on this machine.")
        else:
            lines += [
                "Test figures of its selected model (read from "
                f"`{winner['test_file']}`; test was not used to choose):",
                "",
                "| metric | test |",
                "|---|---|",
            ]
            lines += [
                f"| {k} | {_cell(v)} |"
                for k, v in winner["test"].items()
                if isinstance(v, int | float)
            ]
    return "\n".join(lines) + "\n"


def _plot(sweep: Sweep, rows: list[dict[str, Any]], winner: dict[str, Any] | None) -> Path | None:
    """``sweep.png``: the validation value per trial and against each numeric parameter."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    numeric = [p for p in sweep.params if p.numeric]
    shown = [r for r in rows if r["value"] is not None]
    if not shown:
        return None
    fig = Figure(figsize=(4 * (1 + len(numeric)), 3.2), layout="constrained")
    axes = fig.subplots(1, 1 + len(numeric), squeeze=False)[0]
    panels = [("trial", None), *((p.key, p) for p in numeric)]
    for ax, (name, p) in zip(axes, panels, strict=True):
        for state, style in (("COMPLETE", "o"), ("PRUNED", "x")):
            pts = [r for r in shown if r["state"] == state]
            if not pts:
                continue
            xs = [r["number"] if p is None else r["params"].get(name) for r in pts]
            ax.plot(xs, [r["value"] for r in pts], style, label=state.lower(), alpha=0.8)
        if winner is not None:
            x = winner["number"] if p is None else winner["params"].get(name)
            ax.plot([x], [winner["value"]], "*", markersize=14, color="C3", label="winner")
        if p is not None and p.log:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(sweep.key)
    axes[0].legend(fontsize="small")
    path = sweep.workdir / "sweep.png"
    fig.savefig(path, dpi=100)
    return path


# --- the command -------------------------------------------------------------------------


def build_sweep(argv: Sequence[str]) -> Sweep:
    """Parses and checks ``jaxrec sweep``'s arguments (no data read, no trial started)."""
    from absl import flags

    from jaxrec.cli_args import DEFAULT_CONFIG, parse_flags
    from jaxrec.config import select_sign, validate_config
    from jaxrec.eval.metrics import metric_names

    def define(f: flags.FlagValues) -> None:
        flags.DEFINE_string("workdir", None, "sweep dir", flag_values=f, required=True)
        flags.DEFINE_multi_string("space", [], f"KEY=EXPR; EXPR: {SPACE_FORMS}", flag_values=f)
        flags.DEFINE_integer("trials", 20, "trials in the study", lower_bound=1, flag_values=f)
        flags.DEFINE_string("storage", None, "Optuna RDB URL", flag_values=f)
        flags.DEFINE_string("study", None, "study name (default: the workdir's)", flag_values=f)
        flags.DEFINE_string("metric", None, "default: config.train.select_metric", flag_values=f)
        flags.DEFINE_enum("pruner", "median", ["median", "none"], "pruner", flag_values=f)

    fv = parse_flags(argv, define)
    cfg = fv.config
    if not fv.space:
        raise SweepError(f"give at least one --space {SPACE_FORMS}")
    params = [parse_space(s) for s in fv.space]
    overrides = config_overrides(argv, fv)
    metric = fv.metric or str(cfg.train.select_metric)
    names = metric_names(int(cfg.eval.k))
    if metric not in names:
        raise SweepError(f"--metric {metric}: unknown; one of {', '.join(names)}")
    if metric != cfg.train.select_metric:
        # Each run then also selects its tested checkpoint by the sweep's metric.
        overrides.append(f"--config.train.select_metric={metric}")
        cfg = copy.deepcopy(cfg)
        cfg.train.select_metric = metric
    validate_config(cfg)
    check_space(cfg, params, fixed=sorted(_override_keys(overrides)))
    workdir = Path(fv.workdir).resolve()
    config_file = Path(getattr(fv["config"], "config_filename", None) or DEFAULT_CONFIG)
    return Sweep(
        workdir=workdir,
        config_file=config_file.resolve(),
        overrides=overrides,
        params=params,
        space=list(fv.space),
        metric=metric,
        sign=select_sign(cfg),
        trials=int(fv.trials),
        storage=fv.storage or f"sqlite:///{workdir / 'study.db'}",
        study_name=fv.study or workdir.name,
        pruner=fv.pruner,
        seed=int(cfg.seed),
    )


def cmd_sweep(argv: Sequence[str]) -> dict[str, Any]:
    """``jaxrec sweep ...``; a bad argument exits with one line."""
    _optuna()
    try:
        sweep = build_sweep(argv)
    except SweepError as e:
        raise SystemExit(f"jaxrec sweep: {e}") from None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the running trial is stopped and queued again

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        return run_sweep(sweep)
    except SweepError as e:
        raise SystemExit(f"jaxrec sweep: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit("jaxrec sweep: interrupted; the same command resumes the study") from None
    finally:
        signal.signal(signal.SIGTERM, old)


__all__ = [
    "MISSING_OPTUNA",
    "Param",
    "Sweep",
    "SweepError",
    "build_sweep",
    "check_space",
    "cmd_sweep",
    "parse_space",
    "run_process",
    "run_sweep",
]
