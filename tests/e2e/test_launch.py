"""launch.sh: the command sequences it prints (--dry-run) and runs, checked without gcloud or jax.

Each test copies launch.sh into a throw-away git repository (so the remote / no-remote choice does
not depend on this checkout) and puts a stub ``gcloud`` first on PATH. The stub records its
arguments, fails ``describe`` (so the slice "does not exist") and, when ``FAKE_HOST`` is set, plays
every TPU worker on this machine: ``scp`` copies into FAKE_HOST, ``ssh --command CMD`` runs
``bash -c CMD`` there. The launched ``jaxrec``, ``pip`` and ``python`` are stubs that print or
record their argv, so no training runs and no jax is imported.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch.sh"
SPACED = "--config.data.path=/mnt/data dir/x.csv"
TPU_ARGS = [
    "tpu",
    "my-slice",
    "us-central2-b",
    "--dry-run",
    "--accelerator-type",
    "v5litepod-32",
    "--version",
    "v2-alpha-tpuv5-lite",
    "--commit",
    "abc123",
    "--workdir",
    "gs://bucket/run1",
    "--config",
    "configs/quickstart.py",
    SPACED,
]
TRAIN_FLAGS = TPU_ARGS[TPU_ARGS.index("--workdir") :]

GCLOUD = f"""#!{sys.executable}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if "describe" in args:
    sys.exit(1)
host = os.environ.get("FAKE_HOST")
if host and "scp" in args:
    i = args.index("scp")
    shutil.copy(args[i + 1], os.path.join(host, args[i + 2].split(":", 1)[1]))
if host and "ssh" in args:
    cmd = args[args.index("--command") + 1]
    sys.exit(subprocess.run(["bash", "-c", cmd], cwd=host).returncode)
"""

# Prints its argv (and the env a launcher may set) as one JSON line. JAXREC_STUB_FAIL_ID=k makes
# the process with --process_id=k exit 3 at once and the others sleep (to see them killed).
JAXREC = f"""#!{sys.executable}
import json, os, sys, time
argv = sys.argv[1:]
env = {{k: os.environ.get(k) for k in ("JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES")}}
fail = os.environ.get("JAXREC_STUB_FAIL_ID")
if fail is not None:
    if "--process_id=" + fail in argv:
        sys.exit(3)
    time.sleep(30)
    open(os.environ["JAXREC_STUB_DONE"], "w").close()
