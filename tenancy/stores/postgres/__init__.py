"""The PostgreSQL store: one tenant's rows in a database carrying the tenancy SQL.

Only one tenant's rows are ever read or written: every statement runs with the tenant set through
`tenancy.set_tenant` (row-level security filters the rest, even for the owner role) and names the tenant.

- Tables are the database's `tenancy.isolated_tables`, known by oid and named from pg_namespace/pg_class
  (`app."Trips"`, `"my.schema"."select"`), copied parents first (foreign-key order); a caller may pick some.
- Rows travel as binary COPY streams, source to target, never row by row; the whole copy is one target
  transaction, so a kill leaves the target as it was.
- Summaries count rows and take an ordered checksum (md5 over the rows' md5s, primary-key order, else the
  row's text) over `ROW(columns by name)::text`, with the output settings pinned in the transaction, so any
  column type (json, bytea, arrays, timestamptz, floats) sums the same way in two databases.
- A copy (`copy_verified`) is one target transaction: the rows streamed in and verified against the source's
  snapshot of them, or nothing; source and target being one database is refused. The operation that runs it
  (tenancy/operations) journals it, freezes first (`freeze_in`, the one freeze) and deletes the source's rows
  (`delete`) only while they still match what was verified.

Connect as the owner role (`tenancy_owner`) or a superuser: the owner may write a frozen tenant's rows.

The package, by role: `connection` (connections, one-line errors, the tenant of a transaction), `tables` (the
isolated tables in copy order), `checksums` (counts, checksums, summaries), `state` (the registry row and the
freeze), `mover` (copy, verify, delete), `exports` (export, verify, import). Callers use the names below.
"""

from __future__ import annotations

from tenancy.stores.postgres.checksums import TableCheck, summary, table_checksum
from tenancy.stores.postgres.connection import (CONNECT_TIMEOUT_S, FREEZE_TIMEOUT_S, STABLE_OUTPUT, DataError,
                                                DataInputError, VerificationError, as_tenant, connect, first_line)
from tenancy.stores.postgres.exports import export, import_export, read_export_manifest, verify_export
from tenancy.stores.postgres.mover import (MoveReport, advance_sequences, clear_tenant, copy_tenant, copy_verified,
                                           database_of, delete, verify)
from tenancy.stores.postgres.state import FreezeTimeout, freeze, freeze_in, set_state, unregister
from tenancy.stores.postgres.tables import Table, all_tables, isolated_tables

__all__ = ["CONNECT_TIMEOUT_S", "FREEZE_TIMEOUT_S", "STABLE_OUTPUT", "DataError", "DataInputError", "FreezeTimeout",
           "MoveReport", "Table", "TableCheck", "VerificationError", "advance_sequences", "all_tables", "as_tenant",
           "clear_tenant", "connect", "copy_tenant", "copy_verified", "database_of", "delete", "export", "first_line",
           "freeze", "freeze_in", "import_export", "isolated_tables", "read_export_manifest", "set_state", "summary",
           "table_checksum", "unregister", "verify", "verify_export"]
