"""Online tenant moves between PostgreSQL databases through row-filtered logical replication.

The tenant keeps writing at the source while its rows copy; writes pause only for the switch.

    start        publication `FOR TABLE t WHERE (tenant_id = '<id>'), ...` on the source, its slot, and a
                 subscription on the target that copies the tenant's rows and then streams its changes
    wait_synced  every table synchronised (pg_subscription_rel state 'r'); returns the lag in bytes
    preverify    while the tenant writes: change tracking on at both sides, every row of the replicated copy
                 compared with the source once (key ranges, at LSN-coordinated snapshots), then the changed
                 rows until few remain (tenancy/stores/replica_verify.py)
    switch       preverify (cheap when it just ran), then: freeze the source, wait until the slot confirmed
                 the freeze's LSN, compare only the rows changed since the last comparison, move sequences,
                 drop subscription and slot, target 'active', source 'readonly'; after the freeze: the
                 source's summary in the snapshot that was verified, tracking and publication dropped
    cleanup      drop whatever replication objects (and tracking triggers) of the move remain
    abort        cleanup, then the target's partial copy goes and both registries return to their states
    orphans      slots, publications, subscriptions and tracking triggers that no move owns

The freeze therefore lasts the drain, the catch-up of the last changes, a comparison of the rows changed
since the last pre-freeze pass (a number that follows the write rate, not the tenant's size), the
sequences and dropping the subscription.

How the target's defences meet the apply worker. The subscription's workers (initial copy and apply) run
with `session_replication_role = replica`, so ordinary triggers -- the write guard among them, and the
foreign-key triggers -- do not fire for replicated rows; the subscription owner is a superuser (PostgreSQL 15
requires one to create a subscription: the target DSN's user), so row-level security does not filter it.
The application is kept out instead: the target's registry says `frozen` for the tenant from `start` until
the switch, so the write guard refuses every application write there.

How the source's defences meet the publisher. The subscription connects as `tenancy_replication`
(REPLICATION, BYPASSRLS, SELECT on isolated tables only). Without BYPASSRLS the initial copy would see zero
rows and report success; the row filter, not RLS, limits the rows to the tenant. The filter may only use
replica-identity columns while UPDATE/DELETE are published -- otherwise every UPDATE of that table, for
every tenant, starts failing -- so `start` refuses a table whose replica identity lacks tenant_id. TRUNCATE
is not published: it ignores row filters and would empty the target for every tenant.

The replication credential. `tenancy_replication` can log in only while a move's subscription needs it:
`start` gives it LOGIN and a random password (set as a SCRAM verifier computed here, so the source never
sees the password itself), and once no move's slot remains on the source's server (slots are the live
moves: a subscription connects through one), the role goes back to NOLOGIN with a new random password nobody
knows. Moves that replicate from one server at the same time share the live password (kept in their
`tenancy.replication_moves` rows, which only the owner reads, and erased with the last of them): giving the
second one a fresh password would lock out the first one's workers the next time they connect (each table's
initial copy opens a new connection). No statement the servers log holds the password or the verifier:
they travel in the connection's startup packet (`options=-c tenancy.move_secret=...`, which neither
`log_statement` nor pgAudit logs) and a DO block reads them from there. pgAudit still logs the statements
a DO block runs: a role's password it shows as <REDACTED>, and for the subscription's CONNECTION the DO block
switches off `pgaudit.log_statement` for its own transaction (the audit record keeps the class and command).
An error inside the block is raised again without its context, which would quote the statement.

Move state (the registry states from before the move, which `abort` restores; the time of the last full pass,
`verified`, cleared whenever tracking had to be switched on again; the switched summary; the live password)
is a row of `tenancy.replication_moves` in the source database, created and dropped with the publication.
The application role has no privilege on it: a catalogue comment, which every role can read, would tell one
tenant another's row counts, checksums and destination.

Resumable: each step looks at what exists (state row and publication, slot, subscription, registry states) and
continues. Object names are derived from the caller's operation id (`names(move)`: `tmove_` and 16 hex digits
of its SHA-256), never from the tenant, so a re-run of the same operation finds its own objects and no name
tells which tenant moves. Within one cluster the slot is created before the subscription
(`create_slot = false`): a subscription creating its own slot would wait for its own transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenancy.naming import DATABASE_USERS
from tenancy.stores import Summary
from tenancy.stores import postgres as pg
from tenancy.stores import replica_verify as rv
from tenancy.stores.postgres import DataError, clear_tenant, isolated_tables

Checkpoint = Callable[[str], None]
PREFIX = "tmove_"
# tmove_<16 hex>; the second form is how moves named their objects before operation ids (tenant and a hash),
# still recognised so that what such a move left behind is reported.
NAME_RE = re.compile(r"^tmove_(?:[0-9a-f]{16}|[a-z0-9_]+_[0-9a-f]{10})$")
_, _, REPLICATION_USER = DATABASE_USERS   # owner, runtime, replication
SECRET_SETTING = "tenancy.move_secret"       # the password, in the startup packet of the connection that uses it
VERIFIER_SETTING = "tenancy.move_verifier"   # its SCRAM verifier, likewise
SYNC_SLOT_RE = re.compile(r"^pg_(\d+)_sync_\d+_\d+$")


class ReplicationError(DataError):
    pass


class ReplicaIdentityError(ReplicationError):
    exit_code = 2


class SyncTimeout(ReplicationError):
    pass


@dataclass(frozen=True)
class MoveNames:
    """Publication, subscription and slot share one name (they live in different catalogs)."""

    base: str

    @property
    def publication(self) -> str:
        return self.base

    @property
    def subscription(self) -> str:
        return self.base

    @property
    def slot(self) -> str:
        return self.base


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


@dataclass(frozen=True)
class Orphan:
    kind: str        # slot | publication | subscription | trigger | login
    name: str
    database: str
    detail: str

    def __str__(self) -> str:
        where = f" in database {self.database}" if self.database else ""   # roles belong to the server
        return f"{self.kind} {self.name}{where}: {self.detail}"


def database_of(dsn: str) -> str:
    """host:port/dbname of a DSN: identifies a database without its user or password."""
    try:
        d = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ReplicationError(f"invalid connection string: {str(exc).splitlines()[0]}") from None
    return f"{d.get('host', '')}:{d.get('port', '5432')}/{d.get('dbname', d.get('user', ''))}"


def names(move: str) -> MoveNames:
    """`tmove_<16 hex digits of the operation id's SHA-256>`: the caller's operation id (one per PostgreSQL pair:
    a move and its way back are two operations) is opaque here and may name the tenant; the name does not."""
    if not isinstance(move, str) or not move.strip():
        raise ReplicationError("an online move needs its operation id (move=...): its objects are named after it")
    return MoveNames(PREFIX + hashlib.sha256(move.encode()).hexdigest()[:16])


def _connect(dsn: str, **settings: str) -> psycopg.Connection:
    """An autocommit connection; `settings` become session settings given in the startup packet (how a secret
    reaches the server without being part of any statement)."""
    try:
        if settings:
            given = conninfo_to_dict(dsn).get("options") or ""
            extra = " ".join(f"-c {k}={v}" for k, v in settings.items())
            return psycopg.connect(dsn, autocommit=True, options=f"{given} {extra}".strip())
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ReplicationError(f"cannot connect: {str(exc).strip()}") from None


def _as_error(exc: psycopg.Error, doing: str) -> ReplicationError:
    return ReplicationError(f"{doing}: {str(exc).strip().splitlines()[0]}")


# --- tables ---------------------------------------------------------------------------------------------

def _pick(conn: psycopg.Connection, wanted: list[str] | None) -> list[str]:
    """The isolated tables (format('%I.%I') names, parents first), or those of them the caller named. Only
    names from this list are ever put into SQL text (`_ident`)."""
    found = isolated_tables(conn)
    if not wanted:
        return found
    bad = [t for t in wanted if t not in found]
    if bad:
        raise ReplicationError(f"{', '.join(bad)}: not isolated tables of the source (isolated: {', '.join(found)})")
    return [t for t in found if t in wanted]


def _ident(table: str) -> sql.Composable:
    return sql.SQL(table)  # a format('%I.%I') name checked by _pick


def _reset_sequences(conn: psycopg.Connection, table: str, tenant: str) -> None:
    """Sequences are not replicated: the target's identity/serial sequences move past the tenant's values."""
    pg.advance_sequences(conn, table, tenant)


# --- checks ---------------------------------------------------------------------------------------------

def replica_identity_problems(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    """One message per table whose replica identity does not include tenant_id."""
    problems = []
    for table in tables:
        ident, cols = conn.execute(
            "SELECT c.relreplident, (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i "
            "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "  WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END) "
            "FROM pg_class c WHERE c.oid = %s::regclass", (table,)).fetchone()
        if ident == "f":
            continue
        if cols and "tenant_id" in cols:
            continue
        what = {"n": "REPLICA IDENTITY NOTHING", "d": f"primary key ({', '.join(cols)})" if cols else "no primary key",
                "i": f"index on ({', '.join(cols or [])})"}[ident]
        problems.append(
            f"table {table} cannot be moved online: its replica identity ({what}) does not include tenant_id, and a "
            f"publication filtering on tenant_id with UPDATE/DELETE published may only use replica-identity columns "
            f"(the table's updates would fail for every tenant). Fix: make the primary key include tenant_id, or "
            f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX <a unique index on (tenant_id, ...)>")
    return problems


def subscriber_conninfo(conninfo: str) -> str:
    """How the target's server reaches the source, without any password: each move sets tenancy_replication's
    own (a password given here would be a standing credential, and it would land in the subscription's
    CREATE statement). The user must be tenancy_replication: the move changes that role's password and login."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise ReplicationError("the replication connection string is not valid libpq syntax") from None
    user = params.get("user") or REPLICATION_USER
    if user != REPLICATION_USER:
        raise ReplicationError(f"the replication connection string's user is {user}: online moves connect as "
                               f"{REPLICATION_USER}, whose password and login each move sets itself")
    params = {k: v for k, v in params.items() if k not in ("password", "passfile")}
    params["user"] = user
    return make_conninfo(**params)


