"""Benchmark of moving one tenant between PostgreSQL databases.

A throwaway local PostgreSQL holds a pooled database where the moved tenant has ROWS rows across the sample
schema (users, itineraries, comments, likes) and two other tenants share the source. Side by side in one
run, each into a fresh target database carrying the tenancy SQL:

  tenancy   `tenancy data move` (COPY streams, foreign-key order, verification included)
  pg_dump   `pg_dump --data-only` of the same tables from a database holding only the tenant's rows (as many),
            piped into `psql`: pg_dump cannot select one tenant's rows of a shared database (a role under
            row-level security dumps none -- the per-transaction tenant binding ignores a session setting --
            and a superuser dumps every tenant's)
  raw       a bare `COPY (SELECT ... WHERE tenant_id = ...) TO STDOUT | COPY ... FROM STDIN` pipe per table (no
            verification)

Each baseline reports the rows it moved (counted at its target) and must equal the command's; the run fails
otherwise. Then the write-freeze window (freeze to switch) of a full `tenancy upgrade --method copy` through the
offline engine (bench/upgrade_bench.py measures the online path). Targets: tenancy at least as fast as pg_dump, and within 1.5x of raw, verification included.

    .venv/bin/python bench/data_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenancy import db  # noqa: E402
from tenancy.lifecycle import deploy  # noqa: E402
from tenancy.lifecycle.tenant_data import Reach  # noqa: E402
from tenancy.operations import tier_move  # noqa: E402
from tenancy.operations.protocol import Context  # noqa: E402
from tenancy.operations.registry import Registry  # noqa: E402
from tenancy.stores import postgres as data  # noqa: E402
from tenancy.catalog import parse_catalog  # noqa: E402
from tenancy.engine import OfflineEngine  # noqa: E402
from tests import pg  # noqa: E402

TABLES = ["app.users", "app.itineraries", "app.comments", "app.likes"]


def populate(dsn: str, tenant: str, rows: int) -> None:
    """rows/4 users, itineraries, comments and likes of the tenant, keyed by random UUIDs as the application's are."""
    per = rows // 4
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO tenancy.tenants (id, plan, model) VALUES (%s, 'free', 'pooled') ON CONFLICT DO NOTHING", (tenant,))
        # the n-th user, itinerary and comment's keys, so that set-based inserts can reference one another
        c.execute("CREATE TEMP TABLE bench_keys AS SELECT g, gen_random_uuid() AS u, gen_random_uuid() AS i, "
                  "gen_random_uuid() AS c FROM generate_series(1, %s) g", (per,))
        c.execute("CREATE UNIQUE INDEX ON bench_keys (g)")
        c.execute("INSERT INTO app.users (tenant_id, id, email, display_name) SELECT %s, u, 'user' || g || '@example.com', "
                  "'User number ' || g FROM bench_keys", (tenant,))
        c.execute("INSERT INTO app.itineraries (tenant_id, id, owner_id, title, body) SELECT %s, i, u, 'Trip ' || g, "
                  "repeat('lorem ipsum ', 4) FROM bench_keys", (tenant,))
        c.execute("INSERT INTO app.comments (tenant_id, id, itinerary_id, author_id, body) SELECT %s, k.c, k.i, a.u, "
                  "'comment ' || k.g FROM bench_keys k JOIN bench_keys a ON a.g = (k.g %% %s) + 1", (tenant, per))
        c.execute("INSERT INTO app.likes (tenant_id, itinerary_id, user_id) SELECT %s, k.i, a.u FROM bench_keys k "
                  "JOIN bench_keys a ON a.g = (k.g * 7 %% %s) + 1", (tenant, per))
        c.execute("DROP TABLE bench_keys")
        c.execute("ANALYZE")


def new_target(server, name: str, tenant: str = "moving") -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db.apply(server.dsn(dbname=name))
    with psycopg.connect(server.dsn(dbname=name), autocommit=True) as c:
        # the raw pipes write as the superuser, but the write guard still wants the tenant registered
        c.execute("INSERT INTO tenancy.tenants (id, plan, model) VALUES (%s, 'standard', 'namespace')", (tenant,))
    return name


def tenant_rows(server, dbname: str, tenant: str) -> int:
    """The tenant's rows in the benchmark's tables of `dbname`, counted there."""
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return sum(c.execute(f"SELECT count(*) FROM {t} WHERE tenant_id = %s", (tenant,)).fetchone()[0] for t in TABLES)


