"""What the pooled database still tells one tenant about the others (README, "Security"): table-wide
planner statistics and shared sequences. These are properties of PostgreSQL, not of the tenancy SQL;
the tests pin them so the README's advice to applications stays true (and notice if they ever close).
"""

from __future__ import annotations

import json

import pytest

from tests.sqlhelp import add_visits, connect, register, seed, visit

pytestmark = pytest.mark.postgres


@pytest.fixture
def pooled(pg_server, tenancy_db):
    register(pg_server, tenancy_db, "alpha", "bravo")
    seed(pg_server, tenancy_db, "alpha", users=30)
    seed(pg_server, tenancy_db, "bravo", users=2)
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        c.execute("ANALYZE app.users")
    return tenancy_db


def estimate(conn, sql: str) -> int:
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql).fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]


def test_planner_statistics_count_every_tenants_rows(pg_server, pooled):
    with connect(pg_server, pooled, user="tenancy_app") as c:
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('bravo')")
            assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 2       # RLS: bravo's rows
            # ... but the table's size is everyone's, in the catalogue and in EXPLAIN's estimates
            assert c.execute("SELECT reltuples FROM pg_class WHERE oid = 'app.users'::regclass").fetchone()[0] == 32
            # the planner folds bravo's own filter, then estimates the query's: from statistics over every row
            assert estimate(c, "SELECT * FROM app.users WHERE tenant_id = 'alpha'") == 30      # alpha's row count
            assert estimate(c, "SELECT * FROM app.users WHERE tenant_id = 'nobody'") == 1


def test_pg_stats_hides_tables_under_row_level_security(pg_server, pooled):
    # Column statistics (most common values) would show other tenants' values; PostgreSQL hides them.
    with connect(pg_server, pooled, user="tenancy_app") as c:
        assert c.execute("SELECT count(*) FROM pg_stats WHERE schemaname = 'app' AND tablename = 'users'").fetchone()[0] == 0


def test_a_shared_sequence_counts_other_tenants_inserts(pg_server, pooled):
    # An application table numbered by identity and serial columns: one sequence for every tenant. (The sample
    # schema's keys are random UUIDs for this reason: tests/test_sql_sample_keys.py.)
    add_visits(pg_server, pooled)
    assert visit(pg_server, pooled, "bravo") == [(1, 1)]
    visit(pg_server, pooled, "alpha", 30)
    assert visit(pg_server, pooled, "bravo") == [(32, 32)]    # bravo's second visit: alpha's 30 show in the gap
