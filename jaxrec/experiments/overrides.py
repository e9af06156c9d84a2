"""Config overrides of the experiments: copying a config, reading and setting ``a.b`` paths, and
writing overrides and configs back out (as ``--config.a.b=value`` flags or JSON)."""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

from ml_collections import ConfigDict

from jaxrec.base_config import FREE_FORM

_MISSING = object()


def copy_config(cfg: ConfigDict) -> ConfigDict:
    """A deep, unlocked copy (config_flags hands out locked configs)."""
    out = copy.deepcopy(cfg)
    out.unlock()
    return out


def get_path(cfg: Any, path: str, default: Any = _MISSING) -> Any:
    """``cfg.a.b`` for ``path='a.b'``; ``default`` (or KeyError) when a part is missing."""
    node = cfg
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            if default is _MISSING:
                raise KeyError(f"config.{path}: not found")
            return default
        node = node[part]
    return node


def set_path(cfg: ConfigDict, path: str, value: Any) -> None:
    """Sets ``cfg.a.b = value``; a field the config does not have is a KeyError (a misspelt
    override), except inside the groups of the user's own names (base_config.FREE_FORM)."""
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        if part not in node:
            raise KeyError(f"config.{path}: no such field")
        node = node[part]
    if leaf not in node and ".".join(parents) not in FREE_FORM:
        raise KeyError(f"config.{path}: no such field")
    with node.unlocked():
        node[leaf] = value


def apply_overrides(cfg: ConfigDict, overrides: dict[str, Any]) -> ConfigDict:
    """A copy of ``cfg`` with every ``{path: value}`` of ``overrides`` set."""
    out = copy_config(cfg)
    for path, value in overrides.items():
        set_path(out, path, value)
    return out


def flag(path: str, value: Any) -> str:
    """An override as the ``--config.a.b=value`` flag that would set it."""
    if isinstance(value, (tuple, list)):
        text = repr(tuple(value))
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return shlex.quote(f"--config.{path}={text}")


def flags_text(overrides: dict[str, Any]) -> str:
    """Overrides as space-separated flags, ``(none)`` for none."""
    return " ".join(flag(p, v) for p, v in overrides.items()) or "(none)"


def config_json(cfg: ConfigDict) -> dict[str, Any]:
    """The config as plain JSON data (what a run's ``config.json`` holds)."""
    return json.loads(cfg.to_json_best_effort())


def portable_json(cfg: ConfigDict) -> str:
    """The config as indented JSON for a committed report: paths under the data directory are
    written as ``$JAXREC_DATA_DIR/...``, never as this machine's absolute path."""
    from jaxrec.data.paths import data_dir

    text = cfg.to_json_best_effort(indent=2)
    for root in {str(data_dir()), str(data_dir().resolve())}:
        text = text.replace(root.rstrip("/") + "/", "$JAXREC_DATA_DIR/")
    return text


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first ``path: old vs new`` where two JSON configs differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{prefix}.{key}" if prefix else key
            if key not in a or key not in b:
                return f"{where}: {a.get(key, '(absent)')!r} vs {b.get(key, '(absent)')!r}"
            diff = first_difference(a[key], b[key], where)
            if diff:
                return diff
        return None
    return None if a == b else f"{prefix}: {a!r} vs {b!r}"