def _check_replication_role(src: psycopg.Connection, conninfo: str, tables: list[str]) -> None:
    user = conninfo_to_dict(subscriber_conninfo(conninfo))["user"]
    row = src.execute("SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = %s",
                      (user,)).fetchone()
    if row is None:
        raise ReplicationError(f"the replication role {user} does not exist on the source (apply the tenancy SQL)")
    sup, repl, bypass = row
    if sup:
        raise ReplicationError(f"the replication role {user} is a superuser: a move gives it a login for its duration "
                               f"only, which must not be a superuser's (ALTER ROLE {user} NOSUPERUSER)")
    if not repl:
        raise ReplicationError(f"the replication role {user} lacks REPLICATION: ALTER ROLE {user} REPLICATION")
    if not bypass:
        raise ReplicationError(f"the replication role {user} lacks BYPASSRLS: row-level security would let the initial "
                               f"copy see zero rows and report success (ALTER ROLE {user} BYPASSRLS)")
    for t in tables:
        if not src.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (user, t)).fetchone()[0]:
            raise ReplicationError(f"the replication role {user} cannot read {t}: run SELECT tenancy.isolate('{t}')")
    # PostgreSQL 15 lets only a superuser change a REPLICATION role; Cloud SQL lets a cloudsqlsuperuser member do it.
    if not src.execute("SELECT rolsuper OR (rolcreaterole AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                       "'cloudsqlsuperuser') THEN pg_has_role(current_user, 'cloudsqlsuperuser', 'MEMBER') ELSE false "
                       "END) FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        me = src.execute("SELECT current_user").fetchone()[0]
        raise ReplicationError(f"the source connection's role {me} cannot set {user}'s password and login, which an "
                               "online move does for its duration: connect as a superuser (on Cloud SQL: a "
                               "cloudsqlsuperuser with CREATEROLE)")


