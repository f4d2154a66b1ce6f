"""Starting a move: the preflight, the row-filtered publication and its slot on the source, the subscription on
the target; then waiting until every table is synchronised.
"""

from __future__ import annotations

import json
import time

import psycopg
from psycopg import sql

from tenancy.stores.postgres import isolated_tables
from tenancy.stores.replication.common import (Checkpoint, MoveNames, ReplicaIdentityError, ReplicationError,
                                               SyncTimeout, as_error, check_replication_role, connect_autocommit,
                                               database_of, move_notes, names, pick_tables, registry_state,
                                               replica_identity_problems, slot_of, subscriber_conninfo, subscription_of,
                                               table_ident, tenant_rows)
from tenancy.stores.replication.credential import moves_elsewhere, open_login, other_database_moves, subscribe
from tenancy.stores.replication.prefreeze import require_tracking_sql


# --- start ----------------------------------------------------------------------------------------------

def _preflight(src: psycopg.Connection, dst: psycopg.Connection, wanted: list[str] | None, replication_conninfo: str,
               slots_needed: int = 3, own: MoveNames | None = None) -> list[str]:
    """The tables to move; raises with what to do when an online move between these databases cannot start."""
    level = src.execute("SELECT current_setting('wal_level')").fetchone()[0]
    if level != "logical":
        raise ReplicationError(f"the source's wal_level is {level}, not logical: it cannot decode its changes for "
                               "replication (Cloud SQL: cloudsql.logical_decoding=on; elsewhere wal_level = logical and a "
                               "restart)")
    if not src.execute("SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        user = src.execute("SELECT current_user").fetchone()[0]
        raise ReplicationError(f"the source connection's role {user} lacks REPLICATION, which creating and dropping the "
                               f"move's replication slot needs: ALTER ROLE {user} REPLICATION (or connect as a superuser)")
    free = src.execute("SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM "
                       "pg_replication_slots)").fetchone()[0]
    if free < slots_needed:
        raise ReplicationError(f"the source has {free} free replication slots; an online move needs {slots_needed} (one, "
                               "and one per table while its initial copy runs): raise max_replication_slots")
    require_tracking_sql(src, "source")
    tables = pick_tables(src, wanted)
    problems = replica_identity_problems(src, tables)
    if problems:
        raise ReplicaIdentityError("\n".join(problems))
    missing = sorted(set(tables) - set(isolated_tables(dst)))
    if missing:
        raise ReplicationError(f"the target lacks isolated tables {', '.join(missing)}: apply the tenancy SQL and "
                               "the application schema there first (tenancy db apply DSN)")
    require_tracking_sql(dst, "target")
    if not dst.execute("SELECT rolsuper OR (rolbypassrls AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE "
                       "rolname = 'cloudsqlsuperuser') THEN pg_has_role(current_user, 'cloudsqlsuperuser', "
                       "'MEMBER') ELSE false END) FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        raise ReplicationError("the target connection must be a superuser (on Cloud SQL: a cloudsqlsuperuser with "
                               "BYPASSRLS): PostgreSQL 15 lets only superusers create subscriptions, and its apply "
                               "worker writes no table under row-level security for an owner without BYPASSRLS")
    check_replication_role(src, replication_conninfo, tables)
    elsewhere = other_database_moves(src, own)
    if elsewhere:
        raise ReplicationError(moves_elsewhere(elsewhere))
    return tables


def unavailable(source_dsn: str, target_dsn: str, replication_conninfo: str, tables: list[str] | None = None) -> str | None:
    """Why an online move between these databases cannot start (one line), or None when it can."""
    try:
        with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
            _preflight(src, dst, tables, replication_conninfo)
    except ReplicationError as exc:
        return str(exc).splitlines()[0]
    except psycopg.Error as exc:
        return str(as_error(exc, "checking the databases failed"))
    return None


def start(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None, replication_conninfo: str, *,
          move: str, plan: str | None = None, model: str | None = None,
          checkpoint: Checkpoint | None = None) -> MoveNames:
    """Begin (or continue) replicating one tenant's rows; returns the move's names. Safe to call again: a call
    on a running move gives its subscription the live password again (and the role its login, if it lost it)."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        try:
            sub = subscription_of(dst, n)
            tables = _preflight(src, dst, tables, replication_conninfo, slots_needed=0 if sub or slot_of(src, n) else 3,
                                own=n)
            conninfo = subscriber_conninfo(replication_conninfo)
            if sub is not None:
                subscribe(target_dsn, n, conninfo, open_login(source_dsn, src, n), create=False)
                if not sub[1]:
                    dst.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(n.subscription)))
                return n
            source_row = src.execute("SELECT plan, model, state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
            if source_row is None:
                raise ReplicationError(f"tenant '{tenant}' is not registered in the source's tenancy.tenants")
            if tenant_rows(dst, tenant, tables):
                raise ReplicationError(f"the target already holds rows of '{tenant}': an online move needs it empty for "
                                       "that tenant (delete them, or abort the earlier move)")
            before = move_notes(src, n)
            if before is None:
                if source_row[2] != "active":
                    raise ReplicationError(f"tenant '{tenant}' is {source_row[2]} at the source; an online move starts "
                                           "from an active tenant")
                before = {"tenant": tenant, "source_state": source_row[2], "target_state": registry_state(dst, tenant),
                          "target": database_of(target_dsn)}
                _create_publication(src, n, move, tenant, tables, before)
            step("publication")
            dst.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, 'frozen') "
                        "ON CONFLICT (id) DO UPDATE SET state = 'frozen', updated_at = now()",
                        (tenant, plan or source_row[0], model or source_row[1]))
            step("target frozen")
            if slot_of(src, n) is None:
                # Needs no open transaction on either connection: slot creation waits for running transactions.
                # Before the login: a slot is what tells a move ending elsewhere that this one needs the role.
                src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (n.slot,))
            step("slot")
            password = open_login(source_dsn, src, n)
            step("login")
            subscribe(target_dsn, n, conninfo, password, create=True)
        except psycopg.Error as exc:
            raise as_error(exc, f"starting the online move of '{tenant}' failed") from None
    return n


def _create_publication(src: psycopg.Connection, n: MoveNames, move: str, tenant: str, tables: list[str],
                        before: dict) -> None:
    members = sql.SQL(", ").join(sql.SQL("{t} WHERE (tenant_id = {tid})").format(t=table_ident(t), tid=sql.Literal(tenant))
                                 for t in tables)
    with src.transaction():
        src.execute(sql.SQL("CREATE PUBLICATION {p} FOR TABLE {m} WITH (publish = 'insert, update, delete')").format(
            p=sql.Identifier(n.publication), m=members))
        src.execute("INSERT INTO tenancy.replication_moves (move, operation, tenant_id, note) VALUES (%s, %s, %s, %s)",
                    (n.base, move, tenant, json.dumps(before, sort_keys=True)))


# --- sync -----------------------------------------------------------------------------------------------

def lag(source_dsn: str, n: MoveNames) -> int | None:
    """Bytes of source WAL the subscription has not confirmed yet; None when the slot does not exist."""
    with connect_autocommit(source_dsn) as src:
        row = src.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                          "FROM pg_replication_slots WHERE slot_name = %s", (n.slot,)).fetchone()
        return None if row is None else max(int(row[0] or 0), 0)


def wait_synced(source_dsn: str, target_dsn: str, tenant: str, *, move: str, timeout: float = 600.0, poll: float = 0.2,
                checkpoint: Checkpoint | None = None) -> int:
    """Wait until every table of the move is synchronised; returns the remaining lag in bytes."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    deadline = time.monotonic() + timeout
    with connect_autocommit(target_dsn) as dst:
        while True:
            sub = subscription_of(dst, n)
            if sub is None:
                raise ReplicationError(f"no subscription {n.subscription} on the target: the move of '{tenant}' was not "
                                       "started (run start) or has already switched")
            if not sub[1]:
                errors = dst.execute("SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats "
                                     "WHERE subid = %s", (sub[0],)).fetchone()
                raise ReplicationError(f"subscription {n.subscription} is disabled ({errors[0] if errors else 0} worker "
                                       "errors; see the target server's log): fix the cause and run start again, or abort")
            states = dst.execute("SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel "
                                 "WHERE srsubid = %s ORDER BY 1", (sub[0],)).fetchall()
            waiting = [(t, s) for t, s in states if s != "r"]
            if states and not waiting:
                return lag(source_dsn, n) or 0
            if time.monotonic() >= deadline:
                raise SyncTimeout(f"tables of '{tenant}' not yet synchronised after {timeout:g}s: "
                                  + ", ".join(f"{t} (state {s})" for t, s in waiting))
            step("syncing")
            time.sleep(poll)
