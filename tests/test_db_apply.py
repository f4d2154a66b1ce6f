"""`tenancy db apply DSN --as NAME`: what the platform's SQL job applies in a database, for one no job reaches -- the
tenancy SQL, the database's identity marker and the tenants it holds, in one transaction -- on real PostgreSQL, with
the shipped catalogue deployed by the offline engine."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from tenancy import cli, registration, topology
from tenancy.catalog import load_catalog
from tenancy.engine import OfflineEngine
from tests.conftest import ROOT

pytestmark = pytest.mark.postgres
POOLED = {"globex": ("free", "active"), "initech": ("basic", "active"), "hooli": ("premium", "active"),
          "vandelay": ("free", "suspended")}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """The platform side of dev (its global stack, then its identity shard, cell and pool shard) deployed offline with
    the shipped catalogue, once."""
    state = tmp_path_factory.mktemp("platform")
    engine, catalog = OfflineEngine(state, "dev"), load_catalog(ROOT / "tenants.yaml")
    for stack in topology.every_platform_stack("dev"):
        engine.up(stack, catalog)
    return state


@pytest.fixture
def deployed(platform, tmp_path):
    """A copy of the deployed state, for one test."""
    shutil.copytree(platform, tmp_path / "state")
    return tmp_path / "state"


@pytest.fixture
def logins(pg_server):
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for role in ("tenancy_owner", "tenancy_app"):
            c.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
                      f"CREATE ROLE {role}; END IF; END $$")
        c.execute("ALTER ROLE tenancy_app LOGIN")


def apply(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["db", "apply", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def job_sql(state: Path, stack: str, job: str) -> str:
    """The registration the stack's SQL job applies, as the deployed state holds its ConfigMap."""
    resources = json.loads((state / f"{stack}.json").read_text())["resources"]
    urn = next(u for u in resources if u.endswith(f"::{job}-sql-sql"))
    return resources[urn]["inputs"]["data"]["zz_register.sql"]


def tenants_of(server, dbname: str) -> dict:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in c.execute("SELECT id, plan, model, state, directory FROM tenancy.tenants")}


def marker(server, dbname: str):
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return c.execute("SELECT environment, name FROM tenancy.database_identity").fetchall()


def test_the_registration_is_the_sql_jobs_from_the_record_and_from_the_catalogue(deployed, tmp_path):
    """The SQL `--as pool-1` applies after the tenancy SQL is, byte for byte, what the pool shard stack's SQL job applies:
    read from the deployed record, and, for an environment never deployed, from the catalogue's placement."""
    from tenancy.cli.common import checked_catalog

    target = registration.parse("pool-1")
    args = cli.build_parser().parse_args(["db", "apply", "--as", "pool-1", "--tenants", str(ROOT / "tenants.yaml")])
    rows, source = registration.for_database(target, "dev", OfflineEngine(deployed, "dev"),
                                             lambda: pytest.fail("the deployed record is there"), "tenants.yaml")
    assert source == "the deployed record of dev"
    assert {r.id: (r.plan, r.state) for r in rows} == POOLED
    assert registration.sql(target, "dev", rows) == job_sql(deployed, "dev.pool-1", "pooled")
    rows, source = registration.for_database(target, "dev", OfflineEngine(tmp_path / "nothing", "dev"),
                                             lambda: checked_catalog(args), "tenants.yaml")
    assert source == "tenants.yaml (dev is not deployed)"
    assert registration.sql(target, "dev", rows) == job_sql(deployed, "dev.pool-1", "pooled")


def test_a_tenant_database_gets_what_its_stacks_job_registers(deployed):
    engine = OfflineEngine(deployed, "dev")
    assert engine.up("dev.stark", load_catalog(ROOT / "tenants.yaml")).outputs["tenant"] == "stark"
    target = registration.parse("stark/postgres-2")
    rows, _ = registration.for_database(target, "dev", engine, lambda: pytest.fail("deployed"), "tenants.yaml")
    assert [(r.id, r.plan, r.model, r.state) for r in rows] == [("stark", "standard", "namespace", "active")]
    assert registration.sql(target, "dev", rows) == job_sql(deployed, "dev.stark", "postgres-2")


