"""What the pooled database still tells one tenant about the others (README, "Security"): table-wide
planner statistics and shared sequences. These are properties of PostgreSQL, not of the tenancy SQL;
the tests pin them so the README's advice to applications stays true (and notice if they ever close).
"""

from __future__ import annotations

import json

import pytest

from tests.sqlhelp import connect, register, seed

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
    # app.users.id is an identity column: one sequence for every tenant (alpha took 30 values, bravo 2)
    with connect(pg_server, pooled, user="tenancy_app") as c:
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('bravo')")
            new = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('bravo', 'n@bravo.example', 'N') "
                            "RETURNING id").fetchone()[0]
    assert new == 33          # bravo's third user: 30 inserts of another tenant show in the gap
