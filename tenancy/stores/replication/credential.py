"""The replication credential: `tenancy_replication` may log in only while some move's slot on the server needs
it; the password and its SCRAM verifier travel in a connection's startup packet, never in a logged statement.
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql

from tenancy.stores.replication.common import (MoveNames, NAME_RE, REPLICATION_USER, ReplicationError, SECRET_SETTING,
                                               VERIFIER_SETTING, connect_autocommit, has_state_table)


# --- the replication credential ------------------------------------------------------------------------------

_CREDENTIAL_LOCK = 7_135_211_905_112_871_301   # pg_advisory_xact_lock key: opening and closing the login


def _verifier(conn: psycopg.Connection, password: str) -> str:
    """SCRAM-SHA-256 verifier of the password, computed by libpq here: the server never receives the password."""
    return conn.pgconn.encrypt_password(password.encode(), REPLICATION_USER.encode(), b"scram-sha-256").decode()


def live_slots(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(slot, database) of every move's slot on the server: the moves whose subscriptions connect as the role."""
    return [(r[0], r[1] or "") for r in conn.execute(
        "SELECT slot_name, database FROM pg_replication_slots WHERE slot_name LIKE 'tmove\\_%' ORDER BY 1").fetchall()
        if NAME_RE.match(r[0])]


def other_database_moves(conn: psycopg.Connection, own: MoveNames | None) -> list[tuple[str, str]]:
    here = conn.info.dbname
    return [(slot, db) for slot, db in live_slots(conn) if db != here and (own is None or slot != own.slot)]


def _block(body: str, conn: psycopg.Connection, **values: str) -> sql.Composable:
    """DO <body>, with {name} in the body replaced by SQL literals. An error inside is raised again without its
    CONTEXT, which would quote the statement that failed (and the password the statement read)."""
    text = "BEGIN\n" + body.format(**{k: sql.Literal(v).as_string(conn) for k, v in values.items()}) + (
        "\nEXCEPTION WHEN OTHERS THEN\n  RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;\nEND")
    return sql.SQL("DO {}").format(sql.Literal(text))


def open_login(source_dsn: str, src: psycopg.Connection, n: MoveNames) -> str:
    """The password the move's subscription connects with: the live one when other moves from this database
    replicate now (a fresh one would lock their workers out at their next connection), else a fresh random one,
    set with LOGIN. Kept in the move's tenancy.replication_moves row until its subscription is dropped."""
    fresh = secrets.token_hex(32)
    with connect_autocommit(source_dsn, **{SECRET_SETTING: fresh, VERIFIER_SETTING: _verifier(src, fresh)}) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREDENTIAL_LOCK,))
            elsewhere = other_database_moves(conn, n)
            if elsewhere:
                raise ReplicationError(moves_elsewhere(elsewhere))
            others = [slot for slot, _ in live_slots(conn) if slot != n.slot]
            row = conn.execute(
                "SELECT m.credential FROM tenancy.replication_moves m JOIN pg_roles r ON r.rolname = %s AND r.rolcanlogin "
                "WHERE m.move = ANY(%s) AND m.credential IS NOT NULL LIMIT 1", (REPLICATION_USER, [n.base, *others])
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE tenancy.replication_moves SET credential = (SELECT credential FROM "
                             "tenancy.replication_moves WHERE move = ANY(%s) AND credential IS NOT NULL LIMIT 1) "
                             "WHERE move = %s", ([n.base, *others], n.base))
                return str(row[0])
            # Every live move of this database gets the new password (their subscriptions take it when `start`
            # runs again for them); the statements name the settings, never their values.
            conn.execute(_block(
                "  EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', {role}, current_setting({verifier}));\n"
                "  UPDATE tenancy.replication_moves SET credential = current_setting({secret}) "
                "WHERE move = {move} OR credential IS NOT NULL;",
                conn, role=REPLICATION_USER, verifier=VERIFIER_SETTING, secret=SECRET_SETTING, move=n.base))
            return fresh


def close_login(source_dsn: str, src: psycopg.Connection, n: MoveNames) -> list[str]:
    """The move's subscription is gone: its copy of the password goes, and once no move's slot remains on the
    server the role cannot log in any more and its password is a new random one nobody knows."""
    unknown = secrets.token_hex(32)
    with connect_autocommit(source_dsn, **{VERIFIER_SETTING: _verifier(src, unknown)}) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREDENTIAL_LOCK,))
            stored = has_state_table(conn)
            if stored:
                conn.execute("UPDATE tenancy.replication_moves SET credential = NULL WHERE move = %s", (n.base,))
            if live_slots(conn):
                return []
            if stored:
                conn.execute("UPDATE tenancy.replication_moves SET credential = NULL WHERE credential IS NOT NULL")
            if not conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (REPLICATION_USER,)).fetchone()[0]:
                return []
            conn.execute(_block("  EXECUTE format('ALTER ROLE %I NOLOGIN PASSWORD %L', {role}, current_setting({verifier}));",
                                conn, role=REPLICATION_USER, verifier=VERIFIER_SETTING))
    return [f"login of {REPLICATION_USER} closed (no move replicates from this server; its password is a new random one)"]


def moves_elsewhere(moves: list[tuple[str, str]]) -> str:
    return (f"an online move replicates from another database of this server ({', '.join(f'{s} in {d}' for s, d in moves)}):"
            f" both would connect as {REPLICATION_USER}, whose one password a move keeps in its own database; wait until "
            "it has switched, or move these rows with --method copy (a leftover slot: `tenancy moves` lists it)")


def subscribe(target_dsn: str, n: MoveNames, conninfo: str, password: str, *, create: bool) -> None:
    """Create the subscription, or give it the password again. The password is in this connection's startup packet
    only; pgAudit, which logs what a DO block runs, logs the statement without its text (its class and command
    stay), and refuses when the connection's role may not ask for that while pgAudit logs DDL."""
    stmt = ("CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I WITH (create_slot = false, slot_name = %L, "
            "copy_data = true, synchronous_commit = 'on', disable_on_error = true)") if create else \
        "ALTER SUBSCRIPTION %I CONNECTION %L"
    with connect_autocommit(target_dsn, **{SECRET_SETTING: password}) as dst:
        dst.execute(_block(
            "  IF coalesce(current_setting('pgaudit.log', true), 'none') NOT IN ('', 'none') THEN\n"
            "    BEGIN\n"
            "      PERFORM set_config('pgaudit.log_statement', 'off', true);\n"
            "    EXCEPTION WHEN insufficient_privilege THEN\n"
            "      RAISE EXCEPTION 'pgAudit logs DDL here and % may not set pgaudit.log_statement, so the subscription''s "
            "connection string with its password would reach the audit log: GRANT SET ON PARAMETER "
            "pgaudit.log_statement TO %', current_user, current_user USING ERRCODE = '42501';\n"
            "    END;\n"
            "  END IF;\n"
            "  EXECUTE format({stmt}, {sub}, {conninfo} || ' password=' || current_setting({secret}), {pub}, {slot});",
            dst, stmt=stmt, sub=n.subscription, conninfo=conninfo, secret=SECRET_SETTING, pub=n.publication, slot=n.slot))
