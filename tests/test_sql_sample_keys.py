"""The sample schema's keys (sql/002_sample_app.sql): random UUIDs, so the keys one tenant sees say nothing of
another tenant's inserts; a database created when the keys were bigint identity columns is migrated in place."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from tenancy import db
from tests.sqlhelp import add_visits, connect, register, seed

pytestmark = pytest.mark.postgres

B_BURSTS = (0, 3, 1, 0, 5, 2, 0, 4, 1, 6, 0, 2)     # bravo's inserts between two of alpha's

# One row of the tenant %(t)s, returning its key; references pick the tenant's own rows (row-level security).
INSERTS = {
    "app.users": "INSERT INTO app.users (tenant_id, email, display_name) VALUES (%(t)s, %(u)s, 'U') RETURNING id",
    "app.itineraries": "INSERT INTO app.itineraries (tenant_id, owner_id, title) SELECT %(t)s, id, 'T' FROM app.users "
                       "LIMIT 1 RETURNING id",
    "app.comments": "INSERT INTO app.comments (tenant_id, itinerary_id, author_id, body) SELECT %(t)s, id, owner_id, 'C' "
                    "FROM app.itineraries LIMIT 1 RETURNING id",
    "app.audit_events": "INSERT INTO app.audit_events (tenant_id, actor, action) VALUES (%(t)s, %(u)s, 'login') RETURNING id",
    "app.api_requests": "INSERT INTO app.api_requests (tenant_id, client, path, status) VALUES (%(t)s, 'ci', %(u)s, 200) "
                        "RETURNING id",
}
VISIT = "INSERT INTO app.visits (tenant_id, path) VALUES (%(t)s, %(u)s) RETURNING id"


@pytest.fixture
def pooled(pg_server, tenancy_db):
    register(pg_server, tenancy_db, "alpha", "bravo")
    for t in ("alpha", "bravo"):
        seed(pg_server, tenancy_db, t, users=1)
    add_visits(pg_server, tenancy_db)
    return tenancy_db


def alternate(server, dbname: str, insert: str) -> list:
    """alpha inserts one row, bravo B_BURSTS[0] rows, alpha one, bravo B_BURSTS[1] ...; each insert its own
    transaction through tenancy_app, as the application's. Returns alpha's keys in the order it got them."""
    with connect(server, dbname, user="tenancy_app") as c:
        def one(tenant: str):
            with c.transaction():
                c.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
                return c.execute(insert, {"t": tenant, "u": f"{uuid.uuid4().hex}@x.example"}).fetchone()[0]

        keys = [one("alpha")]
        for n in B_BURSTS:
            for _ in range(n):
                one("bravo")
            keys.append(one("alpha"))
    return keys


def test_a_sequence_would_tell_alpha_how_many_rows_bravo_inserted(pg_server, pooled):
    # The measurement below, on a table numbered by a sequence: alpha reads bravo's every burst from its own ids.
    keys = alternate(pg_server, pooled, VISIT)
    assert [b - a - 1 for a, b in zip(keys, keys[1:])] == list(B_BURSTS)


@pytest.mark.parametrize("table", sorted(INSERTS))
def test_alphas_keys_say_nothing_of_bravos_inserts(pg_server, pooled, table):
    keys = alternate(pg_server, pooled, INSERTS[table])
    assert all(isinstance(k, uuid.UUID) for k in keys) and len(set(keys)) == len(keys)
    # version 4: 122 random bits, no counter, no clock, nothing shared between tenants to count with
    assert {(k.version, k.variant) for k in keys} == {(4, uuid.RFC_4122)}, keys
    # and no order: alpha's keys do not even follow its own inserts (13 random keys come out sorted once in 13!)
    assert sorted(keys) != keys and sorted(keys, reverse=True) != keys


def test_no_sample_table_draws_a_value_from_a_sequence(pg_server, pooled):
    with connect(pg_server, pooled, autocommit=True) as c:
        columns = c.execute(
            "SELECT format('%%s.%%s', a.attrelid::regclass, a.attname), format_type(a.atttypid, a.atttypmod), "
            "pg_get_expr(d.adbin, d.adrelid), a.attidentity, pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = ANY(%s::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped",
            ([*INSERTS, "app.likes"],)).fetchall()
    assert [c for c in columns if c[3] or c[4] or "nextval" in (c[2] or "")] == [], "a sample column reads a sequence"
    keys = {c[0]: (c[1], c[2]) for c in columns if c[0].endswith((".id", "_id")) and not c[0].endswith(".tenant_id")}
    assert keys == {
        **{f"{t}.id": ("uuid", "gen_random_uuid()") for t in INSERTS},
        **{f"app.{c}": ("uuid", None) for c in ("itineraries.owner_id", "comments.itinerary_id", "comments.author_id",
                                                "likes.itinerary_id", "likes.user_id")}}


# --- a database created with the bigint identity keys ------------------------------------------------------

# The sample tables as sql/002_sample_app.sql created them before their keys were UUIDs.
BIGINT_SCHEMA = """
SET ROLE tenancy_owner;
CREATE SCHEMA IF NOT EXISTS app;
REVOKE ALL ON SCHEMA app FROM PUBLIC;
GRANT USAGE ON SCHEMA app TO tenancy_app;
CREATE TABLE IF NOT EXISTS app.users (
  tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, email text NOT NULL, display_name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, email));
