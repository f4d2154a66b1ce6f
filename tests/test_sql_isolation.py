"""Row-level isolation of the pooled database, proven on a real PostgreSQL.

Each test covers one item of the row-level-security pitfalls list and would fail if the protection
were removed from sql/001_tenancy.sql.
"""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from tests.sqlhelp import connect, register, seed

pytestmark = pytest.mark.postgres


@pytest.fixture
def two_tenants(pg_server, tenancy_db):
    register(pg_server, tenancy_db, "alpha", "bravo")
    seed(pg_server, tenancy_db, "alpha", users=3)
    seed(pg_server, tenancy_db, "bravo", users=2)
    return tenancy_db


def rows_as(server, db, tenant, sql="SELECT tenant_id FROM app.users", user="tenancy_app"):
    with connect(server, db, user=user) as c:
        with c.transaction():
            if tenant is not None:
                c.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
            return [r[0] for r in c.execute(sql).fetchall()]


def test_each_tenant_sees_only_its_rows(pg_server, two_tenants):
    assert rows_as(pg_server, two_tenants, "alpha") == ["alpha"] * 3
    assert rows_as(pg_server, two_tenants, "bravo") == ["bravo"] * 2
    for table in ("app.itineraries", "app.comments", "app.likes"):
        assert set(rows_as(pg_server, two_tenants, "alpha", f"SELECT tenant_id FROM {table}")) == {"alpha"}


def test_owner_is_subject_to_rls_because_forced(pg_server, two_tenants):
    # 1. the table owner bypasses RLS unless FORCE ROW LEVEL SECURITY
    assert rows_as(pg_server, two_tenants, "alpha", user="tenancy_owner") == ["alpha"] * 3
    assert rows_as(pg_server, two_tenants, None, user="tenancy_owner") == []
    with connect(pg_server, two_tenants, autocommit=True) as c:
        forced = c.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'app.users'::regclass").fetchone()[0]
        owner = c.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'app.users'::regclass").fetchone()[0]
    assert forced is True
    assert owner == "tenancy_owner"  # the runtime role owns nothing


def test_runtime_role_is_not_superuser_nor_bypassrls(pg_server, two_tenants):
    # 2. superusers and BYPASSRLS roles ignore RLS even when forced
    with connect(pg_server, two_tenants, autocommit=True) as c:
        sup, bypass = c.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'tenancy_app'").fetchone()
        assert (sup, bypass) == (False, False)
        c.execute("ALTER ROLE tenancy_app BYPASSRLS")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
        assert "role tenancy_app is superuser or BYPASSRLS" in problems
    # ... and re-applying the SQL takes it away again
    from tenancy import db
    db.apply(pg_server.dsn(dbname=two_tenants))
    assert rows_as(pg_server, two_tenants, None) == []


def test_unset_and_emptied_tenant_setting_yield_no_rows(pg_server, two_tenants):
    # 3. NULL when never set, '' after a SET LOCAL ended: both must give no rows, not all rows, not an error
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0
        c.commit()
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('alpha')")
            assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 3
        assert c.execute("SELECT current_setting('app.current_tenant', true)").fetchone()[0] == ""
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0


def test_tenant_setting_does_not_survive_the_transaction(pg_server, two_tenants):
    # 4. a plain SET would survive on a pooled connection; set_tenant is transaction-local
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('alpha')")
        with c.transaction():
            assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="a tenant id is required"):
            c.execute("SELECT tenancy.set_tenant('')")


def test_writes_need_with_check(pg_server, two_tenants):
    # 5a. inserting or moving a row into another tenant is refused by WITH CHECK
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('bravo', 'x@y.z', 'X')")
        c.rollback()
        c.execute("SELECT tenancy.set_tenant('alpha')")
        # updating another tenant's rows touches nothing (they are invisible)
        assert c.execute("UPDATE app.users SET display_name = 'pwned' WHERE tenant_id = 'bravo'").rowcount == 0
        assert c.execute("DELETE FROM app.likes WHERE tenant_id = 'bravo'").rowcount == 0
        c.commit()
    assert rows_as(pg_server, two_tenants, "bravo", "SELECT display_name FROM app.users ORDER BY email") == ["User 0", "User 1"]


def test_extra_permissive_policy_cannot_widen_access(pg_server, two_tenants):
    # 5b. one extra permissive policy ORs with the tenant policy; the RESTRICTIVE one keeps it closed
    with connect(pg_server, two_tenants, autocommit=True) as c:
        c.execute("CREATE POLICY oops ON app.users AS PERMISSIVE FOR SELECT TO PUBLIC USING (true)")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "table app.users: unexpected permissive policy oops" in problems
    assert rows_as(pg_server, two_tenants, "alpha") == ["alpha"] * 3
    with connect(pg_server, two_tenants, autocommit=True) as c:  # without the restrictive policy it would leak
        c.execute("DROP POLICY tenant_isolation ON app.users")
    assert sorted(set(rows_as(pg_server, two_tenants, "alpha"))) == ["alpha", "bravo"]


