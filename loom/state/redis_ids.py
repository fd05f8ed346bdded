"""How a session's run records are named in Redis: a Loom run id packed
(``loom.core.ids``), 22 characters instead of 36 in the ``runs`` hash and the ``run_order``
set of every session; any other run id as it is."""

from __future__ import annotations

import re

from loom.core.ids import pack_id, unpack_id

RUN_PREFIX = "run_"
_LOOKS_PACKED = re.compile(r"[A-Za-z0-9_-]{22}")
_ESCAPE = "="
"""Marks a run field that is an id as it is, not packed (``=`` is in no packed id, and
in no run id the feedback API takes)."""


def run_field(run_id: str) -> str:
    """The name a run record is stored under: a Loom run id packed, any other as it is
    (behind ``=`` when it would read as packed, or begins with ``=``). ``run_id_of`` gives
    the id back, also of the fields earlier versions used (the id as it is)."""
    packed = pack_id(run_id, RUN_PREFIX)
    if packed is not None:
        return packed
    if _LOOKS_PACKED.fullmatch(run_id) or run_id.startswith(_ESCAPE):
        return _ESCAPE + run_id
    return run_id


def run_id_of(field: str) -> str:
    """The run id ``run_field`` stored under ``field``."""
    if _LOOKS_PACKED.fullmatch(field):
        return unpack_id(field, RUN_PREFIX)
    return field.removeprefix(_ESCAPE)


__all__ = ["RUN_PREFIX", "run_field", "run_id_of"]
