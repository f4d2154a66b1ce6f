-- Tenancy SQL: tenant isolation by row-level security. Idempotent: safe to run on every deploy.
-- Applied by a role that can create roles (Cloud SQL: the tenancy_owner user; tests: a superuser).
--
-- Roles
--   tenancy_owner  owns every table and runs migrations; subject to RLS too (FORCE), so even it sees one
--                  tenant at a time unless it sets none (then it sees nothing).
--   tenancy_app    the runtime role: owns nothing, not superuser, not BYPASSRLS, no TRUNCATE, REFERENCES
--                  or TRIGGER on tenant tables.
--   tenancy_replication  what an online tier move's subscription connects as (tenancy/stores/replication.py):
--                  REPLICATION and BYPASSRLS, SELECT on isolated tables only. NOLOGIN except while a move's
--                  slot exists on the server: the move gives it LOGIN and a random password, and takes both
--                  away when the last move ends. While it can log in it reads every tenant's rows (the
--                  publication's row filter is what limits a move to one tenant) and, through any logical
--                  decoding plugin, every change to every table of every database of the server.
-- The current tenant is set transaction-locally with tenancy.set_tenant(id) (never a session-wide SET,
-- which would survive on a pooled connection).

DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_owner') THEN
    CREATE ROLE tenancy_owner NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_app') THEN
    CREATE ROLE tenancy_app NOLOGIN;
  END IF;
  -- Cloud SQL puts users created through its API into cloudsqlsuperuser; the runtime role must not be.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cloudsqlsuperuser')
     AND pg_has_role('tenancy_app', 'cloudsqlsuperuser', 'MEMBER') THEN
    REVOKE cloudsqlsuperuser FROM tenancy_app;
  END IF;
  IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = 'tenancy_app') THEN
    ALTER ROLE tenancy_app NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'tenancy_owner') THEN
    ALTER ROLE tenancy_owner NOBYPASSRLS;
  END IF;
  -- Only a superuser can grant REPLICATION and BYPASSRLS; where the applying role is not one (Cloud SQL), an
  -- operator grants them, and replication.start() refuses to begin while they are missing.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_replication') THEN
    CREATE ROLE tenancy_replication NOLOGIN;
  END IF;
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
     AND (SELECT NOT (rolreplication AND rolbypassrls) FROM pg_roles WHERE rolname = 'tenancy_replication') THEN
    ALTER ROLE tenancy_replication REPLICATION BYPASSRLS;
  END IF;
  -- A login outside moves is a standing credential that decodes everything (a user created through the Cloud SQL
  -- API has one): closed here unless a move's slot shows one replicating now. PostgreSQL 15 lets only a superuser
  -- change a REPLICATION role; where the applying role may not, tenancy moves reports the login.
  IF (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenancy_replication')
     AND NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name ~ '^tmove_') THEN
    BEGIN
      ALTER ROLE tenancy_replication NOLOGIN PASSWORD NULL;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'tenancy_replication can log in and % cannot close it: an operator must (ALTER ROLE tenancy_replication NOLOGIN)', current_user;
    END;
  END IF;
  -- On Cloud SQL the component creates tenancy_replication through the API (it has a login and a password in
  -- Secret Manager), which makes it a cloudsqlsuperuser: it must hold only what replication needs. Cloud SQL
  -- lets a cloudsqlsuperuser grant REPLICATION; BYPASSRLS may need an operator (replication.start checks).
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cloudsqlsuperuser') THEN
    IF pg_has_role('tenancy_replication', 'cloudsqlsuperuser', 'MEMBER')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = 'tenancy_replication') THEN
      REVOKE cloudsqlsuperuser FROM tenancy_replication;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND (SELECT NOT rolreplication FROM pg_roles WHERE rolname = 'tenancy_replication') THEN
      BEGIN
        ALTER ROLE tenancy_replication REPLICATION;
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'tenancy_replication lacks REPLICATION and % cannot grant it: an operator must', current_user;
      END;
    END IF;
  END IF;
  -- On Cloud SQL the operations reach the databases as tenancy_owner, a cloudsqlsuperuser (created through the
  -- API, with CREATEROLE): an online move's slot at the source needs REPLICATION, which Cloud SQL lets a
  -- cloudsqlsuperuser grant (ALTER USER ... WITH REPLICATION, as its Datastream set-up does). Without it
  -- `--method auto` copies the rows inside the freeze and says why.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cloudsqlsuperuser')
     AND pg_has_role('tenancy_owner', 'cloudsqlsuperuser', 'MEMBER')
     AND (SELECT NOT rolreplication FROM pg_roles WHERE rolname = 'tenancy_owner') THEN
    BEGIN
      ALTER ROLE tenancy_owner REPLICATION;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'tenancy_owner lacks REPLICATION and % cannot grant it: online moves copy instead until an operator does', current_user;
    END;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO tenancy_replication', current_database());
  EXECUTE format('GRANT CREATE, CONNECT ON DATABASE %I TO tenancy_owner', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO tenancy_app', current_database());
  EXECUTE format('REVOKE CREATE ON DATABASE %I FROM PUBLIC', current_database());
END
$roles$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Side channels: with the default grants every role can read other sessions' query text (pg_stat_activity,
-- for sessions of its own role -- and every application connection is tenancy_app) and per-table
-- statistics (pg_stat_*_tables, pg_statio_*), which count other tenants' rows and writes in shared tables.
-- A superuser revokes them from PUBLIC and grants them back to the owner and monitoring roles. Where the
-- applying role is not a superuser (Cloud SQL), this cannot be done in SQL: tenancy.audit() reports the
-- channels as 'side channel:' rows (see the README's security section).
DO $side$
DECLARE
  f regprocedure;
  v text;
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE NOTICE 'not a superuser: pg_stat side channels stay open to tenancy_app (tenancy.audit() lists them)';
    RETURN;
  END IF;
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'pg_catalog' AND (p.proname LIKE 'pg\_stat\_get\_%' OR p.proname = 'pg_stat_get_activity')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO tenancy_owner, pg_monitor', f);
  END LOOP;
  FOREACH v IN ARRAY ARRAY['pg_stat_activity', 'pg_stat_all_tables', 'pg_stat_user_tables', 'pg_stat_sys_tables',
                           'pg_stat_xact_all_tables', 'pg_stat_xact_user_tables', 'pg_stat_xact_sys_tables',
                           'pg_statio_all_tables', 'pg_statio_user_tables', 'pg_statio_sys_tables',
                           'pg_stat_all_indexes', 'pg_stat_user_indexes', 'pg_statio_all_indexes', 'pg_statio_user_indexes']
  LOOP
    EXECUTE format('REVOKE SELECT ON pg_catalog.%I FROM PUBLIC', v);
    EXECUTE format('GRANT SELECT ON pg_catalog.%I TO tenancy_owner, pg_monitor', v);
  END LOOP;
END
$side$;

-- pgAudit: DDL and role changes logged as audit records (pgaudit.log = 'ddl,role'). On Cloud SQL the instance flag
-- cloudsql.enable_pgaudit loads the library (components/postgres.py sets it, with pgaudit.log); the extension is
-- then created here, once per database, by the applying role (a cloudsqlsuperuser member there). A server that
-- does not ship pgaudit (a local PostgreSQL) skips it; one that ships it without preloading it is told how to.
-- The catalogue views are named unqualified: pg_catalog is searched first unless a search_path lists it later
-- (tests/test_sql_pgaudit.py does, to stand in for them).
DO $pgaudit$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgaudit') THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgaudit') THEN
    RAISE NOTICE 'pgaudit is not available on this server; DDL and role changes are not audit-logged here';
    RETURN;
  END IF;
  BEGIN
    CREATE EXTENSION pgaudit;
  EXCEPTION WHEN object_not_in_prerequisite_state THEN
    -- pgaudit refuses to load unless it is in shared_preload_libraries.
    RAISE WARNING 'pgaudit is installed but not preloaded (%); add it to shared_preload_libraries (Cloud SQL: '
                  'flag cloudsql.enable_pgaudit=on) and apply again', SQLERRM;
  END;