def _tenant_rows(conn: psycopg.Connection, tenant: str, tables: list[str]) -> int:
    total = 0
    for t in tables:
        total += conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(_ident(t)),
                              (tenant,)).fetchone()[0]
    return total


def _state(conn: psycopg.Connection, tenant: str) -> str | None:
    row = conn.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


# --- what exists ----------------------------------------------------------------------------------------

def _notes(src: psycopg.Connection, n: MoveNames) -> dict | None:
    """The move's notes (its tenancy.replication_moves row: registry states before the move, pre-verification,
    the switched summary), or None when there are none -- nor a publication: both come and go together."""
    row = src.execute("SELECT note FROM tenancy.replication_moves WHERE move = %s", (n.base,)).fetchone() \
        if _has_state_table(src) else None
    return dict(row[0]) if row else None


def _has_state_table(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT to_regclass('tenancy.replication_moves') IS NOT NULL").fetchone()[0])


def _has_publication(src: psycopg.Connection, n: MoveNames) -> bool:
    return src.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (n.publication,)).fetchone() is not None


def _slot(src: psycopg.Connection, n: MoveNames) -> tuple | None:
    return src.execute("SELECT active_pid, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
                       (n.slot,)).fetchone()


def _subscription(dst: psycopg.Connection, n: MoveNames) -> tuple | None:
    """(oid, enabled, slot name) of the move's subscription in the target database."""
    return dst.execute("SELECT oid, subenabled, subslotname FROM pg_subscription WHERE subname = %s "
                       "AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                       (n.subscription,)).fetchone()


def status(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> dict:
    """What exists of the move: for `tenancy moves` and for people reading a stuck move."""
    n = names(move)
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        sub = _subscription(dst, n)
        rels = dst.execute("SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel WHERE srsubid = %s "
                           "ORDER BY 1", (sub[0],)).fetchall() if sub else []
        return {"name": n.base, "publication": _notes(src, n) is not None, "slot": _slot(src, n) is not None,
                "subscription": sub is not None, "tables": dict(rels),
                "source_state": _state(src, tenant), "target_state": _state(dst, tenant)}


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
    _require_tracking_sql(src, "source")
    tables = _pick(src, wanted)
    problems = replica_identity_problems(src, tables)
    if problems:
        raise ReplicaIdentityError("\n".join(problems))
    missing = sorted(set(tables) - set(isolated_tables(dst)))
    if missing:
        raise ReplicationError(f"the target lacks isolated tables {', '.join(missing)}: apply the tenancy SQL and "
                               "the application schema there first (tenancy db apply DSN)")
    _require_tracking_sql(dst, "target")
    if not dst.execute("SELECT rolsuper OR (rolbypassrls AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE "
                       "rolname = 'cloudsqlsuperuser') THEN pg_has_role(current_user, 'cloudsqlsuperuser', "
                       "'MEMBER') ELSE false END) FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        raise ReplicationError("the target connection must be a superuser (on Cloud SQL: a cloudsqlsuperuser with "
                               "BYPASSRLS): PostgreSQL 15 lets only superusers create subscriptions, and its apply "
                               "worker writes no table under row-level security for an owner without BYPASSRLS")
    _check_replication_role(src, replication_conninfo, tables)
    elsewhere = _other_database_moves(src, own)
    if elsewhere:
        raise ReplicationError(_elsewhere(elsewhere))
    return tables


def unavailable(source_dsn: str, target_dsn: str, replication_conninfo: str, tables: list[str] | None = None) -> str | None:
    """Why an online move between these databases cannot start (one line), or None when it can."""
    try:
        with _connect(source_dsn) as src, _connect(target_dsn) as dst:
            _preflight(src, dst, tables, replication_conninfo)
    except ReplicationError as exc:
        return str(exc).splitlines()[0]
    except psycopg.Error as exc:
        return str(_as_error(exc, "checking the databases failed"))
    return None


def start(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None, replication_conninfo: str, *,
          move: str, plan: str | None = None, model: str | None = None,
          checkpoint: Checkpoint | None = None) -> MoveNames:
    """Begin (or continue) replicating one tenant's rows; returns the move's names. Safe to call again: a call
    on a running move gives its subscription the live password again (and the role its login, if it lost it)."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        try:
            sub = _subscription(dst, n)
            tables = _preflight(src, dst, tables, replication_conninfo, slots_needed=0 if sub or _slot(src, n) else 3,
                                own=n)
            conninfo = subscriber_conninfo(replication_conninfo)
            if sub is not None:
                _subscribe(target_dsn, n, conninfo, _open_login(source_dsn, src, n), create=False)
                if not sub[1]:
                    dst.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(n.subscription)))
                return n
            source_row = src.execute("SELECT plan, model, state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
            if source_row is None:
                raise ReplicationError(f"tenant '{tenant}' is not registered in the source's tenancy.tenants")
            if _tenant_rows(dst, tenant, tables):
                raise ReplicationError(f"the target already holds rows of '{tenant}': an online move needs it empty for "
                                       "that tenant (delete them, or abort the earlier move)")
            before = _notes(src, n)
            if before is None:
                if source_row[2] != "active":
                    raise ReplicationError(f"tenant '{tenant}' is {source_row[2]} at the source; an online move starts "
                                           "from an active tenant")
                before = {"tenant": tenant, "source_state": source_row[2], "target_state": _state(dst, tenant),
                          "target": database_of(target_dsn)}
                _create_publication(src, n, move, tenant, tables, before)
            step("publication")
            dst.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, 'frozen') "
                        "ON CONFLICT (id) DO UPDATE SET state = 'frozen', updated_at = now()",
                        (tenant, plan or source_row[0], model or source_row[1]))
            step("target frozen")
            if _slot(src, n) is None:
                # Needs no open transaction on either connection: slot creation waits for running transactions.
                # Before the login: a slot is what tells a move ending elsewhere that this one needs the role.
                src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (n.slot,))
            step("slot")
            password = _open_login(source_dsn, src, n)
            step("login")
            _subscribe(target_dsn, n, conninfo, password, create=True)
        except psycopg.Error as exc:
            raise _as_error(exc, f"starting the online move of '{tenant}' failed") from None
    return n


def _create_publication(src: psycopg.Connection, n: MoveNames, move: str, tenant: str, tables: list[str],
                        before: dict) -> None:
    members = sql.SQL(", ").join(sql.SQL("{t} WHERE (tenant_id = {tid})").format(t=_ident(t), tid=sql.Literal(tenant))
                                 for t in tables)
    with src.transaction():
        src.execute(sql.SQL("CREATE PUBLICATION {p} FOR TABLE {m} WITH (publish = 'insert, update, delete')").format(
            p=sql.Identifier(n.publication), m=members))
        src.execute("INSERT INTO tenancy.replication_moves (move, operation, tenant_id, note) VALUES (%s, %s, %s, %s)",
                    (n.base, move, tenant, json.dumps(before, sort_keys=True)))


# --- the replication credential ------------------------------------------------------------------------------

_CREDENTIAL_LOCK = 7_135_211_905_112_871_301   # pg_advisory_xact_lock key: opening and closing the login


def _verifier(conn: psycopg.Connection, password: str) -> str:
    """SCRAM-SHA-256 verifier of the password, computed by libpq here: the server never receives the password."""
    return conn.pgconn.encrypt_password(password.encode(), REPLICATION_USER.encode(), b"scram-sha-256").decode()


def _live_slots(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(slot, database) of every move's slot on the server: the moves whose subscriptions connect as the role."""
    return [(r[0], r[1] or "") for r in conn.execute(
        "SELECT slot_name, database FROM pg_replication_slots WHERE slot_name LIKE 'tmove\\_%' ORDER BY 1").fetchall()
        if NAME_RE.match(r[0])]


def _other_database_moves(conn: psycopg.Connection, own: MoveNames | None) -> list[tuple[str, str]]:
    here = conn.info.dbname
    return [(slot, db) for slot, db in _live_slots(conn) if db != here and (own is None or slot != own.slot)]


def _block(body: str, conn: psycopg.Connection, **values: str) -> sql.Composable:
    """DO <body>, with {name} in the body replaced by SQL literals. An error inside is raised again without its
    CONTEXT, which would quote the statement that failed (and the password the statement read)."""
    text = "BEGIN\n" + body.format(**{k: sql.Literal(v).as_string(conn) for k, v in values.items()}) + (
        "\nEXCEPTION WHEN OTHERS THEN\n  RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;\nEND")
    return sql.SQL("DO {}").format(sql.Literal(text))


def _open_login(source_dsn: str, src: psycopg.Connection, n: MoveNames) -> str:
    """The password the move's subscription connects with: the live one when other moves from this database
    replicate now (a fresh one would lock their workers out at their next connection), else a fresh random one,
    set with LOGIN. Kept in the move's tenancy.replication_moves row until its subscription is dropped."""
    fresh = secrets.token_hex(32)
    with _connect(source_dsn, **{SECRET_SETTING: fresh, VERIFIER_SETTING: _verifier(src, fresh)}) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREDENTIAL_LOCK,))
            elsewhere = _other_database_moves(conn, n)
            if elsewhere:
                raise ReplicationError(_elsewhere(elsewhere))
            others = [slot for slot, _ in _live_slots(conn) if slot != n.slot]
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


def _close_login(source_dsn: str, src: psycopg.Connection, n: MoveNames) -> list[str]:
    """The move's subscription is gone: its copy of the password goes, and once no move's slot remains on the
    server the role cannot log in any more and its password is a new random one nobody knows."""
    unknown = secrets.token_hex(32)
    with _connect(source_dsn, **{VERIFIER_SETTING: _verifier(src, unknown)}) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREDENTIAL_LOCK,))
            stored = _has_state_table(conn)
            if stored:
                conn.execute("UPDATE tenancy.replication_moves SET credential = NULL WHERE move = %s", (n.base,))
            if _live_slots(conn):
                return []
            if stored:
                conn.execute("UPDATE tenancy.replication_moves SET credential = NULL WHERE credential IS NOT NULL")
            if not conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (REPLICATION_USER,)).fetchone()[0]:
                return []
            conn.execute(_block("  EXECUTE format('ALTER ROLE %I NOLOGIN PASSWORD %L', {role}, current_setting({verifier}));",
                                conn, role=REPLICATION_USER, verifier=VERIFIER_SETTING))
    return [f"login of {REPLICATION_USER} closed (no move replicates from this server; its password is a new random one)"]


