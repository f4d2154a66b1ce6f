"""Benchmark: an online tenant move (logical replication) against the copy-under-freeze move.

A throwaway local PostgreSQL holds a pooled database where the moved tenant has ROWS rows across the sample
schema and two neighbour tenants have ROWS/2 each. While a writer inserts and updates the moving tenant at
about --rate rows/s through the runtime role (routed to whichever database the registry says is active),
the tenant moves into a fresh database twice:

  online   replication.start -> wait_synced -> preverify (every row compared while the tenant writes) ->
           switch (freeze: catch-up, the rows changed since the last comparison, cutover)
  copy     freeze the source, tenancy.stores.postgres.move (COPY + ordered verification), cut over

Per method: total move time, the freeze window the writer saw (first refused write to first write accepted at
the target), refused writes, lost writes (committed writes whose row is missing or stale at the target once
the writer stopped: must be 0), and for the online move where the time went.

    .venv/bin/python bench/online_move_bench.py [--rows 100000,1000000] [--rate 200]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_bench import populate  # noqa: E402
from tenancy import db  # noqa: E402
from tenancy.stores import postgres as data  # noqa: E402
from tenancy.stores import replication as rep  # noqa: E402
from tests import pg  # noqa: E402

TENANT = "moving"


class Writer(threading.Thread):
    """Alternates inserts and updates of the tenant's users (`seeded` ones, in turn) at `rate` per second."""

    def __init__(self, server, databases: list[str], current: str, rate: float, seeded: list[uuid.UUID]):
        super().__init__(daemon=True)
        self.server, self.databases, self.current, self.rate, self.seeded = server, databases, current, rate, seeded
        self.refused: list[float] = []
        self.accepted: list[tuple[float, str]] = []
        self.committed: dict[uuid.UUID, str] = {}   # user id -> display name last committed
        self.errors: list[str] = []
        self.stop = threading.Event()

    def _route(self, admin) -> None:
        for d in self.databases:
            if d != self.current and admin[d].execute("SELECT state FROM tenancy.tenants WHERE id = %s",
                                                      (TENANT,)).fetchone() == ("active",):
                self.current = d

    def run(self) -> None:
        conns = {d: psycopg.connect(self.server.dsn(user="tenancy_app", dbname=d)) for d in self.databases}
        admin = {d: psycopg.connect(self.server.dsn(dbname=d), autocommit=True) for d in self.databases}
        period, i = 1.0 / self.rate, 0
        try:
            while not self.stop.is_set():
                began = time.perf_counter()
                conn = conns[self.current]
                try:
                    with conn.transaction():
                        conn.execute("SELECT tenancy.set_tenant(%s)", (TENANT,))
                        if i % 2:
                            uid, name = self.seeded[i // 2 % len(self.seeded)], f"renamed {i}"
                            conn.execute("UPDATE app.users SET display_name = %s WHERE tenant_id = %s AND id = %s",
                                         (name, TENANT, uid))
                        else:
                            name = "writer"
                            uid = conn.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) "
                                               "RETURNING id", (TENANT, f"w{uuid.uuid4().hex}@x.example", name)).fetchone()[0]
                    self.committed[uid] = name
                    self.accepted.append((time.time(), self.current))
                    i += 1
                except psycopg.errors.ReadOnlySqlTransaction:
                    self.refused.append(time.time())
                    self._route(admin)
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                    return
                time.sleep(max(0.0, period - (time.perf_counter() - began)))
        finally:
            for c in [*conns.values(), *admin.values()]:
                c.close()

    def window(self, target: str, since: float) -> tuple[float, int]:
        """(first refused write -> first write accepted at the target, refused writes) after `since`."""
        refused = [t for t in self.refused if t >= since]
        first_ok = min((t for t, d in self.accepted if d == target and t >= since), default=None)
        if not refused or first_ok is None:
            return 0.0, len(refused)
        return first_ok - refused[0], len(refused)

    def lost(self, server, target: str) -> int:
        """Committed writes not at the target as last committed (call once the writer stopped)."""
        with psycopg.connect(server.dsn(dbname=target)) as c:
            there = dict(c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s AND id = ANY(%s)",
                                   (TENANT, list(self.committed))).fetchall())
        return sum(1 for uid, name in self.committed.items() if there.get(uid) != name)


def fresh_db(server, name: str) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db.apply(server.dsn(dbname=name))
    return name


def reactivate(server, pooled: str) -> None:
    with psycopg.connect(server.dsn(dbname=pooled), autocommit=True) as c:
        c.execute("UPDATE tenancy.tenants SET state = 'active' WHERE id = %s", (TENANT,))


