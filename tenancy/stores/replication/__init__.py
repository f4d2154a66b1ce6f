"""Online tenant moves between PostgreSQL databases through row-filtered logical replication.

The tenant keeps writing at the source while its rows copy; writes pause only for the switch.

    start        publication `FOR TABLE t WHERE (tenant_id = '<id>'), ...` on the source, its slot, and a
                 subscription on the target that copies the tenant's rows and then streams its changes
    wait_synced  every table synchronised (pg_subscription_rel state 'r'); returns the lag in bytes
    preverify    while the tenant writes: change tracking on at both sides, every row of the replicated copy
                 compared with the source once (key ranges, at LSN-coordinated snapshots), then the changed
                 rows until few remain (tenancy/stores/replica_verify.py)
    switch       preverify (cheap when it just ran), then: freeze the source, wait until the slot confirmed
                 the freeze's LSN, compare only the rows changed since the last comparison, move sequences,
                 drop subscription and slot, target 'active', source 'readonly'; after the freeze: the
                 source's summary in the snapshot that was verified, tracking and publication dropped
    cleanup      drop whatever replication objects (and tracking triggers) of the move remain
    abort        cleanup, then the target's partial copy goes and both registries return to their states
    orphans      slots, publications, subscriptions and tracking triggers that no move owns

The freeze therefore lasts the drain, the catch-up of the last changes, a comparison of the rows changed
since the last pre-freeze pass (a number that follows the write rate, not the tenant's size), the
sequences and dropping the subscription.

How the target's defences meet the apply worker. The subscription's workers (initial copy and apply) run
with `session_replication_role = replica`, so ordinary triggers -- the write guard among them, and the
foreign-key triggers -- do not fire for replicated rows; the subscription owner is a superuser (PostgreSQL 15
requires one to create a subscription: the target DSN's user), so row-level security does not filter it.
The application is kept out instead: the target's registry says `frozen` for the tenant from `start` until
the switch, so the write guard refuses every application write there.

How the source's defences meet the publisher. The subscription connects as `tenancy_replication`
(REPLICATION, BYPASSRLS, SELECT on isolated tables only). Without BYPASSRLS the initial copy would see zero
rows and report success; the row filter, not RLS, limits the rows to the tenant. The filter may only use
replica-identity columns while UPDATE/DELETE are published -- otherwise every UPDATE of that table, for
every tenant, starts failing -- so `start` refuses a table whose replica identity lacks tenant_id. TRUNCATE
is not published: it ignores row filters and would empty the target for every tenant.

The replication credential. `tenancy_replication` can log in only while a move's subscription needs it:
`start` gives it LOGIN and a random password (set as a SCRAM verifier computed here, so the source never
sees the password itself), and once no move's slot remains on the source's server (slots are the live
moves: a subscription connects through one), the role goes back to NOLOGIN with a new random password nobody
knows. Moves that replicate from one server at the same time share the live password (kept in their
`tenancy.replication_moves` rows, which only the owner reads, and erased with the last of them): giving the
second one a fresh password would lock out the first one's workers the next time they connect (each table's
initial copy opens a new connection). No statement the servers log holds the password or the verifier:
they travel in the connection's startup packet (`options=-c tenancy.move_secret=...`, which neither
`log_statement` nor pgAudit logs) and a DO block reads them from there. pgAudit still logs the statements
a DO block runs: a role's password it shows as <REDACTED>, and for the subscription's CONNECTION the DO block
switches off `pgaudit.log_statement` for its own transaction (the audit record keeps the class and command).
An error inside the block is raised again without its context, which would quote the statement.

Move state (the registry states from before the move, which `abort` restores; the time of the last full pass,
`verified`, cleared whenever tracking had to be switched on again; the switched summary; the live password)
is a row of `tenancy.replication_moves` in the source database, created and dropped with the publication.
The application role has no privilege on it: a catalogue comment, which every role can read, would tell one
tenant another's row counts, checksums and destination.

Resumable: each step looks at what exists (state row and publication, slot, subscription, registry states) and
continues. Object names are derived from the caller's operation id (`names(move)`: `tmove_` and 16 hex digits
of its SHA-256), never from the tenant, so a re-run of the same operation finds its own objects and no name
tells which tenant moves. Within one cluster the slot is created before the subscription
(`create_slot = false`): a subscription creating its own slot would wait for its own transaction.

The package, by role: `common` (names, errors, connections, tables, what exists), `credential` (the replication
login), `publication` (start, wait for sync), `prefreeze` (verification before the freeze), `switching` (the
switch), `teardown` (cleanup, abort, orphans). Callers use the names below.
"""

from __future__ import annotations

from tenancy.stores.replication.common import (NAME_RE, PREFIX, REPLICATION_USER, SECRET_SETTING, SYNC_SLOT_RE,
                                               VERIFIER_SETTING, Checkpoint, MoveNames, Orphan, ReplicaIdentityError,
                                               ReplicationError, SyncTimeout, database_of, names,
                                               replica_identity_problems, status, subscriber_conninfo)
from tenancy.stores.replication.prefreeze import PreverifyReport, preverify
from tenancy.stores.replication.publication import lag, start, unavailable, wait_synced
from tenancy.stores.replication.switching import SwitchReport, switch
from tenancy.stores.replication.teardown import abort, cleanup, orphans

__all__ = ["NAME_RE", "PREFIX", "REPLICATION_USER", "SECRET_SETTING", "SYNC_SLOT_RE", "VERIFIER_SETTING", "Checkpoint",
           "MoveNames", "Orphan", "PreverifyReport", "ReplicaIdentityError", "ReplicationError", "SwitchReport",
           "SyncTimeout", "abort", "cleanup", "database_of", "lag", "names", "orphans", "preverify",
           "replica_identity_problems", "start", "status", "subscriber_conninfo", "switch", "unavailable",
           "wait_synced"]
