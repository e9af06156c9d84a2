"""The base config (jaxrec/base_config.py): every field in one place, configs completed from
it, misspelt fields refused before anything runs."""

import json

import pytest
from ml_collections import ConfigDict

from jaxrec.base_config import ABSENT_MEANS, FREE_FORM, complete, get_config
from jaxrec.cli_args import CONFIGS_DIR, load_config


def _paths(c: ConfigDict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in c.items():
        out |= _paths(v, f"{prefix}{k}.") if isinstance(v, ConfigDict) else {f"{prefix}{k}"}
    return out


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_every_shipped_config_has_exactly_the_base_fields(path):
    """A shipped config adds no field of its own (free-form groups aside) and lacks none."""
    free = tuple(f"{g}." for g in FREE_FORM)
    got = {p for p in _paths(load_config(path)) if not p.startswith(free)}
    want = {p for p in _paths(get_config()) if not p.startswith(free)}
    assert got == want


def test_a_partial_config_is_completed_and_locked():
    c = complete(ConfigDict({"seed": 3, "model": {"width": 32}}))
    assert (c.seed, c.model.width, c.model.depth) == (3, 32, get_config().model.depth)
    assert c.loss.full_softmax_weight == get_config().loss.full_softmax_weight
    with pytest.raises(AttributeError, match="widht"):
        c.model.widht = 16  # locked: a new (misspelt) field cannot be added
    c.model.width = 16  # an existing one can be changed


def test_a_misspelt_field_names_itself_and_the_nearest_field():
    with pytest.raises(
        ValueError,
        match=r"config\.model\.apeal_pool: not a field .* "
        r"did you mean config\.model\.appeal_pool\?",
    ):
        complete(ConfigDict({"model": {"apeal_pool": True}}))
    with pytest.raises(ValueError, match=r"config\.optim: a group of fields"):
        complete(ConfigDict({"optim": 0.1}))
    # The user's own names (adapter options, feedback types) are not fields.
    c = complete(ConfigDict({"data": {"options": {"my_column": "x"}}}))
    assert c.data.options.my_column == "x"


def test_a_saved_config_reads_absent_fields_as_they_were_then():
    """An older run's config.json lacks later fields: they mean what the code did then
    (ABSENT_MEANS), not today's defaults; anything else comes from the base."""
    old = json.loads(get_config().to_json_best_effort())
    for path in ABSENT_MEANS:
        group, key = path.split(".")
        del old[group][key]
    del old["mesh"]["rules"]
    c = complete(ConfigDict(old), saved=True)
    for path, value in ABSENT_MEANS.items():
        group, key = path.split(".")
        assert c[group][key] == value, path
    assert tuple(map(tuple, c.mesh.rules)) == tuple(map(tuple, get_config().mesh.rules))


def test_a_config_file_with_a_misspelt_field_fails_in_one_line(tmp_path):
    from jaxrec.cli import main

    bad = tmp_path / "bad.py"
    bad.write_text(
        "from jaxrec.base_config import get_config as base\n\n"
        "def get_config():\n"
        "    c = base()\n"
        "    c.train.epocs = 3.0\n"
        "    return c\n"
    )
    with pytest.raises(
        SystemExit,
        match=r"^jaxrec: config\.train\.epocs: not a field .*"
        r"config\.train\.epochs\?$",
    ):
        main(["train", "--workdir", str(tmp_path / "w"), "--config", str(bad)])
