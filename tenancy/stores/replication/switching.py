"""The switch: freeze the source, wait until the slot confirmed the freeze, compare the rows changed since the
last comparison, move sequences, drop the subscription, make the target active and the source read-only.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field

import psycopg

from tenancy.stores import postgres as pg
from tenancy.stores import replica_verify as rv
from tenancy.stores import Summary
from tenancy.stores.postgres import DataError
from tenancy.stores.replication.common import (Checkpoint, MoveNames, ReplicationError, as_error, connect_autocommit,
                                               is_switched, move_notes, names, pick_tables, registry_state,
                                               reset_sequences, subscription_of, wait_confirmed)
from tenancy.stores.replication.credential import close_login
from tenancy.stores.replication.prefreeze import (PreverifyReport, preverify, preverify_in, require_tracking_sql,
                                                  unsynced, update_note)
from tenancy.stores.replication.teardown import drop_publication, drop_subscription


@dataclass
class SwitchReport:
    tenant: str
    rows: dict[str, int] = field(default_factory=dict)
    freeze_seconds: float = 0.0      # freeze called -> target active
    catchup_seconds: float = 0.0     # freeze committed -> slot confirmed past it
    verify_seconds: float = 0.0      # verification inside the freeze
    prefreeze_verify_seconds: float = 0.0
    drop_seconds: float = 0.0
    summary_seconds: float = 0.0     # the source's summary, after the freeze
    keys_rechecked: int = 0          # recorded changes compared inside the freeze
    preverify: "PreverifyReport | None" = None
    full_pass_in_freeze: rv.FullPass | None = None   # only when tracking had been interrupted
    source_summary: Summary | None = None            # the source as verified (for deleting it later)
    freeze_started_at: float = 0.0   # wall clock (time.time())
    freeze_ended_at: float = 0.0
    resumed: bool = False
    already_switched: bool = False


# --- switch ---------------------------------------------------------------------------------------------

def switch(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None = None, *, move: str,
           lock_timeout: str = "5s", catchup_timeout: float = 60.0, cutover: bool = True, summarise: bool = True,
           checkpoint: Checkpoint | None = None) -> SwitchReport:
    """Verify (before the freeze), freeze, catch up, verify what changed, cut over. Safe to call again after
    an interruption at any point.

    `cutover=False` is for a caller that owns the freeze and the cutover (a tier move, which moves other
    stores in the same freeze): the source is frozen (again: it drains), but neither registry is changed
    afterwards, a failure leaves the source frozen, and the publication stays -- its notes record that the
    switch is done and the source's summary -- until `cleanup` or `abort`. `summarise=False` (with
    `cutover=False`) leaves the source's summary to the caller, who takes it after its freeze: the source takes
    no writes from the freeze on, so any later summary is the one that was verified, and the freeze does not
    grow with the tenant's size."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    report = SwitchReport(tenant)
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        tables = pick_tables(src, tables)
        before = move_notes(src, n)
        sub = subscription_of(dst, n)
        source_state, target_state = registry_state(src, tenant), registry_state(dst, tenant)
        if cutover and is_switched(source_state, target_state):
            # Interrupted after the flip (or called twice): finish the source side and the teardown only.
            report.already_switched = True
            src.execute("SELECT tenancy.freeze(%s, 'readonly')", (tenant,))
            _finish(src, dst, source_dsn, n, tenant, tables, None, report, cutover)
            return report
        if (before or {}).get("switched"):
            report.already_switched = True
            if "kind" in before["switched"]:
                _summarised(report, Summary.from_json(before["switched"]))
            rv.untrack(dst, n.base)
            rv.untrack(src, n.base)
            close_login(source_dsn, src, n)
            return report
        if before is None and sub is None:
            raise ReplicationError(f"the online move of '{tenant}' has not started: run start first")
        if sub is None and source_state != "frozen":
            raise ReplicationError(f"the online move of '{tenant}' is half started (no subscription yet): run start "
                                   "again, or abort")
        report.resumed = source_state == "frozen"
        require_tracking_sql(src, "source")
        require_tracking_sql(dst, "target")
        keyed = rv.keyed_tables(src, tables)
        if not report.resumed:
            waiting = unsynced(dst, sub)
            if waiting:
                raise ReplicationError(f"tables of '{tenant}' are not synchronised yet ({', '.join(waiting)}): "
                                       "run wait_synced first")
            t0 = time.perf_counter()
            report.preverify = preverify_in(src, dst, source_dsn, target_dsn, n, tenant, keyed, step, catchup_timeout)
            report.prefreeze_verify_seconds = time.perf_counter() - t0
        # What the freeze re-checks rests on tracking that never stopped since a full pass.
        tracked = bool((move_notes(src, n) or {}).get("verified")) and rv.tracking(src, n.base, keyed) \
            and rv.tracking(dst, n.base, keyed)

        # Connections for the verification and the summary's snapshot, opened before the freeze starts.
        with contextlib.ExitStack() as stack:
            hold = summarise or cutover
            ready = [stack.enter_context(pg.connect(d, tenant))
                     for d in (source_dsn, target_dsn, source_dsn)[:3 if hold else 2]]
            report.freeze_started_at = time.time()
            t_freeze = time.perf_counter()
            lsn = _freeze(src, tenant, lock_timeout)
            step("frozen")
            try:
                snapshot = _inside_freeze(src, dst, ready, (source_dsn, target_dsn), n, tenant, tables, keyed, lsn,
                                          sub is not None, tracked, catchup_timeout, report, step,
                                          hold=hold)
            except (DataError, psycopg.Error) as exc:   # a failed verification among them
                if not cutover:   # the caller's freeze: it decides
                    if isinstance(exc, psycopg.Error):
                        raise as_error(exc, f"switching '{tenant}' failed; it stays frozen, run it again or abort") from None
                    raise
                # The move stays in place; the source takes writes again while someone looks.
                src.execute("SELECT tenancy.freeze(%s, %s)", (tenant, (before or {}).get("source_state", "active")))
                if isinstance(exc, psycopg.Error):
                    raise as_error(exc, f"switching '{tenant}' failed; its writes resume at the source") from None
                raise
            if cutover:
                dst.execute("UPDATE tenancy.tenants SET state = 'active', updated_at = now() WHERE id = %s", (tenant,))
            report.freeze_ended_at = time.time()
            report.freeze_seconds = time.perf_counter() - t_freeze
            if cutover:
                step("target active")
                src.execute("SELECT tenancy.freeze(%s, 'readonly')", (tenant,))
            _finish(src, dst, source_dsn, n, tenant, tables, snapshot, report, cutover, summarise or cutover)
        step("finished")
    return report


