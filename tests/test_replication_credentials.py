"""What an online move gives away: no credential in the servers' logs, a replication login only while a move
replicates, and nothing of one tenant's move to another tenant's application session.

The server here logs every statement (`log_statement = all`, more than the platform's `ddl`) and every
connection, and makes tenancy_replication authenticate with SCRAM over TCP (everyone else is trusted), so a
move's subscription only works when the password it was given is the role's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tenancy import db
from tenancy.lifecycle.online import OnlinePostgresMove
from tenancy.stores import replication as rep
from tests import pg, sqlhelp
from tests.movehelp import NEIGHBOURS, NONE_LEFT, TENANT, isolated, replication_objects, state

pytestmark = pytest.mark.postgres

HBA = """\
local all all trust
host all tenancy_replication 127.0.0.1/32 scram-sha-256
host replication tenancy_replication 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


@pytest.fixture(scope="module")
def audited():
    """A server that logs every statement and connection; tenancy_replication must present its password."""
    conf = Path(tempfile.mkdtemp(prefix="tenancy-hba-"))
    (conf / "pg_hba.conf").write_text(HBA)
    os.chmod(conf, 0o755)
    os.chmod(conf / "pg_hba.conf", 0o644)
    try:
        server = pg.start(f"-c log_statement=all -c log_connections=on -c hba_file={conf / 'pg_hba.conf'}")
    except pg.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()
    shutil.rmtree(conf, ignore_errors=True)


def log_of(server) -> str:
    return (server.datadir.parent / "log").read_text(errors="replace")


