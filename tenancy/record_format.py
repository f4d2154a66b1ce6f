"""The deployed record as platform-side stacks export it (`deployedRecord`): the catalogue a stack was given, its
deployment notes and where it placed each tenant.

Stack programs write it (stacks/cells.py); tenancy/lifecycle/record.py reads it back through an
engine and decides what a deploy or a one-tenant command applies. The format lives here, below both, so a stack
program never imports the lifecycle commands.
"""

from __future__ import annotations

import json

from tenancy.catalog import Catalog, to_document

RECORD_OUTPUT = "deployedRecord"     # the stack output that holds it, as JSON text
# The global stack's output saying its record is split across the unit stacks ("cells"). A stack with a record and
# without it is an environment still deployed as one platform stack (tenancy/operations/migrate.py moves it).
LAYOUT_OUTPUT, CELLS = "layout", "cells"


def record_json(catalog: Catalog, placements: dict[str, dict[str, str]] | None = None) -> str:
    """What the platform program exports: the catalogue it was given, its notes, and where it placed each
    tenant (tenancy/fleet: tenant id -> {"cell", "poolShard", "dataProject"})."""
    return json.dumps({"catalog": to_document(catalog), "notes": dict(catalog.notes),
                       "placements": dict(placements if placements is not None else catalog.placements)}, sort_keys=True)
