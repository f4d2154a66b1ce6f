"""Verifying a tenant's replicated copy while it replicates, so that the write freeze re-checks only what changed.

An online move (tenancy/stores/replication/) verifies every row of the tenant, but only the last few
changes inside the freeze:

    track        row triggers named after the move, on both databases, record the key of every row of the
                 tenant that changes (`tenancy.move_changes`); ENABLE ALWAYS, so the subscription's apply
                 worker records what it applies at the target, and any other writer is recorded too
    full_pass    with tracking on: each table's key space cut into ranges of about BUCKET_ROWS rows at the
                 source; per range, count and ordered checksum at the source in one snapshot and at the target
                 in a snapshot taken once the target has confirmed the source's WAL up to the source's
                 snapshot. A range that differs is compared row by row in the same two snapshots; every row
                 that differs must have a recorded change (it is in flight, and compared again later),
                 otherwise the copy is wrong
    converge     while replication runs: the recorded keys compared row by row, each side in one snapshot
                 (coordinated the same way); the records of rows found equal are consumed, so only changes
                 made after those snapshots remain. Repeated until few remain
    final_check  inside the freeze, after the target confirmed the freeze's LSN: every remaining recorded key,
                 both sides. Its cost follows the write rate, not the tenant's size

Why every row is verified: a row is equal at the two snapshots of a pass (whole ranges in the full pass,
recorded keys in later ones), or it differs and keeps an unconsumed record. Any change after a side's
snapshot leaves a record there (the trigger commits with the change), and a record is consumed only when
its row compared equal in snapshots that already contained the change. So at the final check, every row
either still equals its last comparison on both sides or has a record and is compared again.

A table without a primary key has no row identity: it is compared whole, in the full pass and again in the
final check when any of its rows changed. TRUNCATE is not tracked (nor published): the move refuses it by
not publishing it, and the full pass would see it.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from psycopg import sql

from tenancy.stores import postgres as pg
from tenancy.stores.postgres import VerificationError

BUCKET_ROWS = 10_000        # rows per key range in the full pass (a differing range is compared row by row)
SETTLED_KEYS = 100          # converge stops once at most this many recorded keys remain
MAX_PASSES = 8
OPS = {"i": "INSERT", "u": "UPDATE", "d": "DELETE"}
WaitLsn = Callable[[str], None]


@dataclass(frozen=True)
class Keyed:
    """An isolated table with what comparing it by key needs."""

    table: pg.Table
    pk: tuple[str, ...]       # primary key columns in index order (tenant_id among them); empty: none
    types: dict[str, str]     # format_type of each primary key column

    @property
    def name(self) -> str:
        return self.table.qualified

    @property
    def key(self) -> tuple[str, ...]:
        """What a recorded change names: the primary key without tenant_id (all columns without a key)."""
        return tuple(c for c in self.pk if c != "tenant_id") if self.pk else tuple(sorted(self.table.columns))


@dataclass
class FullPass:
    seconds: float = 0.0
    buckets: int = 0
    differing_buckets: int = 0
    in_flight_rows: int = 0       # rows that differed and carry a recorded change (compared again later)


@dataclass
class Pass:
    seconds: float
    keys: int                     # recorded keys compared
    equal: int                    # ... found equal (their records consumed)


@dataclass
class Tally:
    keys: int = 0
    whole_tables: list[str] = field(default_factory=list)


def keyed_tables(conn: psycopg.Connection, names: list[str]) -> list[Keyed]:
    """The named isolated tables (an autocommit connection, or the caller ends the transaction)."""
    by_name = {t.qualified: t for t in pg.all_tables(conn)}
    out = []
    for name in names:
        t = by_name[name]
        types = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s AND attname = ANY(%s)",
            (t.oid, list(t.key))).fetchall()) if t.key else {}
        out.append(Keyed(t, t.key, types))
    return out


# --- triggers -------------------------------------------------------------------------------------------

def trigger_name(base: str, op: str) -> str:
    return f"{base}_{op}"


def _trigger_sql(k: Keyed, base: str, tenant: str, op: str) -> sql.Composable:
    lit = sql.Literal(tenant)
    when = {"i": sql.SQL("NEW.tenant_id = {}").format(lit), "d": sql.SQL("OLD.tenant_id = {}").format(lit),
            "u": sql.SQL("OLD.tenant_id = {t} OR NEW.tenant_id = {t}").format(t=lit)}[op]
    args = sql.SQL(", ").join(sql.Literal(a) for a in (base, *k.key))
    return sql.SQL("CREATE TRIGGER {n} AFTER {op} ON {t} FOR EACH ROW WHEN ({when}) "
                   "EXECUTE FUNCTION tenancy.track_move_change({args}); ALTER TABLE {t} ENABLE ALWAYS TRIGGER {n}").format(
        n=sql.Identifier(trigger_name(base, op)), op=sql.SQL(OPS[op]), t=k.table.ident, when=when, args=args)


def _present(conn: psycopg.Connection, base: str) -> dict[tuple[str, str], str]:
    """{(table, trigger): enabled flag} of the move's triggers in this database."""
    return {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), t.tgname, t.tgenabled FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgname = ANY(%s)", ([trigger_name(base, op) for op in OPS],)).fetchall()}