def _elsewhere(moves: list[tuple[str, str]]) -> str:
    return (f"an online move replicates from another database of this server ({', '.join(f'{s} in {d}' for s, d in moves)}):"
            f" both would connect as {REPLICATION_USER}, whose one password a move keeps in its own database; wait until "
            "it has switched, or move these rows with --method copy (a leftover slot: `tenancy moves` lists it)")


def _subscribe(target_dsn: str, n: MoveNames, conninfo: str, password: str, *, create: bool) -> None:
    """Create the subscription, or give it the password again. The password is in this connection's startup packet
    only; pgAudit, which logs what a DO block runs, logs the statement without its text (its class and command
    stay), and refuses when the connection's role may not ask for that while pgAudit logs DDL."""
    stmt = ("CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I WITH (create_slot = false, slot_name = %L, "
            "copy_data = true, synchronous_commit = 'on', disable_on_error = true)") if create else \
        "ALTER SUBSCRIPTION %I CONNECTION %L"
    with _connect(target_dsn, **{SECRET_SETTING: password}) as dst:
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


# --- sync -----------------------------------------------------------------------------------------------

def lag(source_dsn: str, n: MoveNames) -> int | None:
    """Bytes of source WAL the subscription has not confirmed yet; None when the slot does not exist."""
    with _connect(source_dsn) as src:
        row = src.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                          "FROM pg_replication_slots WHERE slot_name = %s", (n.slot,)).fetchone()
        return None if row is None else max(int(row[0] or 0), 0)