CREATE TABLE IF NOT EXISTS app.itineraries (
  tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, owner_id bigint NOT NULL, title text NOT NULL,
  body text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, owner_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS app.comments (
  tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, itinerary_id bigint NOT NULL,
  author_id bigint NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, itinerary_id) REFERENCES app.itineraries (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, author_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS app.likes (
  tenant_id text NOT NULL, itinerary_id bigint NOT NULL, user_id bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, itinerary_id, user_id),
  FOREIGN KEY (tenant_id, itinerary_id) REFERENCES app.itineraries (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, user_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS app.audit_events (
  tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, actor text NOT NULL, action text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}', at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS app.api_requests (
  tenant_id text NOT NULL, id bigint GENERATED BY DEFAULT AS IDENTITY, client text NOT NULL, path text NOT NULL,
  status int NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, id));
CREATE INDEX IF NOT EXISTS itineraries_owner_idx ON app.itineraries (tenant_id, owner_id);
CREATE INDEX IF NOT EXISTS comments_itinerary_idx ON app.comments (tenant_id, itinerary_id);
CREATE INDEX IF NOT EXISTS comments_author_idx ON app.comments (tenant_id, author_id);
CREATE INDEX IF NOT EXISTS likes_user_idx ON app.likes (tenant_id, user_id);
SELECT tenancy.isolate('app.users');
SELECT tenancy.isolate('app.itineraries');
SELECT tenancy.isolate('app.comments');
SELECT tenancy.isolate('app.likes');
SELECT tenancy.isolate('app.audit_events');
SELECT tenancy.isolate('app.api_requests');
GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO tenancy_app;
RESET ROLE;
"""
TABLES = ("app.users", "app.itineraries", "app.comments", "app.likes", "app.audit_events", "app.api_requests")
KEY_COLUMNS = {"app.users": ["id"], "app.itineraries": ["id", "owner_id"], "app.comments": ["id", "itinerary_id", "author_id"],
               "app.likes": ["itinerary_id", "user_id"], "app.audit_events": ["id"], "app.api_requests": ["id"]}


@pytest.fixture
def bigint_db(pg_server, fresh_db, tmp_path):
    """A database as the tenancy SQL left it before the keys were UUIDs, with alpha's and bravo's rows interleaved."""
    shutil.copy(db.SQL_DIR / "001_tenancy.sql", tmp_path / "001_tenancy.sql")
    (tmp_path / "002_sample_app.sql").write_text(BIGINT_SCHEMA)
    db.apply(pg_server.dsn(dbname=fresh_db), tmp_path)
    with connect(pg_server, fresh_db, autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
    register(pg_server, fresh_db, "alpha", "bravo")
    for i in range(3):
        for t in ("alpha", "bravo"):
            seed(pg_server, fresh_db, t, users=1, start=i)
            with connect(pg_server, fresh_db, user="tenancy_app") as c:
                c.execute("SELECT tenancy.set_tenant(%s)", (t,))
                c.execute("INSERT INTO app.audit_events (tenant_id, actor, action) VALUES (%s, 'u', 'login')", (t,))
                c.execute("INSERT INTO app.api_requests (tenant_id, client, path, status) VALUES (%s, 'ci', '/', 200)", (t,))
                c.commit()
    return fresh_db


def every_row(server, dbname: str) -> dict[str, list[dict]]:
    """Every row of every sample table (as the superuser: every tenant's)."""
    with connect(server, dbname, autocommit=True) as c:
        c.row_factory = dict_row
        return {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


def column_types(server, dbname: str) -> dict[str, str]:
    with connect(server, dbname, autocommit=True) as c:
        return {f"{t}.{col}": c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                                         "AND attname = %s", (t, col)).fetchone()[0]
                for t, cols in KEY_COLUMNS.items() for col in cols}


def test_bigint_keys_become_the_uuids_of_their_numbers_once(pg_server, bigint_db):
    before = every_row(pg_server, bigint_db)
    assert before["app.users"][0]["id"] == 1 and len(before["app.users"]) == 6
    assert set(column_types(pg_server, bigint_db).values()) == {"bigint"}
    assert db.apply(pg_server.dsn(dbname=bigint_db)) == ["001_tenancy.sql", "002_sample_app.sql"]   # audit clean
    assert set(column_types(pg_server, bigint_db).values()) == {"uuid"}
    # every row is there, each key and reference the UUID of its old number (25 -> 00000000-...-000000000019)
    assert every_row(pg_server, bigint_db) == {
        t: sorted(({col: uuid.UUID(int=v) if col in KEY_COLUMNS[t] else v for col, v in r.items()} for r in rows), key=repr)
        for t, rows in before.items()}
    assert str(every_row(pg_server, bigint_db)["app.users"][0]["id"]) == "00000000-0000-0000-0000-000000000001"
    with connect(pg_server, bigint_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'app'::regnamespace"
                         ).fetchone()[0] == 0, "the identity sequences are gone"
        assert sorted(r[0] for r in c.execute("SELECT conname FROM pg_constraint WHERE contype = 'f' AND "
                                              "connamespace = 'app'::regnamespace")) == [
            "comments_tenant_id_author_id_fkey", "comments_tenant_id_itinerary_id_fkey", "itineraries_tenant_id_owner_id_fkey",
            "likes_tenant_id_itinerary_id_fkey", "likes_tenant_id_user_id_fkey"]
    with connect(pg_server, bigint_db, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        new = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', 'new@x', 'N') "
                        "RETURNING id").fetchone()[0]
        assert new.version == 4, "new rows get random keys"
        with pytest.raises(psycopg.errors.ForeignKeyViolation):   # the references are enforced again
            c.execute("INSERT INTO app.itineraries (tenant_id, owner_id, title) VALUES ('alpha', %s, 'x')",
                      (uuid.UUID(int=2),))                             # bravo's first user
    after = every_row(pg_server, bigint_db)
    assert db.apply(pg_server.dsn(dbname=bigint_db)) == ["001_tenancy.sql", "002_sample_app.sql"]
    assert every_row(pg_server, bigint_db) == after, "applied again: nothing to migrate"


@pytest.mark.parametrize("setup,message", [
    ("CREATE PUBLICATION tmove FOR TABLE app.users WHERE (tenant_id = 'alpha')",
     "the sample schema's bigint keys (users.id, itineraries.id, itineraries.owner_id, comments.id, comments.itinerary_id, "
     "comments.author_id, likes.itinerary_id, likes.user_id, audit_events.id, api_requests.id) cannot become UUIDs while "
     "an online move replicates this database's tables: finish or abort the move, then apply the SQL again"),
    ("CREATE PUBLICATION tmove FOR TABLE app.likes; CREATE SUBSCRIPTION tmove CONNECTION 'host=127.0.0.1 dbname=nowhere' "
     "PUBLICATION tmove WITH (connect = false); DROP PUBLICATION tmove",
     "cannot become UUIDs while an online move replicates this database's tables"),
    ("CREATE TABLE app.notes (tenant_id text NOT NULL, id int, user_id bigint, PRIMARY KEY (tenant_id, id), CONSTRAINT "
     "notes_user FOREIGN KEY (tenant_id, user_id) REFERENCES app.users (tenant_id, id)); SELECT tenancy.isolate('app.notes')",
     "cannot become UUIDs: foreign keys of other tables reference them (notes_user (app.notes)); migrate those tables' "
     "columns in the same change"),
], ids=["publication", "subscription", "foreign key"])
def test_the_migration_refuses_what_it_would_break_and_changes_nothing(pg_server, bigint_db, setup, message):
    with connect(pg_server, bigint_db, autocommit=True) as c:
        c.execute(setup)
    before = every_row(pg_server, bigint_db)
    with pytest.raises(db.DatabaseError, match="nothing was changed") as refused:
        db.apply(pg_server.dsn(dbname=bigint_db))
    assert message in str(refused.value)
    assert set(column_types(pg_server, bigint_db).values()) == {"bigint"}
    assert every_row(pg_server, bigint_db) == before
    with connect(pg_server, bigint_db, autocommit=True) as c:
        for (sub,) in c.execute("SELECT subname FROM pg_subscription").fetchall():
            c.execute(f'ALTER SUBSCRIPTION "{sub}" SET (slot_name = NONE)')
            c.execute(f'DROP SUBSCRIPTION "{sub}"')
