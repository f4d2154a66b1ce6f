"""Ending a move: dropping what remains of its replication objects (cleanup), undoing it (abort), and finding
slots, publications, subscriptions and triggers that no move owns (orphans).
"""

from __future__ import annotations

import time
from typing import Iterable

import psycopg
from psycopg import sql

from tenancy.stores import replica_verify as rv
from tenancy.stores.postgres import clear_tenant, isolated_tables
from tenancy.stores.replication.common import (MoveNames, NAME_RE, Orphan, REPLICATION_USER, ReplicationError,
                                               SYNC_SLOT_RE, as_error, connect_autocommit, has_publication,
                                               has_state_table, is_switched, move_notes, names, registry_state, slot_of,
                                               subscription_of)
from tenancy.stores.replication.credential import close_login, live_slots


# --- teardown -------------------------------------------------------------------------------------------

def drop_subscription(src: psycopg.Connection, dst: psycopg.Connection, n: MoveNames) -> list[str]:
    """Subscription, its slot and any table-sync slots; works whichever of them exist.

    DROP SUBSCRIPTION is never left to drop slots at the publisher: while a table is still syncing, it would
    connect to drop that table's sync slot, and within one cluster that deadlocks with a sync slot being
    created (slot creation waits for the DROP's own transaction). So the subscription is disabled, detached
    from its slot and pointed at no server (a failed connection is tolerated once slot_name is NONE), and the
    slots are dropped from the source side once the subscription's walsenders have gone."""
    dropped = []
    sub = subscription_of(dst, n)
    if sub is not None:
        ident = sql.Identifier(n.subscription)
        if sub[1]:
            dst.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
        if sub[2] is not None:
            dst.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
        dst.execute(sql.SQL("ALTER SUBSCRIPTION {} CONNECTION 'host=/nonexistent/tenancy-move-dropped'").format(ident))
        dst.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        dropped.append(f"subscription {n.subscription}")
        sync = f"pg\\_{sub[0]}\\_sync\\_%"
        _wait_walsenders_gone(src, n.subscription, sync)
        slots = [n.slot] + [r[0] for r in src.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s ORDER BY 1", (sync,)).fetchall()]
    else:
        slots = [n.slot]
    for slot in slots:
        if _drop_slot(src, slot):
            dropped.append(f"slot {slot}")
    return dropped


def _wait_walsenders_gone(src: psycopg.Connection, appname: str, sync_like: str, wait: float = 10.0) -> None:
    """The apply worker's walsender is named after the subscription, a table sync's after its slot."""
    deadline = time.monotonic() + wait
    while True:
        pids = [r[0] for r in src.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND (application_name = %s "
            "OR application_name LIKE %s)", (appname, sync_like)).fetchall()]
        if not pids:
            return
        if time.monotonic() >= deadline:
            for pid in pids:
                src.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.01)


def _drop_slot(src: psycopg.Connection, slot: str, wait: float = 10.0) -> bool:
    """Drop a slot once its walsender has gone (it exits when the subscription's worker disconnects)."""
    deadline = time.monotonic() + wait
    while True:
        row = src.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is None:
            return False
        if row[0] is not None:
            if time.monotonic() >= deadline:
                src.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            time.sleep(0.01)
            continue
        try:
            src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return True
        except (psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
            continue


def drop_publication(src: psycopg.Connection, n: MoveNames) -> None:
    """The publication and the move's notes, together."""
    with src.transaction():
        src.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(n.publication)))
        if has_state_table(src):
            src.execute("DELETE FROM tenancy.replication_moves WHERE move = %s", (n.base,))


