"""Helpers for the SQL tests: connections as each role, seeding tenants' rows."""

from __future__ import annotations

import psycopg


def connect(server, dbname: str, user: str = "postgres", autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(server.dsn(user=user, dbname=dbname), autocommit=autocommit)


def register(server, dbname: str, *tenants: str, model: str = "pooled", state: str = "active") -> None:
    with connect(server, dbname, autocommit=True) as c:
        for t in tenants:
            c.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, 'free', %s, %s) "
                      "ON CONFLICT (id) DO UPDATE SET state = excluded.state", (t, model, state))


def seed(server, dbname: str, tenant: str, users: int = 3, user: str = "tenancy_app", start: int = 0) -> None:
    """Users, one itinerary each, a comment and a like per itinerary -- as the runtime role, through RLS."""
    with connect(server, dbname, user=user) as c:
        with c.transaction():
            c.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
            for i in range(start, start + users):
                uid = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) RETURNING id",
                                (tenant, f"user{i}@{tenant}.example", f"User {i}")).fetchone()[0]
                iid = c.execute("INSERT INTO app.itineraries (tenant_id, owner_id, title) VALUES (%s, %s, %s) RETURNING id",
                                (tenant, uid, f"Trip {i}")).fetchone()[0]
                c.execute("INSERT INTO app.comments (tenant_id, itinerary_id, author_id, body) VALUES (%s, %s, %s, 'nice')",
                          (tenant, iid, uid))
                c.execute("INSERT INTO app.likes (tenant_id, itinerary_id, user_id) VALUES (%s, %s, %s)", (tenant, iid, uid))
