"""bench/accelerator_check.sh --smoke end to end on CPU: every stage runs (reusing .venv) and
the JSON and Markdown reports hold each stage with its numbers (about 25 s on 2 CPU cores with
a warm compilation cache, under 60 s cold)."""

import json
import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["install", "devices", "tests", "loss_float32", "loss_bfloat16"]
STAGES += ["train_float32", "train_bfloat16"]


def test_smoke_run_writes_json_and_markdown(tmp_path, shared_data):
    shared_data("movielens-100k/ml-100k.inter")  # the train stages read MovieLens-100k
    out = tmp_path / "check"
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "accelerator_check.sh"), str(out), "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "accelerator_check.json").read_text())
    assert report["platform"] == "cpu" and report["sizes"] == "smoke"
    assert report["failed"] == []
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == STAGES
    assert stages["install"]["status"] == "reused"
    assert all(s["status"] == "ok" for n, s in stages.items() if n != "install"), stages
    assert all((out / s["log"]).exists() for s in stages.values())
    assert stages["devices"]["result"]["backend"] == "cpu"
    assert stages["tests"]["result"]["passed"] >= 1 and "failed" not in stages["tests"]["result"]
    for dtype in ("float32", "bfloat16"):
        rows = stages[f"loss_{dtype}"]["result"]["results"]
        assert {r["kernel"] for r in rows} == {"dense", "chunked"}
        assert all(r["time"] > 0 and r["model_flops"] > 0 and r["xla_flops"] > 0 for r in rows)
        assert all(r["model_flops_per_s"] > 0 and r["mfu"] > 0 for r in rows)
        train = stages[f"train_{dtype}"]["result"]["results"]["bce1"]
        assert train["dtype"] == dtype and train["targets_per_s"] > 0
        assert train["xla_flops_per_step"] > 0 and train["model_flops_per_step"] > 0
        assert train["mfu"] > 0 and train["peak_source"].startswith("measured")

    md = (out / "accelerator_check.md").read_text()
    for name in STAGES:
        line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
        assert re.search(r"\d", line.split("|", 3)[3]), line  # seconds and more after the status
    assert re.search(r"\| loss_float32 \| ok \| [\d.]+ \| \(b\) .* chunked \| .* ms .*FLOP/s", md)
    assert re.search(r"\| train_bfloat16 \| ok \| [\d.]+ \| bce1 .* targets/s", md)
    assert "Failed stages: none." in md
    print(f"accelerator_check.sh --smoke: {seconds:.1f} s")