os.write(1, (json.dumps({{"argv": argv, "env": env}}) + "\\n").encode())  # one write
"""

RECORDER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def _write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _git(*args, cwd, env):
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _fake_venv(venv: Path) -> None:
    """A .venv whose python is this interpreter and whose jaxrec and pip are stubs."""
    venv.joinpath("bin").mkdir(parents=True, exist_ok=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    _write_exe(venv / "bin" / "jaxrec", JAXREC)
    _write_exe(venv / "bin" / "pip", RECORDER)


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.gcloud_log = tmp / "gcloud.log"
        self.stub_log = tmp / "stub.log"
        self.host = tmp / "host"
        bin_dir = tmp / "bin"
        _write_exe(bin_dir / "gcloud", GCLOUD)  # shadows any real gcloud
        (tmp / "tmpdir").mkdir()
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "GCLOUD_LOG": str(self.gcloud_log),
            "STUB_LOG": str(self.stub_log),
            "TMPDIR": str(tmp / "tmpdir"),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
        for k in ("FAKE_HOST", "JAXREC_REPO", "XLA_FLAGS", "JAXREC_STUB_FAIL_ID"):
            self.env.pop(k, None)
        self.repo.mkdir()
        shutil.copy(LAUNCH, self.repo / "launch.sh")
        (self.repo / "README").write_text("v1\n")
        _git("init", "-q", "-b", "main", cwd=self.repo, env=self.env)
        self.commit("first")

    def commit(self, msg: str) -> str:
        _git("add", "-A", cwd=self.repo, env=self.env)
        _git("commit", "-q", "-m", msg, cwd=self.repo, env=self.env)
        return _git("rev-parse", "HEAD", cwd=self.repo, env=self.env)

    def launch(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(self.repo / "launch.sh"), *args],
            cwd=self.repo,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def gcloud_calls(self) -> list[list[str]]:
        if not self.gcloud_log.exists():
            return []
        return [json.loads(line) for line in self.gcloud_log.read_text().splitlines()]

    def stub_calls(self) -> list[list[str]]:
        if not self.stub_log.exists():
            return []
        return [json.loads(line) for line in self.stub_log.read_text().splitlines()]


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def _dry_run(env: Env, *args: str) -> list[str]:
    """Runs a --dry-run; checks it called no gcloud and printed a script bash can parse."""
    res = env.launch(*args)
    assert res.returncode == 0, res.stderr
    assert env.gcloud_calls() == [], "a dry run must not call gcloud"
    script = env.tmp / "dry-run.sh"
    script.write_text(res.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True)
    return res.stdout.splitlines()


def _index(lines: list[str], *needles: str) -> int:
    hits = [i for i, line in enumerate(lines) if all(n in line for n in needles)]
    assert len(hits) == 1, (needles, lines)
    return hits[0]


def _remote_command(line: str) -> str:
    words = shlex.split(line)
    return words[words.index("--command") + 1]


def _jaxrec_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_tpu_dry_run_is_the_whole_sequence_in_order(env):
    lines = _dry_run(env, *TPU_ARGS)
    assert len(lines) == 6, lines
    describe = _index(lines, "tpu-vm describe my-slice")
    archive = _index(lines, "git -C", "archive", "abc123")
    scp = _index(lines, "tpu-vm scp")
    unpack = _index(lines, "tpu-vm ssh", "tar -xzf")
    install = _index(lines, "tpu-vm ssh", "pip install")
    run = _index(lines, "tpu-vm ssh", "jaxrec train")
    assert [describe, archive, scp, unpack, install, run] == list(range(6))

    # describe-or-create, with the accelerator type, runtime and zone passed through
    first = shlex.split(lines[describe])
    create = first[first.index("||") + 1 :]
    assert first[:8] == [
        *"gcloud compute tpus tpu-vm describe my-slice --zone".split(),
        "us-central2-b",
    ]
    assert create == [
        *"gcloud compute tpus tpu-vm create my-slice --zone us-central2-b".split(),
        *"--accelerator-type v5litepod-32 --version v2-alpha-tpuv5-lite".split(),
    ]
    for line in lines:
        words = shlex.split(line)
        if words[0] == "gcloud":
            assert words[words.index("--zone") + 1] == "us-central2-b"
        if "ssh" in words or "scp" in words:
            assert "--worker=all" in words, line
            assert words[words.index("tpu-vm") + 2] in (
                "my-slice",
                f"{env.tmp}/tmpdir/jaxrec-abc123.tar.gz",
            )

    # no remote: the tarball of the commit goes to every worker and is unpacked there
    assert shlex.split(lines[scp])[5:7] == [
        f"{env.tmp}/tmpdir/jaxrec-abc123.tar.gz",
        "my-slice:jaxrec-abc123.tar.gz",
    ]
    assert ".[tpu]" in _remote_command(lines[install])
    assert "--distributed" in shlex.split(_remote_command(lines[run]))


def _run_on_worker(env, run: str) -> subprocess.CompletedProcess:
    """Runs a dry-run's run line against the stub gcloud, with a fake venv on the worker."""
    _fake_venv(env.host / "jaxrec" / ".venv")
    return subprocess.run(
        ["bash", "-c", run],
        env={**env.env, "FAKE_HOST": str(env.host)},
        capture_output=True,
        text=True,
    )


def test_tpu_run_line_keeps_every_flag_one_word(env):
    """The run line, through the local shell and the worker's shell, gives jaxrec the same argv."""
    run = _dry_run(env, *TPU_ARGS)[-1]
    res = _run_on_worker(env, run)
    assert res.returncode == 0, res.stderr
    assert _jaxrec_json(res.stdout)["argv"] == ["train", "--distributed", *TRAIN_FLAGS]
    assert "gs://bucket/run1" in run  # the workdir as given, not resolved or rewritten