END
$pgaudit$;

SET ROLE tenancy_owner;

CREATE SCHEMA IF NOT EXISTS tenancy;
REVOKE ALL ON SCHEMA tenancy FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO tenancy_app;

-- The registry: every tenant this database holds rows for, and whether its writes are frozen.
CREATE TABLE IF NOT EXISTS tenancy.tenants (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$' AND length(id) BETWEEN 3 AND 50),
  plan        text NOT NULL,
  model       text NOT NULL CHECK (model IN ('pooled', 'namespace', 'dedicated')),
  state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended', 'frozen', 'readonly')),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
-- The directory of record of this database's tenants (what the platform registers): hostnames, cell, pool shard,
-- data project, identity shard and store names. Names only, never credentials.
ALTER TABLE tenancy.tenants ADD COLUMN IF NOT EXISTS directory jsonb NOT NULL DEFAULT '{}'::jsonb;
REVOKE ALL ON tenancy.tenants FROM PUBLIC, tenancy_app;

-- Which database this is, as the environment's registry names it ('pool-1', 'acme/postgres-1'): written once
-- by the platform's SQL job (or an operation that provisions it), and checked by every operation before it
-- touches the database, so a DSN that reaches another unit's, another tenant's or another environment's
-- database is refused before anything changes.
CREATE TABLE IF NOT EXISTS tenancy.database_identity (
  singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  environment  text NOT NULL,
  name         text NOT NULL,
  claimed_at   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenancy.database_identity FROM PUBLIC, tenancy_app;

-- Tables under isolation (maintained by tenancy.isolate).
CREATE TABLE IF NOT EXISTS tenancy.isolated_tables (
  table_name  regclass PRIMARY KEY,
  added_at    timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenancy.isolated_tables FROM PUBLIC, tenancy_app;

-- Operations on tenant data journal in the environment's registry (sql/registry), not here. Databases set up
-- by an earlier version may still hold tenancy.move_journal and tenancy.data_moves: nothing reads them any more.

-- The tenant of the current transaction, or NULL. Only tenancy.set_tenant() in the *current* transaction
-- counts: it records a binding of the tenant to this transaction's start time, and a tenant set any other
-- way (a session-wide `SET app.current_tenant`, `set_config(..., false)`, a setting left on a pooled
-- connection by an earlier transaction) does not match it, so it yields NULL -- and `tenant_id = NULL`
-- matches no row. NULL when never set and '' after a SET LOCAL ended both become NULL as well.
-- (The epoch form of the timestamp does not depend on TimeZone/DateStyle; parallel workers share the
-- leader's transaction start time and settings.)
CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$
  SELECT CASE WHEN current_setting('tenancy.binding', true)
                   = current_setting('app.current_tenant', true) || '@' || extract(epoch FROM transaction_timestamp())::text
              THEN nullif(current_setting('app.current_tenant', true), '') END
$$;

-- Sets the tenant for the current transaction only (set_config(..., true)), bound to this transaction.
CREATE OR REPLACE FUNCTION tenancy.set_tenant(p_tenant text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tenancy
  AS $$
BEGIN
  IF p_tenant IS NULL OR p_tenant = '' THEN
    RAISE EXCEPTION 'tenancy.set_tenant: a tenant id is required' USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM tenancy.tenants WHERE id = p_tenant) THEN
    RAISE EXCEPTION 'tenancy.set_tenant: unknown tenant %', p_tenant USING ERRCODE = '42704';
  END IF;
  PERFORM set_config('app.current_tenant', p_tenant, true);
  PERFORM set_config('tenancy.binding', p_tenant || '@' || extract(epoch FROM transaction_timestamp())::text, true);
END
$$;
REVOKE ALL ON FUNCTION tenancy.set_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.current_tenant() TO tenancy_app;

-- Refuses writes of a frozen (moving) or read-only tenant, and of tenant ids not in the registry, whoever
-- writes. Only the owner role may write a frozen tenant's rows, which is how a move fills the target.
-- Statement-level, over the statement's transition table: one registry lookup per statement, not per row.
-- (Changing a row's tenant_id is already impossible: RLS USING and WITH CHECK both pin it to the tenant.)
--
-- The freeze drains: every writing statement holds a SHARE lock on its tenant's registry row until its
-- transaction ends, and tenancy.freeze() updates that row, which waits for those locks. So once freeze()
-- returns, no transaction that wrote the tenant before the freeze can still commit, and every later write
-- sees the new state (READ COMMITTED re-reads the locked row; REPEATABLE READ fails with a serialization
-- error) and is refused.
-- Before a writing statement touches a row, it takes the same share lock on its tenant's registry row (the
-- tenant bound to the transaction: row-level security lets it write no other's rows). Every writer then locks the
-- registry row before the tenant's rows, as the operations do (a freeze, a verified delete): the two never wait
-- for each other in opposite orders, so they cannot deadlock. guard_writes still checks every tenant the
-- statement changed.
CREATE OR REPLACE FUNCTION tenancy.lock_tenant() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tenancy
  AS $$
BEGIN
  PERFORM 1 FROM tenancy.tenants WHERE id = tenancy.current_tenant() FOR SHARE;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy.lock_tenant() FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenancy.guard_writes() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tenancy
  AS $$
DECLARE
  bad record;
BEGIN
  PERFORM 1 FROM tenancy.tenants t WHERE t.id IN (SELECT DISTINCT tenant_id FROM changed) ORDER BY t.id FOR SHARE;
  SELECT c.tenant_id, t.state INTO bad
    FROM (SELECT DISTINCT tenant_id FROM changed) c
    LEFT JOIN tenancy.tenants t ON t.id = c.tenant_id
   WHERE t.id IS NULL
      OR (t.state IN ('frozen', 'readonly', 'suspended') AND NOT pg_has_role(session_user, 'tenancy_owner', 'MEMBER'))
   LIMIT 1;
  IF FOUND THEN
    IF bad.state IS NULL THEN
      RAISE EXCEPTION 'tenant % is not registered in tenancy.tenants', bad.tenant_id USING ERRCODE = '42704';
    END IF;
    IF bad.state = 'suspended' THEN
      RAISE EXCEPTION 'tenant % is suspended; writes are refused until it is resumed', bad.tenant_id USING ERRCODE = '25006';
    END IF;
    RAISE EXCEPTION 'tenant % is % (a tier move is in progress); writes are refused until it ends', bad.tenant_id, bad.state
      USING ERRCODE = '25006';
  END IF;
  RETURN NULL;
END
$$;

-- Sets a tenant's state and, when it stops writes (frozen, readonly, suspended), waits until every
-- transaction that has written the tenant has ended (see guard_writes). Call it in its own transaction and
-- commit; bound the wait with lock_timeout. Returns the previous state. Owner or superuser only.
CREATE OR REPLACE FUNCTION tenancy.freeze(p_tenant text, p_state text DEFAULT 'frozen') RETURNS text
  LANGUAGE plpgsql SET search_path = pg_catalog, tenancy
  AS $$
DECLARE
  previous text;
BEGIN
  SELECT state INTO previous FROM tenancy.tenants WHERE id = p_tenant FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'tenancy.freeze: tenant % is not registered in this database', p_tenant USING ERRCODE = '42704';
  END IF;
  UPDATE tenancy.tenants SET state = p_state, updated_at = now() WHERE id = p_tenant;
  RETURN previous;
END
$$;
REVOKE ALL ON FUNCTION tenancy.freeze(text, text) FROM PUBLIC;

-- Online tier moves in progress from this database (tenancy/stores/replication.py), one row per move, created and
-- dropped with its publication: the registry states from before the move (which an abort restores), where its rows
-- go, its verification notes and switched summary, and the replication password while its subscription uses it.
-- Only the owner reads it: the application must not learn that another tenant moves, where, or how many rows it has.
CREATE TABLE IF NOT EXISTS tenancy.replication_moves (
  move        text PRIMARY KEY,       -- the objects' name: tmove_ and 16 hex digits of the operation id's SHA-256
  operation   text NOT NULL,          -- the caller's operation id
  tenant_id   text NOT NULL,
  note        jsonb NOT NULL DEFAULT '{}',
  credential  text,                   -- tenancy_replication's password while this move's subscription connects with it
  started_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenancy.replication_moves FROM PUBLIC, tenancy_app, tenancy_replication;

-- Change tracking of an online tier move (tenancy/stores/replication.py). While a tenant's rows replicate
-- to another database, row triggers named after the move, on both sides, record the key of every row of
-- that tenant that changes: the replicated copy is verified in full before the write freeze, and inside the
-- freeze only the rows recorded here since are compared again. The triggers are ENABLE ALWAYS, so they fire
-- for the subscription's apply worker too (it runs with session_replication_role = replica). Trigger
-- arguments: the move's name, then the table's key columns. Rows go when the move's triggers are dropped.
-- Keys are written in UTC (a timestamptz key reads the same whichever session changed the row).
CREATE TABLE IF NOT EXISTS tenancy.move_changes (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  move        text NOT NULL,
  table_name  text NOT NULL,          -- format('%I.%I'), as tenancy/stores/postgres.py names tables
  key         jsonb NOT NULL          -- the key columns' values, in key order
);
CREATE INDEX IF NOT EXISTS move_changes_move_idx ON tenancy.move_changes (move, id);
REVOKE ALL ON tenancy.move_changes FROM PUBLIC, tenancy_app;

CREATE OR REPLACE FUNCTION tenancy.track_move_change() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tenancy SET TimeZone = 'UTC'
  AS $$
DECLARE
  cols text[] := TG_ARGV[1:TG_NARGS - 1];
  old_key jsonb;
  new_key jsonb;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    SELECT jsonb_agg(to_jsonb(OLD) -> c ORDER BY n) INTO old_key FROM unnest(cols) WITH ORDINALITY u(c, n);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    SELECT jsonb_agg(to_jsonb(NEW) -> c ORDER BY n) INTO new_key FROM unnest(cols) WITH ORDINALITY u(c, n);
  END IF;
  INSERT INTO tenancy.move_changes (move, table_name, key)
  SELECT DISTINCT TG_ARGV[0], format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), k
    FROM unnest(ARRAY[old_key, new_key]) k WHERE k IS NOT NULL;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenancy.track_move_change() FROM PUBLIC;

-- Puts an application table under tenant isolation.
CREATE OR REPLACE FUNCTION tenancy.isolate(p_table regclass) RETURNS void
  LANGUAGE plpgsql
  AS $$
DECLARE
  rel text := p_table::text;
  relname text := (SELECT c.relname FROM pg_class c WHERE c.oid = p_table);
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_table AND attname = 'tenant_id' AND NOT attisdropped) THEN
    RAISE EXCEPTION 'tenancy.isolate: % has no tenant_id column', rel;
  END IF;
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
  -- FORCE: the owner is subject to the policies too.
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
  -- A permissive policy grants access to the current tenant's rows ...
  EXECUTE format('DROP POLICY IF EXISTS tenant_access ON %s', rel);
  EXECUTE format('CREATE POLICY tenant_access ON %s AS PERMISSIVE FOR ALL TO PUBLIC '
                 'USING (tenant_id = tenancy.current_tenant()) WITH CHECK (tenant_id = tenancy.current_tenant())', rel);
  -- ... and a restrictive one is ANDed with every permissive policy, so a policy added later cannot widen it.
  EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', rel);
  EXECUTE format('CREATE POLICY tenant_isolation ON %s AS RESTRICTIVE FOR ALL TO PUBLIC '
                 'USING (tenant_id = tenancy.current_tenant()) WITH CHECK (tenant_id = tenancy.current_tenant())', rel);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (tenant_id)', left(relname, 50) || '_tenant_idx', rel);
  EXECUTE format('DROP TRIGGER IF EXISTS tenancy_guard_writes ON %s', rel);
  EXECUTE format('DROP TRIGGER IF EXISTS tenancy_lock_tenant ON %s', rel);
  EXECUTE format('CREATE TRIGGER tenancy_lock_tenant BEFORE INSERT OR UPDATE OR DELETE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.lock_tenant()', rel);
  EXECUTE format('DROP TRIGGER IF EXISTS tenancy_guard_insert ON %s', rel);
  EXECUTE format('CREATE TRIGGER tenancy_guard_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS changed '
                 'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.guard_writes()', rel);
  EXECUTE format('DROP TRIGGER IF EXISTS tenancy_guard_update ON %s', rel);
  EXECUTE format('CREATE TRIGGER tenancy_guard_update AFTER UPDATE ON %s REFERENCING NEW TABLE AS changed '
                 'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.guard_writes()', rel);
  EXECUTE format('DROP TRIGGER IF EXISTS tenancy_guard_delete ON %s', rel);
  EXECUTE format('CREATE TRIGGER tenancy_guard_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS changed '
                 'FOR EACH STATEMENT EXECUTE FUNCTION tenancy.guard_writes()', rel);
  EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', rel);
  EXECUTE format('REVOKE TRUNCATE, REFERENCES, TRIGGER ON %s FROM tenancy_app', rel);
  EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO tenancy_app', rel);
  -- Online moves read the table through a row-filtered publication as tenancy_replication (read only).
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenancy_replication',
                 (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table));
  EXECUTE format('GRANT SELECT ON %s TO tenancy_replication', rel);
  INSERT INTO tenancy.isolated_tables (table_name) VALUES (p_table) ON CONFLICT DO NOTHING;
END
$$;

-- Everything that would break isolation, as rows (empty = sound). Run by tests and after migrations.
CREATE OR REPLACE FUNCTION tenancy.audit() RETURNS TABLE (problem text)
  LANGUAGE sql STABLE
  AS $$
  -- tables with a tenant_id column that are not under isolation
  SELECT format('table %s has tenant_id but is not isolated (SELECT tenancy.isolate(%L))', c.oid::regclass, c.oid::regclass::text)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
   WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy')
     AND NOT EXISTS (SELECT 1 FROM tenancy.isolated_tables i WHERE i.table_name = c.oid)
  UNION ALL
  -- isolated tables whose RLS is off or not forced
  SELECT format('table %s: row-level security is not enabled and forced', c.oid::regclass)
    FROM tenancy.isolated_tables i JOIN pg_class c ON c.oid = i.table_name
   WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity)
  UNION ALL
  -- isolated tables missing the restrictive tenant policy
  SELECT format('table %s: restrictive policy tenant_isolation is missing', i.table_name)
    FROM tenancy.isolated_tables i
   WHERE NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = i.table_name AND p.polname = 'tenant_isolation'
                      AND NOT p.polpermissive)
  UNION ALL
  -- permissive policies other than ours (they are harmless only while the restrictive one stands)
  SELECT format('table %s: unexpected permissive policy %s', i.table_name, p.polname)
    FROM tenancy.isolated_tables i JOIN pg_policy p ON p.polrelid = i.table_name
   WHERE p.polpermissive AND p.polname <> 'tenant_access'
  UNION ALL
  -- the runtime role must not be privileged, and must own nothing
  SELECT 'role tenancy_app is superuser or BYPASSRLS'
    FROM pg_roles WHERE rolname = 'tenancy_app' AND (rolsuper OR rolbypassrls)
  UNION ALL
  SELECT format('role tenancy_app owns %s', c.oid::regclass)
    FROM pg_class c WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = 'tenancy_app')
  UNION ALL
  -- TRUNCATE ignores RLS; REFERENCES and TRIGGER let a role observe or alter other tenants' rows
  SELECT format('role tenancy_app holds %s on %s', pr.privilege_type, i.table_name)
    FROM tenancy.isolated_tables i
    CROSS JOIN LATERAL (SELECT unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS privilege_type) pr
   WHERE has_table_privilege('tenancy_app', i.table_name, pr.privilege_type)
  UNION ALL
  -- views run with their owner's rights unless security_invoker
  SELECT format('view %s reads isolated table %s without security_invoker', v.oid::regclass, d.refobjid::regclass)
    FROM pg_class v JOIN pg_rewrite r ON r.ev_class = v.oid JOIN pg_depend d ON d.objid = r.oid
    JOIN tenancy.isolated_tables i ON i.table_name = d.refobjid
   WHERE v.relkind IN ('v', 'm')
     AND NOT coalesce('security_invoker=true' = ANY (v.reloptions) OR 'security_invoker=on' = ANY (v.reloptions), false)
  UNION ALL
  -- LEAKPROOF functions may run before the RLS filter and see other tenants' rows
  SELECT format('function %s is LEAKPROOF', p.oid::regprocedure)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE p.proleakproof AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  -- unique keys must include tenant_id, or they reveal other tenants' values
  SELECT format('unique index %s on %s does not include tenant_id', ix.indexrelid::regclass, ix.indrelid::regclass)
    FROM pg_index ix JOIN tenancy.isolated_tables i ON i.table_name = ix.indrelid
   WHERE ix.indisunique
     AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = ix.indrelid AND a.attname = 'tenant_id'
                      AND a.attnum = ANY (ix.indkey))
  UNION ALL
  -- statistics views and functions that show other sessions' queries or other tenants' row counts
  SELECT format('side channel: tenancy_app can read %s (revoke it from PUBLIC as a superuser)', v)
    FROM unnest(ARRAY['pg_stat_activity', 'pg_stat_user_tables', 'pg_statio_user_tables']) v
   WHERE has_table_privilege('tenancy_app', 'pg_catalog.' || v, 'SELECT')
  UNION ALL
  SELECT format('side channel: tenancy_app can execute %s (revoke it from PUBLIC as a superuser)', f)
    FROM unnest(ARRAY['pg_stat_get_activity(integer)', 'pg_stat_get_live_tuples(oid)', 'pg_stat_get_tuples_inserted(oid)']) f
   WHERE has_function_privilege('tenancy_app', f, 'EXECUTE')
$$;

RESET ROLE;
