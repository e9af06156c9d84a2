"""Adapters: every data source's files become a raw event table plus a :class:`Report`.

An adapter is ``(path, options) -> (pa.Table, Report)``; the table has the columns of
:data:`jaxrec.data.events.COLUMNS` with rows in source order, ready for
:func:`jaxrec.data.events.encode`. One module per dataset (:mod:`.mssd` for MSSD and its
``spotify-sessions`` subset, :mod:`.piki`, :mod:`.movielens`) and :mod:`.generic` for any
``csv``/``parquet`` log; the others are shared helpers. Sources are looked up by name in
:mod:`jaxrec.data.registry`. Bad rows are dropped and counted in the report, or raise
:class:`~jaxrec.data.events.DataError` with ``options={"on_bad_row": "error"}``. See
docs/data.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from jaxrec.data.adapters.bad_rows import Options
from jaxrec.data.report import Report

Adapter = Callable[[str | Path, Options], tuple[pa.Table, Report]]

__all__ = ["Adapter", "Options", "Report"]