def test_tpu_quotes_and_dollars_survive_both_shells(env):
    odd = ["--workdir", "/mnt/shared/run 1", '--config.note=it\'s "quoted" $HOME `x` ;|&']
    run = _dry_run(env, "tpu", "s", "z", "--dry-run", "--commit", "abc123", *odd)[-1]
    res = _run_on_worker(env, run)
    assert _jaxrec_json(res.stdout)["argv"] == ["train", "--distributed", *odd]


def test_tpu_launch_without_a_remote_ships_an_archive_of_head(env):
    """A real (not dry) launch against the stub: every step runs, in order, on the fake worker."""
    _fake_venv(env.host / "jaxrec" / ".venv")
    (env.host / "jaxrec" / "stale.txt").write_text("from an older launch")
    (env.repo / "README").write_text("v2\n")
    head = env.commit("second")
    launch_flags = ["--accelerator-type", "v5litepod-32", "--version", "v2-alpha-tpuv5-lite"]
    res = env.launch(
        "tpu", "my-slice", "us-central2-b", *launch_flags, *TRAIN_FLAGS, FAKE_HOST=str(env.host)
    )
    assert res.returncode == 0, res.stderr
    verbs = [call[3] for call in env.gcloud_calls()]
    assert verbs == ["describe", "create", "scp", "ssh", "ssh", "ssh"]
    assert (env.host / "jaxrec" / "README").read_text() == "v2\n"  # HEAD, unpacked
    assert not (env.host / "jaxrec" / "stale.txt").exists()
    assert not list(env.host.glob("*.tar.gz"))
    assert env.stub_calls() == [["pip", "install", "-q", "-e", ".[tpu]"]]
    assert _jaxrec_json(res.stdout)["argv"] == ["train", "--distributed", *TRAIN_FLAGS]
    assert f"jaxrec-{head}.tar.gz" in res.stderr  # the echoed lines name the commit


def test_tpu_launch_with_a_remote_checks_out_the_commit_on_the_workers(env):
    origin = env.tmp / "origin.git"
    _git("clone", "-q", "--bare", str(env.repo), str(origin), cwd=env.tmp, env=env.env)
    _git("remote", "add", "origin", str(origin), cwd=env.repo, env=env.env)
    _git("clone", "-q", str(origin), str(env.host / "jaxrec"), cwd=env.tmp, env=env.env)
    _fake_venv(env.host / "jaxrec" / ".venv")  # an earlier launch's checkout and venv
    (env.repo / "README").write_text("v2\n")
    head = env.commit("second")
    _git("push", "-q", "origin", "main", cwd=env.repo, env=env.env)

    lines = _dry_run(env, "tpu", "s", "z", "--dry-run", "--workdir", "gs://b/r")
    assert "git clone" in lines[1] and "git checkout" in lines[1] and head in lines[1]
    assert not any("scp" in line or "archive" in line for line in lines)

    res = env.launch("tpu", "s", "z", "--workdir", "gs://b/r", FAKE_HOST=str(env.host))
    assert res.returncode == 0, res.stderr
    assert _git("rev-parse", "HEAD", cwd=env.host / "jaxrec", env=env.env) == head
    assert (env.host / "jaxrec" / "README").read_text() == "v2\n"
    assert _jaxrec_json(res.stdout)["argv"] == ["train", "--distributed", "--workdir", "gs://b/r"]


def test_tpu_repo_url_flag_overrides_the_remote(env):
    lines = _dry_run(env, "tpu", "s", "z", "--dry-run", "--repo-url=https://example.com/j.git")
    assert "git clone -q https://example.com/j.git jaxrec" in _remote_command(lines[1])


