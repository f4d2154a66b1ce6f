"""pgAudit in the tenancy SQL: created where the server has it, skipped cleanly where it does not.

Cloud SQL ships pgaudit and loads it when the instance flag cloudsql.enable_pgaudit is on (asserted on the
plan in tests/test_hardening_gcp.py); the test server has no pgaudit. Each branch of the guard is taken here
on the real server: the catalogue views it reads are stood in for by views in a schema placed ahead of
pg_catalog, and pgaudit's refusal to load without shared_preload_libraries by an event trigger raising the
same error before CREATE EXTENSION runs.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tenancy import db
from tests.sqlhelp import connect

pytestmark = pytest.mark.postgres

TENANCY_SQL = (db.SQL_DIR / "001_tenancy.sql").read_text()
GUARD = re.search(r"^DO \$pgaudit\$.*?^\$pgaudit\$;$", TENANCY_SQL, re.S | re.M).group(0)
NOT_AVAILABLE = "pgaudit is not available on this server; DDL and role changes are not audit-logged here"


def _notices(conn: psycopg.Connection) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda d: seen.append((d.severity_nonlocalized, d.message_primary)))
    return seen


def _stand_in(conn: psycopg.Connection, available: bool, installed: bool) -> None:
    """Views named like the catalogue's, searched before pg_catalog for this session."""
    conn.execute("CREATE SCHEMA stand_in")
    conn.execute("CREATE VIEW stand_in.pg_available_extensions AS SELECT name FROM pg_catalog.pg_available_extensions"
                 + (" UNION ALL SELECT 'pgaudit'::name" if available else ""))
    conn.execute("CREATE VIEW stand_in.pg_extension AS SELECT extname FROM pg_catalog.pg_extension"
                 + (" UNION ALL SELECT 'pgaudit'::name" if installed else ""))
    conn.execute("SET search_path = stand_in, pg_catalog")


def test_the_guard_is_part_of_the_tenancy_sql():
    assert "CREATE EXTENSION pgaudit" in GUARD
    assert TENANCY_SQL.index(GUARD) < TENANCY_SQL.index("SET ROLE tenancy_owner;")  # as the applying role


def test_the_tenancy_sql_applies_where_pgaudit_is_not_available(pg_server, fresh_db):
    with connect(pg_server, fresh_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pgaudit'").fetchone()[0] == 0
        notices = _notices(c)
        with c.transaction():
            for f in db.sql_files():
                c.execute(f.read_text())
        assert ("NOTICE", NOT_AVAILABLE) in notices
        assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pgaudit'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM tenancy.audit()").fetchone()[0] == 0
    # and through `tenancy db apply`, twice (idempotent)
    for _ in range(2):
        assert db.apply(pg_server.dsn(dbname=fresh_db)) == ["001_tenancy.sql", "002_sample_app.sql"]


def test_where_pgaudit_is_available_the_guard_creates_it(pg_server, fresh_db):
    with connect(pg_server, fresh_db, autocommit=True) as c:
        _stand_in(c, available=True, installed=False)
        notices = _notices(c)
        # The server has no pgaudit files, so the CREATE EXTENSION the guard reaches fails: the branch was taken.
        with pytest.raises(psycopg.Error) as exc:
            c.execute(GUARD)
        assert 'SQL statement "CREATE EXTENSION pgaudit"' in (exc.value.diag.context or "")
        assert "pgaudit" in str(exc.value) and notices == []


def test_an_installed_pgaudit_is_left_alone(pg_server, fresh_db):
    with connect(pg_server, fresh_db, autocommit=True) as c:
        _stand_in(c, available=True, installed=True)
        notices = _notices(c)
        c.execute(GUARD)
        assert notices == []


def test_pgaudit_available_but_not_preloaded_warns_and_the_sql_still_applies(pg_server, fresh_db):
    with connect(pg_server, fresh_db, autocommit=True) as c:
        # What pgaudit's _PG_init raises when it is not in shared_preload_libraries, before CREATE EXTENSION runs.
        c.execute("""CREATE FUNCTION public.refuse_pgaudit() RETURNS event_trigger LANGUAGE plpgsql AS $$
                     BEGIN
                       RAISE EXCEPTION 'pgaudit must be loaded via shared_preload_libraries'
                         USING ERRCODE = 'object_not_in_prerequisite_state';
                     END $$""")
        c.execute("CREATE EVENT TRIGGER refuse_pgaudit ON ddl_command_start WHEN TAG IN ('CREATE EXTENSION') "
                  "EXECUTE FUNCTION public.refuse_pgaudit()")
        _stand_in(c, available=True, installed=False)
        notices = _notices(c)
        c.execute(GUARD)
        assert notices == [("WARNING", "pgaudit is installed but not preloaded (pgaudit must be loaded via "
                                       "shared_preload_libraries); add it to shared_preload_libraries (Cloud SQL: flag "
                                       "cloudsql.enable_pgaudit=on) and apply again")]
        assert c.execute("SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pgaudit'").fetchone()[0] == 0