def _inside_freeze(src, dst, ready: list[psycopg.Connection], dsns: tuple[str, str], n: MoveNames, tenant: str, tables: list[str],
                   keyed: list[rv.Keyed], lsn: str, subscribed: bool, tracked: bool, timeout: float,
                   report: SwitchReport, step: Checkpoint, hold: bool = True) -> str | None:
    """Catch up, verify, sequences, subscription dropped; returns the exported snapshot that was verified
    (held by ready[2])."""
    t0 = time.perf_counter()
    if subscribed:
        wait_confirmed(src, n, lsn, timeout, tenant, "inside the freeze; run switch again")
    report.catchup_seconds = time.perf_counter() - t0
    step("caught up")
    t0 = time.perf_counter()
    if tracked:
        report.keys_rechecked = rv.final_check(ready[0], ready[1], tenant, keyed, n.base).keys
    else:
        # No trustworthy record of what changed (tracking was interrupted): every row, in the freeze.
        report.full_pass_in_freeze = rv.full_pass(*dsns, tenant, keyed, n.base, lambda _: None, strict=True)
    report.verify_seconds = time.perf_counter() - t0
    step("verified")
    snapshot = _hold_snapshot(ready[2]) if hold else None   # what was verified, for the source's summary
    for t in tables:
        reset_sequences(dst, t, tenant)
    if hold:
        t0 = time.perf_counter()
        drop_subscription(src, dst, n)
        report.drop_seconds = time.perf_counter() - t0
        step("subscription dropped")
    # Otherwise (a caller that summarises after its own switch) the subscription goes with `cleanup`, which that
    # caller runs once its switch is done: the source is frozen and caught up, so nothing is left to apply.
    return snapshot


def _hold_snapshot(conn: psycopg.Connection) -> str:
    """Start a transaction on the source, kept open, whose snapshot other connections can import."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])


def _summarised(report: SwitchReport, summary: Summary) -> None:
    report.source_summary = summary
    report.rows = {t: int(p["count"]) for t, p in summary.parts.items()}


def _finish(src, dst, source_dsn: str, n: MoveNames, tenant: str, tables: list[str], snapshot: str | None,
            report: SwitchReport, cutover: bool, summarise: bool = True) -> None:
    """After the verification: the source's summary (in the snapshot verified inside the freeze, or now when
    resuming: the source takes no writes), then tracking goes, the login (unless another move needs it), and
    the publication -- or, when the caller cuts over, the move's notes record the switch and the summary."""
    if summarise:
        t0 = time.perf_counter()
        _summarised(report, pg.summary(source_dsn, tenant, tables, snapshot=snapshot))
        report.summary_seconds = time.perf_counter() - t0
    if not cutover:
        update_note(src, n, switched=report.source_summary.to_json() if summarise else {"at": time.time()})
    if not (summarise or cutover):
        return     # tracking, login and subscription go with the caller's `cleanup`, after its switch
    rv.untrack(dst, n.base)
    rv.untrack(src, n.base)
    close_login(source_dsn, src, n)
    if cutover:
        drop_publication(src, n)


def _freeze(src: psycopg.Connection, tenant: str, lock_timeout: str) -> str:
    """Freeze in its own transaction (it waits for in-flight writers); returns an LSN past their commits.

    The insert position is read after freeze() has waited out the writers, and the transaction commits
    synchronously, so the WAL up to that LSN is flushed and the walsender can send it at once."""
    seconds = _seconds(lock_timeout)
    try:
        with src.transaction():
            src.execute("SELECT set_config('synchronous_commit', 'on', true)")
            pg.freeze_in(src, tenant, "frozen", seconds)
            return str(src.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
    except pg.FreezeTimeout:
        raise ReplicationError(f"could not freeze '{tenant}' within {lock_timeout}: a long transaction is writing it; "
                               "nothing changed, run switch again") from None


def _seconds(duration: str) -> float:
    """'30s', '500ms', '2min' or a bare number of milliseconds (PostgreSQL's units) as seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*", duration)
    if not m:
        raise ValueError(f"not a duration: {duration!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 0.001}[m.group(2)]