def wait_synced(source_dsn: str, target_dsn: str, tenant: str, *, move: str, timeout: float = 600.0, poll: float = 0.2,
                checkpoint: Checkpoint | None = None) -> int:
    """Wait until every table of the move is synchronised; returns the remaining lag in bytes."""
    step = checkpoint or (lambda s: None)
    n = names(move)
    deadline = time.monotonic() + timeout
    with _connect(target_dsn) as dst:
        while True:
            sub = _subscription(dst, n)
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


def _note(src: psycopg.Connection, n: MoveNames, **changes) -> dict:
    """Update the move's notes (states before the move, pre-verification, the switched summary)."""
    note = {**(_notes(src, n) or {}), **changes}
    note = {k: v for k, v in note.items() if v is not None}
    src.execute("UPDATE tenancy.replication_moves SET note = %s WHERE move = %s", (json.dumps(note, sort_keys=True), n.base))
    return note


def _unsynced(dst: psycopg.Connection, sub) -> list[str]:
    return [r[0] for r in dst.execute("SELECT srrelid::regclass::text FROM pg_subscription_rel WHERE srsubid = %s "
                                      "AND srsubstate <> 'r' ORDER BY 1", (sub[0],)).fetchall()]


def _waiter(src: psycopg.Connection, n: MoveNames, tenant: str, timeout: float, after: str) -> rv.WaitLsn:
    return lambda lsn: _wait_confirmed(src, n, lsn, timeout, tenant, after)