@pytest.fixture
def pair(audited):
    """(pooled database with the moving tenant and two neighbours, the tenant's own database)."""
    pooled = f"p_{os.urandom(4).hex()}"
    own = f"{pooled}_own"
    with psycopg.connect(audited.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{pooled}"')
        c.execute(f'CREATE DATABASE "{own}"')
    for d in (pooled, own):
        db.apply(audited.dsn(dbname=d))
    with psycopg.connect(audited.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
    sqlhelp.register(audited, pooled, TENANT, *NEIGHBOURS)
    for t in (TENANT, *NEIGHBOURS):
        sqlhelp.seed(audited, pooled, t, users=5)
    yield pooled, own
    with psycopg.connect(audited.dsn(dbname=own), autocommit=True) as c:
        for (name,) in c.execute("SELECT subname FROM pg_subscription").fetchall():
            c.execute(f'ALTER SUBSCRIPTION "{name}" DISABLE')
            c.execute(f'ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE)')
            c.execute(f'DROP SUBSCRIPTION "{name}"')
    with psycopg.connect(audited.dsn(), autocommit=True) as c:
        for _ in range(100):
            if not c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active"
                             ).fetchall() and not c.execute("SELECT 1 FROM pg_replication_slots").fetchall():
                break
            time.sleep(0.05)
        for d in (own, pooled):
            c.execute(f'DROP DATABASE "{d}" WITH (FORCE)')
        c.execute("ALTER ROLE tenancy_replication NOLOGIN PASSWORD NULL")


def mover(server, src: str, dst: str, operation: str, tenant: str = TENANT, **kw) -> OnlinePostgresMove:
    return OnlinePostgresMove(server.dsn(dbname=src), server.dsn(dbname=dst), tenant, None,
                              server.dsn(user="tenancy_replication", dbname=src), operation=operation, **kw)


def cut_over(server, src: str, dst: str, tenant: str = TENANT) -> None:
    with psycopg.connect(server.dsn(dbname=dst), autocommit=True) as c:
        c.execute("UPDATE tenancy.tenants SET state = 'active' WHERE id = %s", (tenant,))
    with psycopg.connect(server.dsn(dbname=src), autocommit=True) as c:
        c.execute("SELECT tenancy.freeze(%s, 'readonly')", (tenant,))


def credential(server, src: str, operation: str) -> tuple[str | None, str | None]:
    """(the password the move keeps, the role's SCRAM verifier), read as the superuser."""
    with psycopg.connect(server.dsn(dbname=src), autocommit=True) as c:
        row = c.execute("SELECT credential FROM tenancy.replication_moves WHERE move = %s",
                        (rep.names(operation).base,)).fetchone()
        verifier = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'tenancy_replication'").fetchone()[0]
    return (row[0] if row else None), verifier


def can_log_in(server, src: str) -> bool:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        return c.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenancy_replication'").fetchone()[0]


def log_in(server, src: str, password: str) -> str:
    """'ok', or the server's refusal, for a connection as tenancy_replication with this password."""
    try:
        with psycopg.connect(server.dsn(user="tenancy_replication", dbname=src, password=password), connect_timeout=5):
            return "ok"
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[-1]


def test_an_online_move_writes_no_credential_to_the_server_log(audited, pair):
    pooled, own = pair
    start = len(log_of(audited))
    m = mover(audited, pooled, own, "op-7c1d0e9a2b3f")
    m.sync()
    password, verifier = credential(audited, pooled, "op-7c1d0e9a2b3f")
    assert password and len(password) == 64 and verifier.startswith("SCRAM-SHA-256$4096:")
    switched = m.switch()
    cut_over(audited, pooled, own)
    m.cleanup(expect=switched["source"])
    time.sleep(0.2)
    log = log_of(audited)[start:]

    # The log is the statement log it claims to be: the move's own statements are in it ...
    assert "statement: CREATE PUBLICATION" in log and "statement: DO " in log
    assert "replication connection authorized: user=tenancy_replication" in log, \
        "the subscription authenticated with the password it was given (SCRAM, not trust)"
    # ... and nothing a password could be recovered from without a brute force of 32 random bytes.
    salt, keys = verifier.split("$")[1].split(":")[1], verifier.split("$")[2]
    for secret in (password, verifier, salt, *keys.split(":")):
        assert secret not in log, f"{secret[:12]}... is in the server log"
    assert re.search(r"password\s*=\s*'?[0-9a-f]", log) is None

    with psycopg.connect(audited.dsn(dbname=own), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_subscription").fetchone()[0] == 0
    assert replication_objects(audited, pooled, own) == NONE_LEFT
    assert not can_log_in(audited, pooled)
    assert "password authentication failed" in log_in(audited, pooled, password), "the old password is gone"
    assert credential(audited, pooled, "op-7c1d0e9a2b3f") == (None, credential(audited, pooled, "x")[1])
    assert credential(audited, pooled, "x")[1] != verifier, "the password was rotated when the move ended"


def test_the_replication_role_logs_in_only_while_a_move_replicates(audited, pair):
    pooled, own = pair
    assert not can_log_in(audited, pooled), "outside moves tenancy_replication cannot log in"
    m = mover(audited, pooled, own, "op-5e6f7a8b9c0d")
    m.sync()
    password, _ = credential(audited, pooled, "op-5e6f7a8b9c0d")
    assert can_log_in(audited, pooled) and log_in(audited, pooled, password) == "ok"
    assert "password authentication failed" in log_in(audited, pooled, "guessed")
    done = m.abort()
    assert any(line.startswith("login of tenancy_replication closed") for line in done), done
    assert not can_log_in(audited, pooled) and "password authentication failed" in log_in(audited, pooled, password)
    assert state(audited, pooled) == "active" and replication_objects(audited, pooled, own) == NONE_LEFT

    # Killed right after the login opened, before the subscription: the abort closes it.
    class Killed(BaseException):
        pass

    def kill(step: str) -> None:
        if step == "login":
            raise Killed(step)

    with pytest.raises(Killed):
        mover(audited, pooled, own, "op-5e6f7a8b9c0e", checkpoint=kill).sync()
    assert can_log_in(audited, pooled)
    assert rep.orphans(audited.dsn(dbname=pooled), owned=[rep.names("op-5e6f7a8b9c0e").base]) == []
    mover(audited, pooled, own, "op-5e6f7a8b9c0e").abort()
    assert not can_log_in(audited, pooled)
    assert replication_objects(audited, pooled, own) == NONE_LEFT


def test_two_moves_from_one_database_share_the_login_and_the_last_one_closes_it(audited, pair):
    pooled, own = pair
    other = NEIGHBOURS[0]
    source, target, conninfo = (audited.dsn(dbname=pooled), audited.dsn(dbname=own),
                                audited.dsn(user="tenancy_replication", dbname=pooled))
    a = mover(audited, pooled, own, "op-aaaaaaaaaaaa")
    b = mover(audited, pooled, own, "op-bbbbbbbbbbbb", tenant=other)
    tables = isolated(audited, pooled)
    assert len(tables) > 2, "more tables than sync workers: some of the first move's copies connect later"
    with sqlhelp.connect(audited, own) as blocker:
        # The first move's initial copies wait on the target's tables; the others have not connected yet.
        blocker.execute(f"LOCK TABLE {', '.join(tables)} IN SHARE MODE")
        rep.start(source, target, TENANT, None, conninfo, move="op-aaaaaaaaaaaa")
        pa, verifier = credential(audited, pooled, "op-aaaaaaaaaaaa")
        rep.start(source, target, other, None, conninfo, move="op-bbbbbbbbbbbb")
        assert credential(audited, pooled, "op-bbbbbbbbbbbb") == (pa, verifier), \
            "the second move uses the live password: a new one would lock the first one's workers out"
        blocker.rollback()
    # The first move's remaining copies connect now, with the password its subscription was given.
    rep.wait_synced(source, target, TENANT, move="op-aaaaaaaaaaaa", timeout=60)
    a.sync()
    b.sync()
    switched = a.switch()
    cut_over(audited, pooled, own)
    a.cleanup(expect=switched["source"])
    assert can_log_in(audited, pooled) and log_in(audited, pooled, pa) == "ok", "the second move still replicates"
    switched = b.switch()
    cut_over(audited, pooled, own, other)
    assert not can_log_in(audited, pooled), "the last move's switch closes the login"
    b.cleanup(expect=switched["source"])
    assert replication_objects(audited, pooled, own) == NONE_LEFT
    assert (state(audited, own), state(audited, own, other)) == ("active", "active")


def test_another_tenants_move_is_invisible_to_the_application(audited, pair):
    pooled, own = pair
    operation = "op-0123456789ab/pooled->postgres-1"
    m = mover(audited, pooled, own, operation)
    m.sync()
    m.switch()                               # between switch and unfreeze: the notes hold the verified summary
    with psycopg.connect(audited.dsn(dbname=pooled), autocommit=True) as c:
        note = c.execute("SELECT note FROM tenancy.replication_moves WHERE move = %s",
                         (rep.names(operation).base,)).fetchone()[0]
    assert note["tenant"] == TENANT and note["switched"]["kind"] == "postgres", "the move state is where it should be"
    name = rep.names(operation).base
    seen: list[str] = []
    with sqlhelp.connect(audited, pooled, user="tenancy_app") as app:
        app.execute("SELECT tenancy.set_tenant(%s)", (NEIGHBOURS[0],))
        for query in ("SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication",
                      "SELECT slot_name, database FROM pg_replication_slots",
                      "SELECT subname, subslotname FROM pg_subscription",
                      "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tmove%'"):
            rows = app.execute(query).fetchall()
            seen += [json.dumps(r) for r in rows]
        assert [r for r in app.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication").fetchall()
                if r[0] is not None] == [], "no comment carries move state"
        app.rollback()
        for query in ("SELECT * FROM pg_stat_replication", "SELECT * FROM tenancy.replication_moves",
                      "SELECT subconninfo FROM pg_subscription"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(query)
            app.rollback()
    text = "\n".join(seen)
    assert name in text, "the move's objects exist and were listed"
    for secret in (TENANT, "moving", str(audited.port), own, json.dumps(note["switched"]["parts"])[:40]):
        assert secret not in text, f"{secret!r} visible to another tenant's application session: {text}"
    cut_over(audited, pooled, own)
    m.cleanup()
    assert replication_objects(audited, pooled, own) == NONE_LEFT


def test_the_tenancy_sql_closes_a_login_no_move_uses_and_moves_from_two_databases_are_refused(audited, pair):
    pooled, own = pair
    source, target, conninfo = (audited.dsn(dbname=pooled), audited.dsn(dbname=own),
                                audited.dsn(user="tenancy_replication", dbname=pooled))
    with psycopg.connect(audited.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_replication LOGIN PASSWORD 'from-the-cloud-sql-api'")   # as the API leaves it
    assert [str(o) for o in rep.orphans(source) if o.kind == "login"] == [
        "login tenancy_replication: can log in while no move replicates from this server (it "
        "decodes every change): ALTER ROLE tenancy_replication NOLOGIN PASSWORD NULL"]
    db.apply(source)
    assert not can_log_in(audited, pooled) and rep.orphans(source) == []

    # A move's slot in the other database: the role's one password is kept there, so this move is refused.
    other = rep.names("op-elsewhere").slot
    with psycopg.connect(audited.dsn(dbname=own), autocommit=True) as c:
        c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (other,))
        c.execute("ALTER ROLE tenancy_replication LOGIN")
    try:
        db.apply(source)
        assert can_log_in(audited, pooled), "the tenancy SQL leaves the login of a replicating move alone"
        why = rep.unavailable(source, target, conninfo)
        assert why == (f"an online move replicates from another database of this server ({other} in {own}): both would "
                       "connect as tenancy_replication, whose one password a move keeps in its own database; wait until "
                       "it has switched, or move these rows with --method copy (a leftover slot: `tenancy moves` lists it)")
    finally:
        with psycopg.connect(audited.dsn(), autocommit=True) as c:
            c.execute("SELECT pg_drop_replication_slot(%s)", (other,))
    assert replication_objects(audited, pooled, own) == NONE_LEFT