def test_views_must_be_security_invoker(pg_server, two_tenants):
    # 6. a view runs with its owner's rights unless security_invoker
    with connect(pg_server, two_tenants, autocommit=True) as c:
        c.execute("CREATE VIEW public.all_users AS SELECT tenant_id FROM app.users")
        c.execute("GRANT SELECT ON public.all_users TO tenancy_app; GRANT USAGE ON SCHEMA public TO tenancy_app")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "view all_users reads isolated table app.users without security_invoker" in problems
    leaked = rows_as(pg_server, two_tenants, "alpha", "SELECT tenant_id FROM public.all_users")
    assert "bravo" in leaked  # the view owner (a superuser here) bypasses RLS
    with connect(pg_server, two_tenants, autocommit=True) as c:
        c.execute("ALTER VIEW public.all_users SET (security_invoker = true)")
        assert [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")] == []
    assert rows_as(pg_server, two_tenants, "alpha", "SELECT tenant_id FROM public.all_users") == ["alpha"] * 3


def test_leakproof_functions_are_flagged(pg_server, two_tenants):
    # 7. LEAKPROOF functions may run before the RLS filter and see other tenants' rows
    with connect(pg_server, two_tenants, autocommit=True) as c:
        c.execute("CREATE FUNCTION public.peek(text) RETURNS boolean LANGUAGE plpgsql LEAKPROOF COST 0.0000001 AS "
                  "$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "function peek(text) is LEAKPROOF" in problems
    notices: list[str] = []
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT tenancy.set_tenant('alpha')")
        c.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        c.execute("SELECT count(*) FROM app.users WHERE public.peek(email)")
    assert any("bravo" in n for n in notices), f"a LEAKPROOF function sees rows before RLS filters them: {notices}"


def test_unique_keys_are_scoped_by_tenant(pg_server, two_tenants):
    # 8. a global UNIQUE(email) would tell tenant A that tenant B has that email
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', 'user0@bravo.example', 'Same')")
        c.commit()
    with connect(pg_server, two_tenants, autocommit=True) as c:
        c.execute("CREATE UNIQUE INDEX global_id ON app.users (id)")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "unique index app.global_id on app.users does not include tenant_id" in problems


def test_runtime_role_cannot_truncate_reference_or_trigger(pg_server, two_tenants):
    # 9. TRUNCATE ignores RLS
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("TRUNCATE app.likes")
    with connect(pg_server, two_tenants, autocommit=True) as c:
        for priv in ("TRUNCATE", "REFERENCES", "TRIGGER"):
            assert c.execute("SELECT has_table_privilege('tenancy_app', 'app.likes', %s)", (priv,)).fetchone()[0] is False
        c.execute("GRANT TRUNCATE ON app.likes TO tenancy_app")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "role tenancy_app holds TRUNCATE on app.likes" in problems


def test_pg_dump_needs_enable_row_security_and_a_session_tenant_is_not_honoured(pg_server, two_tenants):
    # 10. pg_dump as an RLS-subject role fails unless --enable-row-security; and a tenant set for the whole
    # session (PGOPTIONS, SET) is not honoured, so even then the dump holds no tenant's rows.
    base = [str(pg_server.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg_server.port), "-U", "tenancy_owner",
            "-d", two_tenants, "--data-only", "-t", "app.users"]
    refused = subprocess.run(base, capture_output=True, text=True)
    assert refused.returncode != 0 and "row-level security" in refused.stderr
    ok = subprocess.run([*base, "--enable-row-security"], capture_output=True, text=True,
                        env={"PGOPTIONS": "-c app.current_tenant=bravo", "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr
    assert "@bravo.example" not in ok.stdout and "@alpha.example" not in ok.stdout


@pytest.mark.parametrize("how", ["SET app.current_tenant = 'alpha'",
                                 "SELECT set_config('app.current_tenant', 'alpha', false)",
                                 "SELECT set_config('app.current_tenant', 'alpha', true)"])
def test_only_set_tenant_in_the_current_transaction_counts(pg_server, two_tenants, how):
    with connect(pg_server, two_tenants, user="tenancy_app", autocommit=True) as c:
        c.execute(how)
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0
        assert c.execute("SELECT tenancy.current_tenant()").fetchone()[0] is None
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('bravo')")
            # set_config after set_tenant breaks the binding: no tenant at all rather than a forged one
            c.execute("SELECT set_config('app.current_tenant', 'alpha', true)")
            assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant('bravo')")
            emails = {r[0] for r in c.execute("SELECT email FROM app.users")}
        assert emails and all(e.endswith("@bravo.example") for e in emails)
        # the next transaction inherits nothing from set_tenant, whatever the session says
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0


def test_statistics_side_channels_are_closed_to_the_runtime_role(pg_server, two_tenants):
    with connect(pg_server, two_tenants, user="tenancy_app", autocommit=True) as c:
        for q in ("SELECT query FROM pg_stat_activity", "SELECT n_live_tup FROM pg_stat_user_tables",
                  "SELECT pg_stat_get_live_tuples('app.users'::regclass)",
                  "SELECT heap_blks_read FROM pg_statio_user_tables"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(q)
    with connect(pg_server, two_tenants, autocommit=True) as c:
        assert [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")] == []
        c.execute("GRANT SELECT ON pg_catalog.pg_stat_activity TO PUBLIC")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert problems == ["side channel: tenancy_app can read pg_stat_activity (revoke it from PUBLIC as a superuser)"]


def test_freeze_waits_for_transactions_that_already_wrote(pg_server, two_tenants):
    """A write made before the freeze cannot commit after it: freeze() waits, and later writes are refused."""
    import threading

    writer = connect(pg_server, two_tenants, user="tenancy_app")
    writer.execute("SELECT tenancy.set_tenant('alpha')")
    writer.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', 'late@alpha.example', 'L')")
    done = threading.Event()

    def freeze():
        with connect(pg_server, two_tenants, autocommit=True) as c:
            c.execute("SELECT tenancy.freeze('alpha')")
        done.set()

    t = threading.Thread(target=freeze)
    t.start()
    assert not done.wait(1.0), "freeze returned while a transaction that wrote the tenant was still open"
    writer.commit()          # the in-flight write commits before the freeze takes effect ...
    assert done.wait(10)
    t.join()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="tenant alpha is frozen"):
        writer.execute("SELECT tenancy.set_tenant('alpha')")
        writer.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', 'after@alpha.example', 'A')")
    writer.rollback()
    writer.close()
    with connect(pg_server, two_tenants) as c:    # ... so it is in the data the move copies
        c.execute("SELECT tenancy.set_tenant('alpha')")
        emails = {r[0] for r in c.execute("SELECT email FROM app.users")}
    assert "late@alpha.example" in emails and "after@alpha.example" not in emails


def test_frozen_tenant_writes_are_refused_by_the_database(pg_server, two_tenants):
    register(pg_server, two_tenants, "alpha", state="frozen")
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="tenant alpha is frozen"):
            c.execute("UPDATE app.users SET display_name = 'x'")
        c.rollback()
        c.execute("SELECT tenancy.set_tenant('alpha')")
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 3  # reads still work
        c.rollback()
        c.execute("SELECT tenancy.set_tenant('bravo')")  # other tenants are unaffected
        assert c.execute("UPDATE app.users SET display_name = 'ok'").rowcount == 2


def test_unknown_tenants_cannot_be_selected_or_written(pg_server, two_tenants):
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        with pytest.raises(psycopg.errors.UndefinedObject, match="unknown tenant ghost"):
            c.execute("SELECT tenancy.set_tenant('ghost')")
    with connect(pg_server, two_tenants, user="tenancy_app") as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM tenancy.tenants")  # the registry is not readable by tenants


def test_foreign_keys_cannot_cross_tenants(pg_server, two_tenants):
    with connect(pg_server, two_tenants, user="tenancy_owner") as c:
        c.execute("SELECT tenancy.set_tenant('bravo')")
        bravo_user = c.execute("SELECT id FROM app.users LIMIT 1").fetchone()[0]
        c.rollback()
        c.execute("SELECT tenancy.set_tenant('alpha')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            c.execute("INSERT INTO app.itineraries (tenant_id, owner_id, title) VALUES ('alpha', %s, 'x')", (bravo_user,))


def test_apply_is_idempotent_and_audit_clean(pg_server, two_tenants):
    from tenancy import db
    assert db.apply(pg_server.dsn(dbname=two_tenants)) == ["001_tenancy.sql", "002_sample_app.sql"]
    assert rows_as(pg_server, two_tenants, "alpha") == ["alpha"] * 3  # data survives re-application
    with connect(pg_server, two_tenants, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM tenancy.isolated_tables").fetchone()[0] == 6
        assert [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")] == []


def test_isolate_refuses_a_table_without_tenant_id(pg_server, tenancy_db):
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        c.execute("CREATE TABLE public.nope (id int)")
        with pytest.raises(psycopg.errors.RaiseException, match="has no tenant_id column"):
            c.execute("SELECT tenancy.isolate('public.nope')")
        c.execute("CREATE TABLE public.forgotten (tenant_id text, x int)")
        problems = [r[0] for r in c.execute("SELECT problem FROM tenancy.audit()")]
    assert "table forgotten has tenant_id but is not isolated (SELECT tenancy.isolate('forgotten'))" in problems