def tracking(conn: psycopg.Connection, base: str, keyed: list[Keyed]) -> bool:
    """Every table carries the move's three triggers, enabled always."""
    present = _present(conn, base)
    return all(present.get((k.name, trigger_name(base, op))) == "A" for k in keyed for op in OPS)


def track(conn: psycopg.Connection, base: str, tenant: str, keyed: list[Keyed], lock_timeout: str = "2s",
          attempts: int = 5) -> bool:
    """Create the move's missing triggers (autocommit connection); True when any had to be created.

    One short transaction: CREATE TRIGGER waits for the table's running writers (every tenant's) and holds
    new ones back until it commits, so it gives up after `lock_timeout` and tries again."""
    for attempt in range(attempts):
        present = _present(conn, base)
        missing = [(k, op) for k in keyed for op in OPS if present.get((k.name, trigger_name(base, op))) != "A"]
        if not missing:
            return False
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
                for k, op in missing:
                    conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {n} ON {t}").format(
                        n=sql.Identifier(trigger_name(base, op)), t=k.table.ident))
                    conn.execute(_trigger_sql(k, base, tenant, op))
                # records from before these triggers cover an unknown part of the changes: start afresh
                conn.execute("DELETE FROM tenancy.move_changes WHERE move = %s", (base,))
            return True
        except psycopg.errors.LockNotAvailable:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return True


def untrack(conn: psycopg.Connection, base: str, lock_timeout: str = "2s") -> list[str]:
    """Drop the move's triggers from every table and its records (autocommit connection)."""
    dropped = []
    for table, name in sorted(_present(conn, base)):
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), sql.SQL(table)))
        dropped.append(f"trigger {name} on {table}")
    if conn.execute("SELECT to_regclass('tenancy.move_changes') IS NOT NULL").fetchone()[0]:
        conn.execute("DELETE FROM tenancy.move_changes WHERE move = %s", (base,))
    return dropped


def triggers(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(trigger, table) of every move-tracking trigger in this database (for orphan reports)."""
    return [tuple(r) for r in conn.execute(
        "SELECT t.tgname, format('%I.%I', n.nspname, c.relname) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE p.proname = 'track_move_change' AND pn.nspname = 'tenancy' "
        "ORDER BY 1, 2").fetchall()]


# --- reading one side -----------------------------------------------------------------------------------

def _snapshot(dsn: str | psycopg.Connection, tenant: str) -> psycopg.Connection:
    """A connection (new, or an idle one given) inside a REPEATABLE READ transaction whose snapshot is taken now."""
    conn = pg.connect(dsn, tenant) if isinstance(dsn, str) else dsn
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    pg.as_tenant(conn, tenant)   # also takes the snapshot (first statement), and pins the output settings
    return conn


def _lsn_now(conn: psycopg.Connection) -> str:
    """An LSN at or past the commit of every transaction the connection's snapshot sees."""
    return str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])


def _row(k: Keyed) -> sql.Composable:
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(sql.Identifier(c) for c in sorted(k.table.columns)))


def _order(k: Keyed) -> sql.Composable:
    if not k.pk:
        return sql.SQL('ROW({})::text COLLATE "C"').format(sql.SQL(", ").join(sql.Identifier(c) for c in sorted(k.table.columns)))
    return sql.SQL(", ").join(sql.Identifier(c) for c in k.pk)


