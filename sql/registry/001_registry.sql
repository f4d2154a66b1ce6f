-- The registry of record of one environment (tenancy/operations/registry.py): a small PostgreSQL database in
-- the global stack. Idempotent: applied by `tenancy registry init` and on every deploy of the global stack.
--
--   registry.environment  the one environment this registry serves (an operation against another
--                         environment's registry is refused before anything changes)
--   registry.tenants      per tenant: plan, model, state, directory entry, where each of its stores is now,
--                         and the operation in progress. Unit databases keep their tenancy.tenants rows, which
--                         the operations drive from here, so each database still refuses a frozen tenant's
--                         writes itself.
--   registry.databases    every database a tenant's stores live in, by the name the layout gives it
--                         ('pool-1', 'acme/postgres-1'): how to reach it (never a password) and, pinned at the
--                         first verified contact, the server's system identifier, the database's oid and name
--   registry.operations   every operation on tenant data (tier moves, offboard, place, data move, suspend,
--                         resume): what it is, the command that resumes it, how far it got
--   registry.journal      what each phase of each operation did, in order
--   registry.cleanup      what an operation created or must remove, recorded before it is created, and
--                         dropped by exactly that record on success or abort (Citus's pg_dist_cleanup)
--   registry.leases       one per tenant with an unfinished operation: the operation that holds it and the
--                         registry session of the process running it (which also holds an advisory lock on
--                         the tenant, released by the server the moment that process dies)
--
-- Only the registry's owner (the role operations connect as) reads or writes these tables.

CREATE SCHEMA IF NOT EXISTS registry;
REVOKE ALL ON SCHEMA registry FROM PUBLIC;

CREATE TABLE IF NOT EXISTS registry.environment (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  env         text NOT NULL CHECK (env ~ '^[a-z][a-z0-9-]{0,30}$'),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS registry.operations (
  id             text PRIMARY KEY,
  tenant_id      text NOT NULL,
  kind           text NOT NULL CHECK (kind IN ('upgrade', 'downgrade', 'offboard', 'place', 'data-move', 'suspend',
                                               'resume', 'restore')),
  args           jsonb NOT NULL DEFAULT '{}',     -- what makes a later run the same operation
  settings       jsonb NOT NULL DEFAULT '{}',     -- as the operation was started (archive, discards, windows)
  command        text NOT NULL,                   -- the command that resumes it
  abort_command  text,                            -- the command that aborts it (none once it cannot be aborted)
  status         text NOT NULL CHECK (status IN ('running', 'waiting', 'done', 'aborted')),
  phase          text,
  message        text,
  started_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz
);
CREATE INDEX IF NOT EXISTS operations_tenant_idx ON registry.operations (tenant_id, started_at);
CREATE INDEX IF NOT EXISTS operations_open_idx ON registry.operations (status) WHERE status IN ('running', 'waiting');

CREATE TABLE IF NOT EXISTS registry.tenants (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$' AND length(id) BETWEEN 3 AND 50),
  plan        text NOT NULL,
  model       text NOT NULL CHECK (model IN ('pooled', 'namespace', 'dedicated')),
  state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended', 'frozen', 'offboarded')),
  directory   jsonb NOT NULL DEFAULT '{}',
  stores      jsonb NOT NULL DEFAULT '{}',        -- store name -> where it is now (database name, bucket, ...)
  operation   text REFERENCES registry.operations (id),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tenants_state_idx ON registry.tenants (state) WHERE state <> 'active';

CREATE TABLE IF NOT EXISTS registry.databases (
  name               text PRIMARY KEY,
  unit               text NOT NULL,                -- what it serves: 'pool-1', or 'tenant:acme'
  connection         jsonb NOT NULL,               -- host/port/dbname/user, or instance/dbname/user; never a password
  source             text NOT NULL DEFAULT 'deploy' CHECK (source IN ('deploy', 'operator')),
  system_identifier  text,
  database_oid       bigint,
  datname            text,
  pinned_at          timestamptz,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK (NOT connection ? 'password')
);

CREATE TABLE IF NOT EXISTS registry.journal (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  operation  text NOT NULL REFERENCES registry.operations (id),
  phase      text NOT NULL,
  event      text NOT NULL CHECK (event IN ('started', 'done', 'progress', 'failed', 'refused')),
  detail     jsonb NOT NULL DEFAULT '{}',
  at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS journal_operation_idx ON registry.journal (operation, seq);

CREATE TABLE IF NOT EXISTS registry.cleanup (
  operation  text NOT NULL REFERENCES registry.operations (id),
  seq        int NOT NULL,
  kind       text NOT NULL,
  ref        jsonb NOT NULL,
  policy     text NOT NULL CHECK (policy IN ('on_abort', 'on_success', 'always')),
  recorded_at timestamptz NOT NULL DEFAULT now(),
  done_at    timestamptz,
  PRIMARY KEY (operation, seq),
  UNIQUE (operation, kind, ref)
);

CREATE TABLE IF NOT EXISTS registry.leases (
  tenant_id    text PRIMARY KEY,
  operation    text NOT NULL UNIQUE REFERENCES registry.operations (id),
  token        uuid NOT NULL,
  backend_pid  int,
  holder       jsonb NOT NULL DEFAULT '{}',       -- host, pid, user of the process running it
  taken_at     timestamptz NOT NULL DEFAULT now()
);

-- The advisory lock key of a tenant's lease (the registry database holds nothing else that locks).
CREATE OR REPLACE FUNCTION registry.lease_key(p_tenant text) RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT hashtextextended('tenancy-lease:' || p_tenant, 0) $$;

REVOKE ALL ON ALL TABLES IN SCHEMA registry FROM PUBLIC;

-- What an application reads to find its tenants' databases (tenancy/client.py): each tenant's state and stores,
-- and how each database is reached -- never the journal, the leases or another table. Granted to the login the
-- application's registry connections use.
DO $reader$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_registry_reader') THEN
    CREATE ROLE tenancy_registry_reader NOLOGIN;
  END IF;
END
$reader$;
GRANT USAGE ON SCHEMA registry TO tenancy_registry_reader;
-- `operation`: a client records the documents it writes while a move copies the tenant (tenancy/client.py)
GRANT SELECT (id, state, stores, operation) ON registry.tenants TO tenancy_registry_reader;
GRANT SELECT (name, connection) ON registry.databases TO tenancy_registry_reader;
