"""A throwaway PostgreSQL server for tests: tenancy/localservers.py (shared with `make demo`)."""

from tenancy.localservers import PostgresUnavailable, Server, bindir, start  # noqa: F401