def test_gpu_dry_run_and_run(env):
    flags = ["--workdir", "runs/a b", "--config.train.steps=5"]
    lines = _dry_run(env, "gpu", "--dry-run", *flags)
    venv = env.repo / ".venv"
    assert len(lines) == 3
    assert shlex.split(lines[0])[-3:] == ["-m", "venv", str(venv)]
    assert shlex.split(lines[1])[-4:] == ["install", "-q", "-e", f"{env.repo}[cuda]"]
    assert shlex.split(lines[2]) == ["JAX_PLATFORMS=cuda", f"{venv}/bin/jaxrec", "train", *flags]

    _fake_venv(venv)  # no jax_cuda12_plugin in this interpreter: the cuda extra gets installed
    res = env.launch("gpu", *flags, CUDA_VISIBLE_DEVICES="1,3")
    assert res.returncode == 0, res.stderr
    assert env.stub_calls() == [["pip", "install", "-q", "-e", f"{env.repo}[cuda]"]]
    out = _jaxrec_json(res.stdout)
    assert out["argv"] == ["train", *flags]
    assert out["env"]["JAX_PLATFORMS"] == "cuda" and out["env"]["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env.gcloud_calls() == []


def test_local_processes_dry_run(env):
    lines = _dry_run(env, "local", "--processes", "2", "--dry-run", "--workdir", "runs/x y")
    procs = [shlex.split(line) for line in lines if "--process_id=" in line]
    assert len(procs) == 2
    for i, words in enumerate(procs):
        amp = words.index("&")  # in the background, the flags as given just before the `&`
        assert words[amp - 2 : amp] == ["--workdir", "runs/x y"]
        assert f"--process_id={i}" in words and "--num_processes=2" in words
        assert "--distributed" in words
        assert not any(w.startswith("XLA_FLAGS=") for w in words)  # only with --cpu-devices
    coords = {w for words in procs for w in words if w.startswith("--coordinator_address=")}
    assert coords == {"--coordinator_address=localhost:12355"}
    assert "wait -n" in lines[-1]

    lines = _dry_run(
        env, "local", "--processes=3", "--port=2222", "--cpu-devices", "4", "--dry-run"
    )
    procs = [line for line in lines if "--process_id=" in line]
    assert len(procs) == 3
    assert all("XLA_FLAGS=--xla_force_host_platform_device_count=4 " in p for p in procs)
    assert all("--coordinator_address=localhost:2222" in p for p in procs)


def test_local_single_process_dry_run(env):
    lines = _dry_run(env, "local", "--dry-run", "--workdir", "runs/q")
    assert shlex.split(lines[-1]) == [
        f"{env.repo}/.venv/bin/jaxrec",
        "train",
        "--workdir",
        "runs/q",
    ]


def test_local_processes_run_and_wait(env):
    _fake_venv(env.repo / ".venv")
    res = env.launch("local", "--processes", "2", "--cpu-devices", "2", "--workdir", "w")
    assert res.returncode == 0, res.stderr
    outs = sorted((json.loads(line) for line in res.stdout.splitlines()), key=str)
    assert [o["argv"][-3] for o in outs] == ["--process_id=0", "--process_id=1"]
    assert all(o["env"]["JAX_PLATFORMS"] == "cpu" for o in outs)
    assert all(o["env"]["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2" for o in outs)


def test_local_processes_one_failure_stops_the_others(env):
    _fake_venv(env.repo / ".venv")
    done = env.tmp / "slow-process-finished"
    start = time.monotonic()
    res = env.launch(
        "local",
        "--processes",
        "3",
        "--workdir",
        "w",
        JAXREC_STUB_FAIL_ID="1",
        JAXREC_STUB_DONE=str(done),
    )
    assert res.returncode == 3
    assert time.monotonic() - start < 20  # the sleeping processes were killed, not waited out
    time.sleep(0.2)
    assert not done.exists()


@pytest.mark.parametrize("args", [["bogus"], [], ["tpu", "only-a-name"]])
def test_bad_usage_prints_usage_and_exits_2(env, args):
    res = env.launch(*args)
    assert res.returncode == 2
    assert "launch.sh tpu NAME ZONE" in res.stderr and res.stdout == ""
    assert env.gcloud_calls() == []


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], None),
        (["--distributed"], {}),
        (
            ["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=1"],
            {"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 1},
        ),
        (["--distributed", "--process_id=0"], {"process_id": 0}),
    ],
)
def test_train_passes_the_cluster_flags_to_jax_distributed(monkeypatch, tmp_path, flags, expected):
    """What `launch.sh local --processes N` relies on: the three flags reach initialize()."""
    import jax

    import jaxrec.train
    from jaxrec.cli import main

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jaxrec.train, "train", lambda cfg, workdir, progress: None)
    main(["train", "--workdir", str(tmp_path), *flags])
    assert calls == ([] if expected is None else [expected])