def _bound(k: Keyed, op: str) -> sql.Composable:
    """ROW(primary key) <op> ROW(the tenant, %s::type, ...): a range condition the primary key index serves."""
    side = "lo" if op == ">=" else "hi"
    vals = [sql.SQL("%(tenant)s") if c == "tenant_id" else sql.SQL("{}::{}").format(
        sql.Placeholder(f"{side}{i}"), sql.SQL(k.types[c])) for i, c in enumerate(k.pk)]
    return sql.SQL("ROW({cols}) {op} ROW({vals})").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in k.pk), op=sql.SQL(op), vals=sql.SQL(", ").join(vals))


def _key_json(k: Keyed) -> sql.Composable:
    return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in k.key))


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _params(k: Keyed, tenant: str, lo: list | None, hi: list | None) -> dict:
    out: dict = {"tenant": tenant}
    for side, bound in (("lo", lo), ("hi", hi)):
        if bound is not None:
            vals = iter(bound)
            for i, c in enumerate(k.pk):
                if c != "tenant_id":
                    out[f"{side}{i}"] = _text(next(vals))
    return out


def _range_where(k: Keyed, lo: list | None, hi: list | None) -> sql.Composable:
    parts = [sql.SQL("tenant_id = %(tenant)s")]
    if lo is not None:
        parts.append(_bound(k, ">="))
    if hi is not None:
        parts.append(_bound(k, "<"))
    return sql.SQL(" AND ").join(parts)


def _splits(conn: psycopg.Connection, k: Keyed, tenant: str, rows: int) -> list[list]:
    """Keys (JSON arrays, tenant_id left out) cutting the tenant's rows into ranges of about `rows` rows."""
    if not k.pk:
        return []
    q = sql.SQL("SELECT {kj} FROM (SELECT {cols}, row_number() OVER (ORDER BY {order}) AS tenancy_rn FROM {t} "
                "WHERE tenant_id = %(tenant)s) s WHERE tenancy_rn %% %(rows)s = 1 AND tenancy_rn > 1 ORDER BY tenancy_rn").format(
        kj=_key_json(k), cols=sql.SQL(", ").join(sql.Identifier(c) for c in k.pk), order=_order(k), t=k.table.ident)
    return [json.loads(r[0]) for r in conn.execute(q, {"tenant": tenant, "rows": rows}).fetchall()]


def _ranges(splits: list[list]) -> list[tuple[list | None, list | None]]:
    """Ranges covering the whole key space: below the first split, between splits, from the last one on."""
    edges: list = [None, *splits, None]
    return list(zip(edges[:-1], edges[1:]))


def _range_sums(conn: psycopg.Connection, k: Keyed, tenant: str, ranges, only: list[int] | None = None) -> dict[int, tuple]:
    out = {}
    for i, (lo, hi) in enumerate(ranges):
        if only is not None and i not in only:
            continue
        q = sql.SQL("SELECT count(*), coalesce(md5(string_agg({row}, '' ORDER BY {order})), '') FROM {t} WHERE {w}").format(
            row=_row(k), order=_order(k), t=k.table.ident, w=_range_where(k, lo, hi))
        out[i] = tuple(conn.execute(q, _params(k, tenant, lo, hi)).fetchone())
    return out


def _range_rows(conn: psycopg.Connection, k: Keyed, tenant: str, lo, hi) -> dict[str, str]:
    q = sql.SQL("SELECT {kj}, {row} FROM {t} WHERE {w}").format(kj=_key_json(k), row=_row(k), t=k.table.ident,
                                                                w=_range_where(k, lo, hi))
    return dict(conn.execute(q, _params(k, tenant, lo, hi)).fetchall())


def _rows(conn: psycopg.Connection, k: Keyed, tenant: str, keys: list[str]) -> dict[str, str]:
    """{key: row md5} of the rows with these keys (JSON arrays as text); absent rows are left out."""
    if not keys:
        return {}
    match = sql.SQL(" AND ").join(
        sql.SQL("{c} = (k.key ->> {i})::{ty}").format(c=sql.Identifier(c), i=sql.Literal(i), ty=sql.SQL(k.types[c]))
        for i, c in enumerate(k.key))
    q = sql.SQL("SELECT k.key::text, r.h FROM jsonb_array_elements(%(keys)s::jsonb) k(key) CROSS JOIN LATERAL "
                "(SELECT {row} AS h FROM {t} WHERE tenant_id = %(tenant)s AND {match}) r").format(
        row=_row(k), t=k.table.ident, match=match)
    return dict(conn.execute(q, {"keys": "[" + ",".join(keys) + "]", "tenant": tenant}).fetchall())