def run_pg_dump(server, src: str, dst: str, tenant: str) -> float:
    """`src` holds only `tenant`'s rows: pg_dump dumps whole tables."""
    env = dict(os.environ)
    dump = [str(server.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", src,
            "--data-only", *sum((["-t", t] for t in TABLES), [])]
    load = [str(server.bindir / "psql"), "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", dst,
            "-v", "ON_ERROR_STOP=1"]
    start = time.perf_counter()
    p1 = subprocess.Popen(dump, stdout=subprocess.PIPE, env=env)
    p2 = subprocess.run(load, stdin=p1.stdout, capture_output=True, text=True)
    p1.wait()
    if p1.returncode or p2.returncode:
        raise SystemExit(f"pg_dump | psql failed: {p2.stderr[-500:]}")
    return time.perf_counter() - start


def run_raw(server, src: str, dst: str, tenant: str) -> float:
    psql = [str(server.bindir / "psql"), "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres"]
    start = time.perf_counter()
    for t in TABLES:
        out = subprocess.Popen([*psql, "-d", src, "-c", f"COPY (SELECT * FROM {t} WHERE tenant_id = '{tenant}') TO STDOUT"],
                               stdout=subprocess.PIPE)
        res = subprocess.run([*psql, "-d", dst, "-c", f"COPY {t} FROM STDIN"], stdin=out.stdout, capture_output=True, text=True)
        out.wait()
        if res.returncode:
            raise SystemExit(f"raw COPY failed: {res.stderr}")
    return time.perf_counter() - start


def freeze_window(server, rows: int, tmp: Path) -> tuple[float, float]:
    """A full `tenancy upgrade --method copy` (offline engine) of a tenant of `rows` rows: (total seconds, freeze
    seconds). The copy method holds the freeze for the whole copy; bench/upgrade_bench.py measures the online
    path (the default where the databases allow it) with an application writing."""
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        for name in ("fz_pooled", "fz_tenant_1", "fz_tenant_2", "fz_tenant_3", "fz_registry"):
            c.execute(f'CREATE DATABASE "{name}"')
    db.apply(server.dsn(dbname="fz_pooled"))
    populate(server.dsn(dbname="fz_pooled"), "movingco", rows)
    catalog = parse_catalog("version: 1\ntenants:\n  - {id: movingco, name: M, plan: free, admin_email: a@m.example}\n")
    engine = OfflineEngine(tmp / "state", "dev")
    deploy.deploy(engine, catalog, "dev", mode="up")
    ctx = Context("dev", Registry.init(server.dsn(dbname="fz_registry"), "dev"), engine)
    # rows only (the sample tables land in the tenant's postgres-1, audit events and API requests in -2 and -3)
    reach = Reach({"pooled": server.dsn(user="tenancy_owner", dbname="fz_pooled"),
                   **{f"postgres-{i}": server.dsn(dbname=f"fz_tenant_{i}") for i in (1, 2, 3)}},
                  skip=frozenset({"objects", "firestore", "graph"}))
    start = time.perf_counter()
    out = tier_move.upgrade(ctx, catalog, "movingco", "standard", reach=reach, method="copy")
    return time.perf_counter() - start, out.detail.get("freeze_seconds") or 0.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    a = ap.parse_args(argv)
    server = pg.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute('CREATE DATABASE "pooled"')
        db.apply(server.dsn(dbname="pooled"))
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute("ALTER ROLE tenancy_owner LOGIN")
        print(f"populating: {a.rows:,} rows for the moved tenant, {a.rows // 2:,} for each of two others ...", flush=True)
        populate(server.dsn(dbname="pooled"), "neighbour-a", a.rows // 2)
        populate(server.dsn(dbname="pooled"), "moving", a.rows)
        populate(server.dsn(dbname="pooled"), "neighbour-b", a.rows // 2)
        src_owner = server.dsn(user="tenancy_owner", dbname="pooled")

        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute('CREATE DATABASE "solo"')
        db.apply(server.dsn(dbname="solo"))
        populate(server.dsn(dbname="solo"), "moving", a.rows)

        results, moved_rows = {}, {}
        t_raw = run_raw(server, "pooled", new_target(server, "t_raw"), "moving")
        results["raw COPY pipe (no verification)"] = t_raw
        moved_rows["raw COPY pipe (no verification)"] = tenant_rows(server, "t_raw", "moving")
        name = "pg_dump --data-only | psql (a database of the tenant's rows only)"
        results[name] = run_pg_dump(server, "solo", new_target(server, "t_dump"), "moving")
        moved_rows[name] = tenant_rows(server, "t_dump", "moving")
        new_target(server, "t_move")
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute('CREATE DATABASE "registry"')
        from tenancy.operations import data_move
        registry = Registry.init(server.dsn(dbname="registry"), "dev")
        start = time.perf_counter()
        moved = data_move.move(Context("dev", registry), "moving", src_owner,
                               server.dsn(user="tenancy_owner", dbname="t_move"))
        t_move = time.perf_counter() - start
        assert moved.status == "done", moved.message
        results["tenancy data move (verification included)"] = t_move
        moved_rows["tenancy data move (verification included)"] = moved.detail["total_rows"]
        differ = {k: v for k, v in moved_rows.items() if v != moved.detail["total_rows"]}
        if differ:
            raise SystemExit(f"a baseline moved another number of rows than the command ({moved.detail['total_rows']:,}): "
                             f"{differ}")
        print()
        print("| method | rows moved | seconds | rows/s | vs raw |")
        print("|---|---:|---:|---:|---:|")
        for name, secs in results.items():
            print(f"| {name} | {moved_rows[name]:,} | {secs:.2f} | {moved_rows[name] / secs:,.0f} | {secs / t_raw:.2f}x |")
        print(f"\n`tenancy data move`: {moved.detail['total_rows']:,} rows copied and verified in "
              f"{moved.detail['seconds']:.2f} s of {t_move:.2f} s")
        with tempfile.TemporaryDirectory() as tmp:
            total, freeze = freeze_window(server, a.rows, Path(tmp))
        print(f"`tenancy upgrade --method copy` of a {a.rows:,}-row tenant (offline engine): {total:.1f} s in all, "
              f"write freeze (freeze to switch) {freeze:.1f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