def _require_tracking_sql(conn: psycopg.Connection, where: str) -> None:
    if not conn.execute("SELECT to_regprocedure('tenancy.track_move_change()') IS NOT NULL "
                        "AND to_regclass('tenancy.move_changes') IS NOT NULL "
                        "AND to_regclass('tenancy.replication_moves') IS NOT NULL").fetchone()[0]:
        raise ReplicationError(f"the {where} has an older tenancy SQL without tenancy.move_changes or "
                               "tenancy.replication_moves: run `tenancy db apply DSN` there first")


def _preverify(src, dst, source_dsn, target_dsn, n: MoveNames, tenant: str, keyed: list[rv.Keyed], step: Checkpoint,
               timeout: float) -> PreverifyReport:
    report = PreverifyReport(tenant)
    t0 = time.perf_counter()
    if not (rv.tracking(src, n.base, keyed) and rv.tracking(dst, n.base, keyed)):
        _note(src, n, verified=None)   # changes went unrecorded: an earlier full pass no longer holds
    rv.track(src, n.base, tenant, keyed)
    step("tracking source")
    rv.track(dst, n.base, tenant, keyed)
    step("tracking target")
    wait = _waiter(src, n, tenant, timeout, "before the freeze; nothing is frozen, run it again")
    if not (_notes(src, n) or {}).get("verified"):
        report.full_pass = rv.full_pass(source_dsn, target_dsn, tenant, keyed, n.base, wait)
        _note(src, n, verified=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
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
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        try:
            tables = _pick(src, tables)
            sub = _subscription(dst, n)
            if _notes(src, n) is None or sub is None:
                raise ReplicationError(f"the online move of '{tenant}' is not running (no publication or subscription): "
                                       "run start first")
            if _switched(_state(src, tenant), _state(dst, tenant)):
                raise ReplicationError(f"the move of '{tenant}' has already switched: nothing to verify before a freeze")
            waiting = _unsynced(dst, sub)
            if waiting:
                raise ReplicationError(f"tables of '{tenant}' are not synchronised yet ({', '.join(waiting)}): run "
                                       "wait_synced first")
            _require_tracking_sql(src, "source")
            _require_tracking_sql(dst, "target")
            keyed = rv.keyed_tables(src, tables)
            return _preverify(src, dst, source_dsn, target_dsn, n, tenant, keyed, step, timeout)
        except psycopg.Error as exc:
            raise _as_error(exc, f"verifying the replicated copy of '{tenant}' failed; nothing is frozen, run it "
                                 "again") from None


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
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        tables = _pick(src, tables)
        before = _notes(src, n)
        sub = _subscription(dst, n)
        source_state, target_state = _state(src, tenant), _state(dst, tenant)
        if cutover and _switched(source_state, target_state):
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
            _close_login(source_dsn, src, n)
            return report
        if before is None and sub is None:
            raise ReplicationError(f"the online move of '{tenant}' has not started: run start first")
        if sub is None and source_state != "frozen":
            raise ReplicationError(f"the online move of '{tenant}' is half started (no subscription yet): run start "
                                   "again, or abort")
        report.resumed = source_state == "frozen"
        _require_tracking_sql(src, "source")
        _require_tracking_sql(dst, "target")
        keyed = rv.keyed_tables(src, tables)
        if not report.resumed:
            waiting = _unsynced(dst, sub)
            if waiting:
                raise ReplicationError(f"tables of '{tenant}' are not synchronised yet ({', '.join(waiting)}): "
                                       "run wait_synced first")
            t0 = time.perf_counter()
            report.preverify = _preverify(src, dst, source_dsn, target_dsn, n, tenant, keyed, step, catchup_timeout)
            report.prefreeze_verify_seconds = time.perf_counter() - t0
        # What the freeze re-checks rests on tracking that never stopped since a full pass.
        tracked = bool((_notes(src, n) or {}).get("verified")) and rv.tracking(src, n.base, keyed) \
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
                        raise _as_error(exc, f"switching '{tenant}' failed; it stays frozen, run it again or abort") from None
                    raise
                # The move stays in place; the source takes writes again while someone looks.
                src.execute("SELECT tenancy.freeze(%s, %s)", (tenant, (before or {}).get("source_state", "active")))
                if isinstance(exc, psycopg.Error):
                    raise _as_error(exc, f"switching '{tenant}' failed; its writes resume at the source") from None
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
        _wait_confirmed(src, n, lsn, timeout, tenant, "inside the freeze; run switch again")
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
        _reset_sequences(dst, t, tenant)
    if hold:
        t0 = time.perf_counter()
        _drop_subscription(src, dst, n)
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
        _note(src, n, switched=report.source_summary.to_json() if summarise else {"at": time.time()})
    if not (summarise or cutover):
        return     # tracking, login and subscription go with the caller's `cleanup`, after its switch
    rv.untrack(dst, n.base)
    rv.untrack(src, n.base)
    _close_login(source_dsn, src, n)
    if cutover:
        _drop_publication(src, n)


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


def _wait_confirmed(src: psycopg.Connection, n: MoveNames, lsn: str, timeout: float, tenant: str, after: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = src.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (lsn, n.slot)).fetchone()
        if row is None:
            raise ReplicationError(f"slot {n.slot} is gone: the move of '{tenant}' cannot catch up; abort it")
        if row[0]:
            return
        if time.monotonic() >= deadline:
            raise ReplicationError(f"the target did not confirm the source's changes of '{tenant}' up to {lsn} within "
                                   f"{timeout:g}s ({after})")
        time.sleep(0.005)


# --- teardown -------------------------------------------------------------------------------------------

def _drop_subscription(src: psycopg.Connection, dst: psycopg.Connection, n: MoveNames) -> list[str]:
    """Subscription, its slot and any table-sync slots; works whichever of them exist.

    DROP SUBSCRIPTION is never left to drop slots at the publisher: while a table is still syncing, it would
    connect to drop that table's sync slot, and within one cluster that deadlocks with a sync slot being
    created (slot creation waits for the DROP's own transaction). So the subscription is disabled, detached
    from its slot and pointed at no server (a failed connection is tolerated once slot_name is NONE), and the
    slots are dropped from the source side once the subscription's walsenders have gone."""
    dropped = []
    sub = _subscription(dst, n)
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


def _drop_publication(src: psycopg.Connection, n: MoveNames) -> None:
    """The publication and the move's notes, together."""
    with src.transaction():
        src.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(n.publication)))
        if _has_state_table(src):
            src.execute("DELETE FROM tenancy.replication_moves WHERE move = %s", (n.base,))