def cleanup(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> list[str]:
    """Drop the move's subscription, slots, tracking and publication, whichever exist, and close the role's login
    unless another move needs it. Data and registries stay."""
    n = names(move)
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        try:
            dropped = drop_subscription(src, dst, n)
            dropped += rv.untrack(dst, n.base) + rv.untrack(src, n.base)
            dropped += close_login(source_dsn, src, n)
            if move_notes(src, n) is not None or has_publication(src, n):
                drop_publication(src, n)
                dropped.append(f"publication {n.publication}")
        except psycopg.Error as exc:
            raise as_error(exc, f"dropping the replication objects of '{tenant}' failed") from None
    return dropped


def abort(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> list[str]:
    """Undo an unswitched move: replication objects dropped, the target's copy deleted, registries restored.

    Refuses once the target is active and the source read-only (the tenant lives at the target)."""
    n = names(move)
    done: list[str] = []
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        try:
            before = move_notes(src, n)
            if is_switched(registry_state(src, tenant), registry_state(dst, tenant)):
                raise ReplicationError(f"the move of '{tenant}' has already switched (the target is active): it cannot be "
                                       "aborted; run switch again to finish it, or cleanup to drop what remains")
            if before is None and subscription_of(dst, n) is None and slot_of(src, n) is None:
                done += rv.untrack(dst, n.base) + rv.untrack(src, n.base) + close_login(source_dsn, src, n)
                return done  # never started, or already aborted
            before = before or {"source_state": "active", "target_state": None}
            done += drop_subscription(src, dst, n)
            done += rv.untrack(dst, n.base) + rv.untrack(src, n.base)
            done += close_login(source_dsn, src, n)
            if registry_state(dst, tenant) is not None:
                with dst.transaction():
                    deleted = clear_tenant(dst, tenant, [t for t in isolated_tables(dst)])
                done.append(f"deleted {deleted} rows of '{tenant}' at the target")
                if before.get("target_state") is None:
                    dst.execute("DELETE FROM tenancy.tenants WHERE id = %s", (tenant,))
                else:
                    dst.execute("UPDATE tenancy.tenants SET state = %s, updated_at = now() WHERE id = %s",
                                (before["target_state"], tenant))
            if registry_state(src, tenant) != before["source_state"]:
                src.execute("SELECT tenancy.freeze(%s, %s)", (tenant, before["source_state"]))
                done.append(f"source state back to {before['source_state']}")
            if move_notes(src, n) is not None or has_publication(src, n):
                drop_publication(src, n)
                done.append(f"publication {n.publication}")
        except psycopg.Error as exc:
            raise as_error(exc, f"aborting the move of '{tenant}' failed (run abort again)") from None
    return done


def orphans(dsn: str, owned: Iterable[str] = ()) -> list[Orphan]:
    """Replication objects of tenancy moves that no move owns: pass the names (`names(move).base`) of moves in
    progress. A slot left behind holds WAL forever; a change-tracking trigger taxes every write of its table;
    a publication or subscription left behind is clutter; a replication role that can log in while no move's
    slot exists is a standing credential that decodes every change. Slots, subscriptions and roles are
    cluster-wide; publications and triggers are listed for `dsn`'s database."""
    keep = set(owned)
    found: list[Orphan] = []
    with connect_autocommit(dsn) as conn:
        subs = {int(r[0]): (r[1], r[2]) for r in conn.execute(
            "SELECT s.oid, s.subname, d.datname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid").fetchall()}
        for name, database, active, held in conn.execute(
                "SELECT slot_name, database, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
                "FROM pg_replication_slots ORDER BY 1").fetchall():
            sync = SYNC_SLOT_RE.match(name)
            if (NAME_RE.match(name) and name not in keep) or (sync and int(sync.group(1)) not in subs):
                found.append(Orphan("slot", name, database or "", f"{'active' if active else 'inactive'}, holds {held} of WAL"))
        for (name,) in conn.execute("SELECT pubname FROM pg_publication ORDER BY 1").fetchall():
            if NAME_RE.match(name) and name not in keep:
                found.append(Orphan("publication", name, conn.info.dbname, "no move owns it"))
        for name, database in sorted(subs.values()):
            if NAME_RE.match(name) and name not in keep:
                found.append(Orphan("subscription", name, database, "no move owns it"))
        for name, table in rv.triggers(conn):
            base = name.rsplit("_", 1)[0]
            if base not in keep:
                found.append(Orphan("trigger", name, conn.info.dbname,
                                    f"records {table}'s changes for a move no one owns (cost on every write)"))
        login = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (REPLICATION_USER,)).fetchone()
        if login and login[0] and not live_slots(conn):
            found.append(Orphan("login", REPLICATION_USER, "",
                                "can log in while no move replicates from this server (it decodes every change): "
                                f"ALTER ROLE {REPLICATION_USER} NOLOGIN PASSWORD NULL"))
    return found
