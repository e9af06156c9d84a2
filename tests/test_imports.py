"""Imports point one way: checkpoints do not load serving code; data loads no model, loss,
evaluation or training code; the losses load no model, and neither the losses nor the model
load the batch loss or the training step that compose them."""

import json
import subprocess
import sys

_DATA_MUST_NOT_IMPORT = [
    "jaxrec.eval",
    "jaxrec.model",
    "jaxrec.losses",
    "jaxrec.step",
    "jaxrec.train",
]
# (module, packages that importing it must not load), imported in this order in one fresh
# interpreter; no check's forbidden packages may be loaded by an earlier check's module.
CHECKS = [
    ("jaxrec.data", _DATA_MUST_NOT_IMPORT),
    ("jaxrec.data.counts", _DATA_MUST_NOT_IMPORT),
    ("jaxrec.checkpoint", ["jaxrec.serving"]),
    # The batch loss composes the model and the losses; neither loads it.
    ("jaxrec.losses", ["jaxrec.batch_loss", "jaxrec.model", "jaxrec.step", "jaxrec.train"]),
    ("jaxrec.model", ["jaxrec.batch_loss", "jaxrec.step", "jaxrec.train"]),
]

_SCRIPT = """
import importlib, json, sys

def loaded(forbidden):
    return sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))

found = {}
for module, forbidden in json.loads(sys.argv[1]):
    before = loaded(forbidden)
    importlib.import_module(module)
    found[module] = [f"loaded before: {m}" for m in before] + loaded(forbidden)
print(json.dumps(found))
"""


def test_imports_point_one_way():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(CHECKS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {module: [] for module, _ in CHECKS}