def test_apply_as_a_pool_shard_registers_its_tenants_and_marks_it(pg_server, fresh_db, deployed, logins, capsys):
    dsn = pg_server.dsn(dbname=fresh_db)
    code, out, err = apply(capsys, dsn, "--as", "pool-1", "--engine", "offline", "--state", str(deployed))
    assert code == 0, err
    assert out.splitlines() == [
        f"applied 001_tenancy.sql, 002_sample_app.sql, the registration to 'host=127.0.0.1 port={pg_server.port} "
        f"dbname={fresh_db} user=postgres' in one transaction",
        "dev's pool-1: 4 tenant(s) registered, from the deployed record of dev: globex (active), hooli (active), "
        "initech (active), vandelay (suspended)",
        "isolation audit clean"]
    found = tenants_of(pg_server, fresh_db)
    assert {t: (plan, model, state) for t, (plan, model, state, _) in found.items()} == {
        t: (plan, "pooled", state) for t, (plan, state) in POOLED.items()}
    assert found["globex"][3] == {"hostnames": ["app.dev.saas-example.com"], "placement": {
        "bucket": "tenancy-dev-482913-dev-pooled-uploads", "cluster": "dev-shared", "database": "dev-pooled-postgres",
        "firestore": "dev-pooled", "identityShard": "identity-1", "namespace": "pooled", "poolShard": "pool-1",
        "prefix": "globex/", "stack": "dev.pool-1"}}
    assert marker(pg_server, fresh_db) == [("dev", "pool-1")]
    # The application's writes: a registered tenant's go through, a suspended one's and an unknown one's are refused.
    with psycopg.connect(pg_server.dsn(user="tenancy_app", dbname=fresh_db)) as c:
        c.execute("SELECT tenancy.set_tenant('globex')")
        c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('globex', 'a@globex.example', 'A')")
        c.commit()
        for tenant, sqlstate in (("vandelay", "25006"), ("soylent", "42704")):
            with pytest.raises(psycopg.Error) as refused:
                c.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
                c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, 'b@x.example', 'B')",
                          (tenant,))
            assert refused.value.sqlstate == sqlstate, (tenant, refused.value)
            c.rollback()
    # Again: nothing changes, the rows the application wrote stay.
    code, out, err = apply(capsys, dsn, "--as", "pool-1", "--engine", "offline", "--state", str(deployed))
    assert code == 0, err
    assert tenants_of(pg_server, fresh_db) == found and marker(pg_server, fresh_db) == [("dev", "pool-1")]


def test_apply_takes_the_database_from_the_registry(pg_server, fresh_db, deployed, registry, capsys):
    from tenancy.operations.stores import connection_record

    args = ["--as", "pool-1", "--engine", "offline", "--state", str(deployed), "--registry", registry.dsn]
    code, _, err = apply(capsys, *args)
    assert code == 2
    assert err.strip() == ("error: the registry of dev has no connection for database pool-1: give its DSN, or record it "
                           "first (`tenancy registry database pool-1 --dsn DSN --env dev`)")
    registry.set_database("pool-1", "pool-1", connection_record(pg_server.dsn(dbname=fresh_db)))
    code, out, err = apply(capsys, *args)
    assert code == 0, err
    assert f"dbname={fresh_db}" in out.splitlines()[0]
    assert set(tenants_of(pg_server, fresh_db)) == set(POOLED)