def _whole(conn: psycopg.Connection, k: Keyed, tenant: str) -> tuple:
    return _range_sums(conn, k, tenant, [(None, None)])[0]


def _records(conn: psycopg.Connection, base: str) -> list[tuple[int, str, str]]:
    """(id, table, key) of the move's recorded changes visible to the connection's snapshot."""
    return [(int(r[0]), r[1], r[2]) for r in conn.execute(
        "SELECT id, table_name, key::text FROM tenancy.move_changes WHERE move = %s", (base,)).fetchall()]


def _recorded_keys(dsn: str, base: str) -> dict[str, set[str]]:
    with pg.connect(dsn) as conn:
        out: dict[str, set[str]] = {}
        for _, table, key in _records(conn, base):
            out.setdefault(table, set()).add(key)
        conn.rollback()
    return out


# --- the passes -----------------------------------------------------------------------------------------

def _close(*conns: psycopg.Connection) -> None:
    for c in conns:
        try:
            c.rollback()
        finally:
            c.close()


def full_pass(source_dsn: str, target_dsn: str, tenant: str, keyed: list[Keyed], base: str, wait_lsn: WaitLsn,
              bucket_rows: int = BUCKET_ROWS, strict: bool = False) -> FullPass:
    """Every row of the tenant compared by key range; raises VerificationError on a difference no recorded
    change explains (`strict`, inside the freeze: on any difference). Tracking must be on at both sides
    before it starts, unless `strict`."""
    report = FullPass()
    t0 = time.perf_counter()
    src = _snapshot(source_dsn, tenant)
    dst = None
    try:
        lsn = _lsn_now(src)
        ranges = {k.name: _ranges(_splits(src, k, tenant, bucket_rows)) for k in keyed}
        report.buckets = sum(len(r) for r in ranges.values())
        with ThreadPoolExecutor(max_workers=1) as pool:
            src_sums = pool.submit(lambda: {k.name: _range_sums(src, k, tenant, ranges[k.name]) for k in keyed})
            wait_lsn(lsn)
            dst = _snapshot(target_dsn, tenant)
            dst_sums = {k.name: _range_sums(dst, k, tenant, ranges[k.name]) for k in keyed}
            s_sums = src_sums.result()
        differing: dict[str, set[str]] = {}
        whole: list[str] = []
        for k in keyed:
            bad = [i for i in s_sums[k.name] if s_sums[k.name][i] != dst_sums[k.name][i]]
            report.differing_buckets += len(bad)
            if bad and not k.pk:
                whole.append(k.name)
            for i in bad if k.pk else []:
                lo, hi = ranges[k.name][i]
                a, b = _range_rows(src, k, tenant, lo, hi), _range_rows(dst, k, tenant, lo, hi)
                differing.setdefault(k.name, set()).update(x for x in set(a) | set(b) if a.get(x) != b.get(x))
    finally:
        _close(src, *([dst] if dst is not None else []))
    if differing or whole:
        recorded = {} if strict else _merge(_recorded_keys(source_dsn, base), _recorded_keys(target_dsn, base))
        unexplained = {t: sorted(keys - recorded.get(t, set())) for t, keys in differing.items()}
        unexplained = {t: v for t, v in unexplained.items() if v}
        untouched = [t for t in whole if not recorded.get(t)]
        if unexplained or untouched:
            raise VerificationError(
                f"the replicated copy of '{tenant}' differs from the source in rows that did not change since tracking "
                "began: " + "; ".join([f"{t}: keys {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" for t, v in unexplained.items()]
                                      + [f"{t}: contents (no primary key)" for t in untouched]))
        report.in_flight_rows = sum(len(v) for v in differing.values())
    report.seconds = time.perf_counter() - t0
    return report


def _merge(a: dict[str, set[str]], b: dict[str, set[str]]) -> dict[str, set[str]]:
    return {t: a.get(t, set()) | b.get(t, set()) for t in set(a) | set(b)}


