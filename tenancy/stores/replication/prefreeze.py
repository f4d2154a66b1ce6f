"""Verification before the freeze: change tracking on at both sides, one full comparison of the replicated copy,
then the changed rows until few remain (tenancy/stores/replica_verify.py does the comparing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import psycopg

from tenancy.stores import replica_verify as rv
from tenancy.stores.replication.common import (Checkpoint, MoveNames, ReplicationError, as_error, connect_autocommit,
                                               is_switched, move_notes, names, pick_tables, registry_state,
                                               subscription_of, wait_confirmed)


# --- verification before the freeze --------------------------------------------------------------------

@dataclass
class PreverifyReport:
    tenant: str
    full_pass: rv.FullPass | None = None     # None: an earlier full pass still holds (tracking never stopped)
    passes: list[rv.Pass] = field(default_factory=list)
    recorded: int = 0                        # changes recorded and not yet consumed, both sides
    seconds: float = 0.0

    def to_json(self) -> dict:
        fp = self.full_pass
        return {"full_pass": None if fp is None else {"seconds": round(fp.seconds, 3), "buckets": fp.buckets,
                                                      "differing_buckets": fp.differing_buckets,
                                                      "in_flight_rows": fp.in_flight_rows},
                "passes": [{"seconds": round(p.seconds, 3), "keys": p.keys, "equal": p.equal} for p in self.passes],
                "recorded": self.recorded, "seconds": round(self.seconds, 3)}


def update_note(src: psycopg.Connection, n: MoveNames, **changes) -> dict:
    """Update the move's notes (states before the move, pre-verification, the switched summary)."""
    note = {**(move_notes(src, n) or {}), **changes}
    note = {k: v for k, v in note.items() if v is not None}
    src.execute("UPDATE tenancy.replication_moves SET note = %s WHERE move = %s", (json.dumps(note, sort_keys=True), n.base))
    return note


def unsynced(dst: psycopg.Connection, sub) -> list[str]:
    return [r[0] for r in dst.execute("SELECT srrelid::regclass::text FROM pg_subscription_rel WHERE srsubid = %s "
                                      "AND srsubstate <> 'r' ORDER BY 1", (sub[0],)).fetchall()]


def _waiter(src: psycopg.Connection, n: MoveNames, tenant: str, timeout: float, after: str) -> rv.WaitLsn:
    return lambda lsn: wait_confirmed(src, n, lsn, timeout, tenant, after)


def require_tracking_sql(conn: psycopg.Connection, where: str) -> None:
    if not conn.execute("SELECT to_regprocedure('tenancy.track_move_change()') IS NOT NULL "
                        "AND to_regclass('tenancy.move_changes') IS NOT NULL "
                        "AND to_regclass('tenancy.replication_moves') IS NOT NULL").fetchone()[0]:
        raise ReplicationError(f"the {where} has an older tenancy SQL without tenancy.move_changes or "
                               "tenancy.replication_moves: run `tenancy db apply DSN` there first")


def preverify_in(src, dst, source_dsn, target_dsn, n: MoveNames, tenant: str, keyed: list[rv.Keyed], step: Checkpoint,
               timeout: float) -> PreverifyReport:
    report = PreverifyReport(tenant)
    t0 = time.perf_counter()
    if not (rv.tracking(src, n.base, keyed) and rv.tracking(dst, n.base, keyed)):
        update_note(src, n, verified=None)   # changes went unrecorded: an earlier full pass no longer holds
    rv.track(src, n.base, tenant, keyed)
    step("tracking source")
    rv.track(dst, n.base, tenant, keyed)
    step("tracking target")
    wait = _waiter(src, n, tenant, timeout, "before the freeze; nothing is frozen, run it again")
    if not (move_notes(src, n) or {}).get("verified"):
        report.full_pass = rv.full_pass(source_dsn, target_dsn, tenant, keyed, n.base, wait)
        update_note(src, n, verified=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        step("full pass")
    report.passes = rv.converge(source_dsn, target_dsn, tenant, keyed, n.base, wait, checkpoint=step)
    report.recorded = rv.recorded(source_dsn, n.base) + rv.recorded(target_dsn, n.base)
    report.seconds = time.perf_counter() - t0
    return report


def preverify(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None = None, *, move: str,
              timeout: float = 120.0, checkpoint: Checkpoint | None = None) -> PreverifyReport:
    """Before the freeze: change tracking on at both sides, every row compared once (the full pass, skipped
    when an earlier one still holds), then the recorded changes until few remain. Safe to call again."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        try:
            tables = pick_tables(src, tables)
            sub = subscription_of(dst, n)
            if move_notes(src, n) is None or sub is None:
                raise ReplicationError(f"the online move of '{tenant}' is not running (no publication or subscription): "
                                       "run start first")
            if is_switched(registry_state(src, tenant), registry_state(dst, tenant)):
                raise ReplicationError(f"the move of '{tenant}' has already switched: nothing to verify before a freeze")
            waiting = unsynced(dst, sub)
            if waiting:
                raise ReplicationError(f"tables of '{tenant}' are not synchronised yet ({', '.join(waiting)}): run "
                                       "wait_synced first")
            require_tracking_sql(src, "source")
            require_tracking_sql(dst, "target")
            keyed = rv.keyed_tables(src, tables)
            return preverify_in(src, dst, source_dsn, target_dsn, n, tenant, keyed, step, timeout)
        except psycopg.Error as exc:
            raise as_error(exc, f"verifying the replicated copy of '{tenant}' failed; nothing is frozen, run it "
                                 "again") from None