def test_the_tenancy_sql_and_the_registration_are_one_transaction(pg_server, fresh_db, deployed, capsys):
    """A registration that fails (here: the job's audit check, on a table holding tenant_id outside isolation) leaves
    the database as it was: not even the tenancy SQL is applied."""
    with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True) as c:
        c.execute("CREATE TABLE public.leaky (tenant_id text, note text)")
    code, out, err = apply(capsys, pg_server.dsn(dbname=fresh_db), "--as", "pool-1", "--engine", "offline", "--state",
                           str(deployed))
    assert code == 1 and out == ""
    assert "applying the tenancy SQL failed (nothing was changed)" in err
    assert "table leaky has tenant_id but is not isolated" in err
    with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('tenancy')").fetchone()[0] is None


@pytest.mark.parametrize("name, message", [
    ("pool1", "--as pool1: not a database name of the registry; give pool-N (a pool shard's database, e.g. pool-1) or "
              "TENANT/postgres-N (one of a namespace or dedicated tenant's own, e.g. acme/postgres-1)"),
    ("pool-2", "--as pool-2: environment dev builds pool shard(s) pool-1 (tenancy:poolShards in stacks/Pulumi.dev.yaml)"),
    ("strak/postgres-1", "--as strak/postgres-1: no tenant 'strak' in the deployed record of dev; did you mean "
                         "stark/postgres-1?"),
    ("globex/postgres-1", "--as globex/postgres-1: tenant 'globex' is pooled (plan free) in the deployed record of dev: "
                          "it has no databases of its own; its rows are in its pool shard's database: --as pool-1"),
    ("stark/postgres-4", "--as stark/postgres-4: plan 'standard' of tenant 'stark' has postgres-1, postgres-2, "
                         "postgres-3, not postgres-4"),
    ("umbrella/postgres-1", "--as umbrella/postgres-1: tenant 'umbrella' is offboarded in the deployed record of dev: "
                            "it has no databases to register in"),
])
def test_bad_names_are_refused_before_anything_is_applied(pg_server, fresh_db, deployed, capsys, name, message):
    code, out, err = apply(capsys, pg_server.dsn(dbname=fresh_db), "--as", name, "--engine", "offline", "--state",
                           str(deployed))
    assert (code, out, err) == (2, "", f"error: {message}\n")
    with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('tenancy')").fetchone()[0] is None


def test_a_database_marked_as_another_is_refused(pg_server, fresh_db, deployed, capsys):
    dsn = pg_server.dsn(dbname=fresh_db)
    assert apply(capsys, dsn, "--as", "stark/postgres-1", "--engine", "offline", "--state", str(deployed))[0] == 0
    code, out, err = apply(capsys, dsn, "--as", "pool-1", "--engine", "offline", "--state", str(deployed))
    assert (code, out) == (2, "")
    assert err == (f"error: 'host=127.0.0.1 port={pg_server.port} dbname={fresh_db} user=postgres' is dev's database "
                   "stark/postgres-1, not dev's pool-1; nothing was applied (check the DSN and --as)\n")
    assert set(tenants_of(pg_server, fresh_db)) == {"stark"} and marker(pg_server, fresh_db) == [("dev", "stark/postgres-1")]


def test_missing_or_unusable_databases(pg_server, deployed, capsys, monkeypatch):
    monkeypatch.delenv("TENANCY_REGISTRY", raising=False)
    assert apply(capsys) == (2, "", "error: give the database's DSN, or --as NAME to apply to the database the registry "
                                    "records as NAME\n")
    code, out, err = apply(capsys, "host=127.0.0.1 port=1 dbname=x user=postgres password=s3cret", "--as", "pool-1",
                           "--engine", "offline", "--state", str(deployed))
    assert code == 1 and "cannot connect or read it" in err and "s3cret" not in err + out
    code, _, err = apply(capsys, f"host=127.0.0.1 port={pg_server.port} dbname=nope_{uuid.uuid4().hex[:6]}", "--as",
                         "pool-1", "--engine", "offline", "--state", str(deployed))
    assert code == 1 and err.startswith("error: 'host=127.0.0.1") and err.count("\n") == 1