def _compare(src: psycopg.Connection, dst: psycopg.Connection, tenant: str, keyed: list[Keyed],
             keys: dict[str, set[str]]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(equal, differing) keys per table, each side read in its connection's snapshot. A table without a
    primary key is compared whole: all its keys count as equal or as differing together."""
    equal: dict[str, set[str]] = {}
    differing: dict[str, set[str]] = {}
    for k in keyed:
        wanted = keys.get(k.name)
        if not wanted:
            continue
        if k.pk:
            ordered = sorted(wanted)
            a, b = _rows(src, k, tenant, ordered), _rows(dst, k, tenant, ordered)
            equal[k.name] = {x for x in ordered if a.get(x) == b.get(x)}
            differing[k.name] = set(ordered) - equal[k.name]
        elif _whole(src, k, tenant) == _whole(dst, k, tenant):
            equal[k.name] = set(wanted)
        else:
            differing[k.name] = set(wanted)
    return equal, {t: v for t, v in differing.items() if v}


def _consume(dsn: str, records: list[tuple[int, str, str]], equal: dict[str, set[str]]) -> None:
    ids = [i for i, table, key in records if key in equal.get(table, ())]
    if ids:
        with pg.connect(dsn) as conn:
            conn.execute("DELETE FROM tenancy.move_changes WHERE id = ANY(%s)", (ids,))
            conn.commit()


def converge(source_dsn: str, target_dsn: str, tenant: str, keyed: list[Keyed], base: str, wait_lsn: WaitLsn, *,
             settled: int = SETTLED_KEYS, max_passes: int = MAX_PASSES,
             checkpoint: Callable[[str], None] | None = None) -> list[Pass]:
    """Compare the recorded keys while replication runs, consuming the records of rows found equal, until at
    most `settled` keys remain (or `max_passes` passes ran)."""
    passes: list[Pass] = []
    for _ in range(max_passes):
        t0 = time.perf_counter()
        src = _snapshot(source_dsn, tenant)
        dst = None
        try:
            lsn = _lsn_now(src)
            s_rec = _records(src, base)
            wait_lsn(lsn)
            dst = _snapshot(target_dsn, tenant)
            d_rec = _records(dst, base)
            keys: dict[str, set[str]] = {}
            for _, table, key in s_rec + d_rec:
                keys.setdefault(table, set()).add(key)
            equal, _differing = _compare(src, dst, tenant, keyed, keys)
        finally:
            _close(src, *([dst] if dst is not None else []))
        _consume(source_dsn, s_rec, equal)
        if checkpoint:
            checkpoint("consumed at the source")
        _consume(target_dsn, d_rec, equal)
        n = sum(len(v) for v in keys.values())
        passes.append(Pass(time.perf_counter() - t0, n, sum(len(v) for v in equal.values())))
        if n <= settled or (len(passes) > 1 and n >= passes[-2].keys):
            break   # few changes per pass, or no longer fewer: the writers' rate, not the backlog
    return passes


def final_check(source: str | psycopg.Connection, target: str | psycopg.Connection, tenant: str, keyed: list[Keyed],
                base: str) -> Tally:
    """Inside the freeze, once the target confirmed the freeze's LSN: every recorded key, both sides (DSNs, or
    idle connections opened before the freeze, which this closes)."""
    src, dst = _snapshot(source, tenant), _snapshot(target, tenant)
    try:
        keys: dict[str, set[str]] = {}
        for _, table, key in _records(src, base) + _records(dst, base):
            keys.setdefault(table, set()).add(key)
        _equal, differing = _compare(src, dst, tenant, keyed, keys)
    finally:
        _close(src, dst)
    if differing:
        raise VerificationError(f"the target's copy of '{tenant}' differs from the frozen source: " + "; ".join(
            f"{t}: {len(v)} rows (keys {', '.join(sorted(v)[:5])})" for t, v in sorted(differing.items())))
    return Tally(sum(len(v) for v in keys.values()), sorted(k.name for k in keyed if not k.pk and keys.get(k.name)))


def recorded(dsn: str, base: str) -> int:
    """How many changes are recorded for the move in this database (not yet consumed)."""
    with pg.connect(dsn) as conn:
        n = conn.execute("SELECT count(*) FROM tenancy.move_changes WHERE move = %s", (base,)).fetchone()[0]
        conn.rollback()
        return int(n)
