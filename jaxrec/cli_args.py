"""Command-line flags of ``jaxrec`` and ``jaxrec experiment``: absl flag parsing, the ``--config``
file (a plain-Python file loaded by path) and its ``--config.a.b=value`` overrides."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from absl import flags
from ml_collections import ConfigDict, config_flags

from jaxrec.base_config import complete

# configs/ is a directory of the repository, not an installed package: the default config is
# found next to the jaxrec/ source directory (an editable install or a clone).
CONFIGS_DIR = Path(__file__).parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS_DIR / "quickstart.py"


def _config_file_arg(argv: Sequence[str]) -> str | None:
    """The config file ``argv`` names (``--config FILE`` / ``--config=FILE``), or None."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        name = arg.lstrip("-")
        if arg.startswith("-") and name == "config":
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("-") and name.startswith("config="):
            return name[len("config=") :]
    return None


def _config_file_given(argv: Sequence[str]) -> bool:
    """Whether ``argv`` names a config file (``--config FILE`` / ``--config=FILE``)."""
    return _config_file_arg(argv) is not None


def parse_flags(
    argv: Sequence[str], define: Callable[[flags.FlagValues], None], config: bool = True
) -> flags.FlagValues:
    """Parses ``argv`` into a fresh FlagValues (no global flag state).

    ``define`` registers the command's own flags; with ``config``, ``--config FILE`` (default
    :data:`DEFAULT_CONFIG`) and its ``--config.a.b=value`` overrides are accepted too and
    ``.config`` is the resulting ConfigDict. A usage error raises ``SystemExit("jaxrec: ...")``.
    """
    fv = flags.FlagValues()
    if config:
        if not _config_file_given(argv) and not DEFAULT_CONFIG.is_file():
            raise SystemExit(
                f"jaxrec: no --config given and the default config {DEFAULT_CONFIG} does not "
                "exist (configs/ ships with the repository, not with an installed package); "
                "pass --config FILE"
            )
        given = _config_file_arg(argv)
        if given is not None and not Path(given).is_file():
            shipped = (
                sorted(p.name for p in CONFIGS_DIR.glob("*.py")) if CONFIGS_DIR.is_dir() else []
            )
            raise SystemExit(
                f"jaxrec: --config {given}: no such config file"
                + (f" (shipped configs, in configs/: {', '.join(shipped)})" if shipped else "")
            )
        # config_flags pre-scans argv to register the --config.a.b overrides.
        config_flags.DEFINE_config_file(
            "config", str(DEFAULT_CONFIG), "config file", flag_values=fv, sys_argv=["jaxrec", *argv]
        )
    define(fv)
    try:
        rest = fv(["jaxrec", *argv])
    except flags.Error as e:
        raise SystemExit(f"jaxrec: {e}") from None
    if len(rest) > 1:
        raise SystemExit(f"jaxrec: unexpected arguments {rest[1:]}")
    if config:
        try:
            complete(fv.config)  # in place: every field present, none misspelt, locked
        except ValueError as e:
            raise SystemExit(f"jaxrec: {e}") from None
    return fv


def load_config_module(path: str | Path) -> ModuleType:
    """Executes the config file at ``path`` as a fresh module (no package or sys.path needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"jaxrec_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str | Path) -> ConfigDict:
    """``get_config()`` of the config file at ``path``, completed from the base config
    (:func:`jaxrec.base_config.complete`)."""
    return complete(load_config_module(path).get_config())


__all__ = ["CONFIGS_DIR", "DEFAULT_CONFIG", "load_config", "load_config_module", "parse_flags"]