def _switched(source_state: str | None, target_state: str | None) -> bool:
    """During a move the target is frozen until the switch flips it, so an active target beside a source that
    does not take writes means the tenant already lives at the target."""
    return target_state == "active" and source_state in ("frozen", "readonly")


def cleanup(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> list[str]:
    """Drop the move's subscription, slots, tracking and publication, whichever exist, and close the role's login
    unless another move needs it. Data and registries stay."""
    n = names(move)
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        try:
            dropped = _drop_subscription(src, dst, n)
            dropped += rv.untrack(dst, n.base) + rv.untrack(src, n.base)
            dropped += _close_login(source_dsn, src, n)
            if _notes(src, n) is not None or _has_publication(src, n):
                _drop_publication(src, n)
                dropped.append(f"publication {n.publication}")
        except psycopg.Error as exc:
            raise _as_error(exc, f"dropping the replication objects of '{tenant}' failed") from None
    return dropped


def abort(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> list[str]:
    """Undo an unswitched move: replication objects dropped, the target's copy deleted, registries restored.

    Refuses once the target is active and the source read-only (the tenant lives at the target)."""
    n = names(move)
    done: list[str] = []
    with _connect(source_dsn) as src, _connect(target_dsn) as dst:
        try:
            before = _notes(src, n)
            if _switched(_state(src, tenant), _state(dst, tenant)):
                raise ReplicationError(f"the move of '{tenant}' has already switched (the target is active): it cannot be "
                                       "aborted; run switch again to finish it, or cleanup to drop what remains")
            if before is None and _subscription(dst, n) is None and _slot(src, n) is None:
                done += rv.untrack(dst, n.base) + rv.untrack(src, n.base) + _close_login(source_dsn, src, n)
                return done  # never started, or already aborted
            before = before or {"source_state": "active", "target_state": None}
            done += _drop_subscription(src, dst, n)
            done += rv.untrack(dst, n.base) + rv.untrack(src, n.base)
            done += _close_login(source_dsn, src, n)
            if _state(dst, tenant) is not None:
                with dst.transaction():
                    deleted = clear_tenant(dst, tenant, [t for t in isolated_tables(dst)])
                done.append(f"deleted {deleted} rows of '{tenant}' at the target")
                if before.get("target_state") is None:
                    dst.execute("DELETE FROM tenancy.tenants WHERE id = %s", (tenant,))
                else:
                    dst.execute("UPDATE tenancy.tenants SET state = %s, updated_at = now() WHERE id = %s",
                                (before["target_state"], tenant))
            if _state(src, tenant) != before["source_state"]:
                src.execute("SELECT tenancy.freeze(%s, %s)", (tenant, before["source_state"]))
                done.append(f"source state back to {before['source_state']}")
            if _notes(src, n) is not None or _has_publication(src, n):
                _drop_publication(src, n)
                done.append(f"publication {n.publication}")
        except psycopg.Error as exc:
            raise _as_error(exc, f"aborting the move of '{tenant}' failed (run abort again)") from None
    return done


def orphans(dsn: str, owned: Iterable[str] = ()) -> list[Orphan]:
    """Replication objects of tenancy moves that no move owns: pass the names (`names(move).base`) of moves in
    progress. A slot left behind holds WAL forever; a change-tracking trigger taxes every write of its table;
    a publication or subscription left behind is clutter; a replication role that can log in while no move's
    slot exists is a standing credential that decodes every change. Slots, subscriptions and roles are
    cluster-wide; publications and triggers are listed for `dsn`'s database."""
    keep = set(owned)
    found: list[Orphan] = []
    with _connect(dsn) as conn:
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
        if login and login[0] and not _live_slots(conn):
            found.append(Orphan("login", REPLICATION_USER, "",
                                "can log in while no move replicates from this server (it decodes every change): "
                                f"ALTER ROLE {REPLICATION_USER} NOLOGIN PASSWORD NULL"))
    return found
