"""Running a script in a subprocess with fake CPU devices (the count is fixed at jax start-up)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_on_fake_devices(script: str, *args: str, devices: int = 8) -> dict:
    """Runs ``script`` with ``devices`` fake CPU devices; returns the JSON of its last stdout line
    starting ``RESULT ``. The subprocess must exit 0 (its stderr tail is the failure message)."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])