def online(server, pooled: str, target: str, writer: Writer) -> dict:
    source, dst = server.dsn(dbname=pooled), server.dsn(dbname=target)
    began = time.time()
    move = f"op-{target}"     # the operation id a tier move would give
    rep.start(source, dst, TENANT, None, server.dsn(user="tenancy_replication", dbname=pooled), move=move)
    rep.wait_synced(source, dst, TENANT, move=move, timeout=1800)
    synced = time.time() - began
    pre = rep.preverify(source, dst, TENANT, move=move, timeout=600)
    report = rep.switch(source, dst, TENANT, move=move)
    total = time.time() - began
    time.sleep(1.0)  # let the writer land at the target
    window, refused = writer.window(target, began)
    return {"total": total, "window": window, "refused": refused, "synced": synced, "pre": pre, "report": report}


def copy(server, pooled: str, target: str, writer: Writer) -> dict:
    source = server.dsn(user="tenancy_owner", dbname=pooled)
    began = time.time()
    with psycopg.connect(server.dsn(dbname=pooled), autocommit=True) as c:
        c.execute("SET lock_timeout = '5s'")
        c.execute("SELECT tenancy.freeze(%s)", (TENANT,))
    data.copy_verified(source, server.dsn(dbname=target), TENANT, target_state="frozen")
    with psycopg.connect(server.dsn(dbname=target), autocommit=True) as c:
        c.execute("UPDATE tenancy.tenants SET state = 'active' WHERE id = %s", (TENANT,))
    with psycopg.connect(server.dsn(dbname=pooled), autocommit=True) as c:
        c.execute("SELECT tenancy.freeze(%s, 'readonly')", (TENANT,))
    total = time.time() - began
    time.sleep(1.0)
    window, refused = writer.window(target, began)
    return {"total": total, "window": window, "refused": refused}


def run(server, rows: int, rate: float) -> list[str]:
    pooled = fresh_db(server, f"pooled_{rows}")
    print(f"populating: {rows:,} rows for the moved tenant, {rows // 2:,} for each of two neighbours ...", flush=True)
    populate(server.dsn(dbname=pooled), "neighbour-a", rows // 2)
    populate(server.dsn(dbname=pooled), TENANT, rows)
    populate(server.dsn(dbname=pooled), "neighbour-b", rows // 2)
    with psycopg.connect(server.dsn(dbname=pooled)) as c:   # the users the writer renames
        seeded = [r[0] for r in c.execute("SELECT id FROM app.users WHERE tenant_id = %s LIMIT 1000", (TENANT,))]
    lines = []
    for method, fn in (("online (logical replication)", online), ("copy under freeze", copy)):
        target = fresh_db(server, f"own_{rows}_{method.split()[0]}")
        reactivate(server, pooled)
        writer = Writer(server, [pooled, target], pooled, rate, seeded)
        writer.start()
        time.sleep(1.0)
        print(f"  {method} ...", flush=True)
        out = fn(server, pooled, target, writer)
        writer.stop.set()
        writer.join(10)
        if writer.errors:
            raise SystemExit(f"writer failed: {writer.errors}")
        lost = writer.lost(server, target)
        lines.append(f"| {rows:,} | {method} | {out['window']:.2f} | {out['total']:.1f} | {out['refused']} | "
                     f"{len(writer.committed):,} | {lost} |")
        if "report" in out:
            r, p = out["report"], out["pre"]
            fp = p.full_pass
            print(f"    synced after {out['synced']:.1f} s; before the freeze: full pass {fp.seconds:.1f} s over "
                  f"{fp.buckets} key ranges ({fp.differing_buckets} differed in flight, {fp.in_flight_rows} rows "
                  f"recorded as changed), {len(p.passes)} passes over changed rows "
                  f"({', '.join(str(x.keys) for x in p.passes)} keys), switch's own pre-freeze pass "
                  f"{r.prefreeze_verify_seconds:.2f} s", flush=True)
            print(f"    inside the freeze: catch-up {r.catchup_seconds:.3f} s, verification {r.verify_seconds:.3f} s "
                  f"({r.keys_rechecked} changed rows compared), drop {r.drop_seconds:.3f} s, freeze to target active "
                  f"{r.freeze_seconds:.2f} s; source summary after the freeze {r.summary_seconds:.1f} s", flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated tenant sizes")
    ap.add_argument("--rate", type=float, default=200.0, help="writer operations per second")
    a = ap.parse_args()
    try:
        sizes = [int(x) for x in a.rows.split(",")]
    except ValueError:
        raise SystemExit(f"--rows: expected comma-separated integers, got {a.rows!r}") from None
    server = pg.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            db.apply(server.dsn())  # creates the roles
            c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN; ALTER ROLE tenancy_replication LOGIN")
        table = []
        for rows in sizes:
            table += run(server, rows, a.rate)
        print()
        print(f"| tenant rows | method | write freeze seen by the writer s | total move s | refused writes "
              f"(at ~{a.rate:g}/s) | committed writes | lost writes |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        print("\n".join(table))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
