-- Tenancy SQL: tenant isolation by row-level security. Idempotent: safe to run on every deploy.
-- Applied by a role that can create roles (Cloud SQL: the tenancy_owner user; tests: a superuser).
--
-- Roles
--   tenancy_owner  owns every table and runs migrations; subject to RLS too (FORCE), so even it sees one
--                  tenant at a time unless it sets none (then it sees nothing).
--   tenancy_app    the runtime role: owns nothing, not superuser, not BYPASSRLS, no TRUNCATE, REFERENCES
--                  or TRIGGER on tenant tables.
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
  EXECUTE format('GRANT CREATE, CONNECT ON DATABASE %I TO tenancy_owner', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO tenancy_app', current_database());
  EXECUTE format('REVOKE CREATE ON DATABASE %I FROM PUBLIC', current_database());
END
$roles$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

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
REVOKE ALL ON tenancy.tenants FROM PUBLIC, tenancy_app;

-- Tables under isolation (maintained by tenancy.isolate).
CREATE TABLE IF NOT EXISTS tenancy.isolated_tables (
  table_name  regclass PRIMARY KEY,
  added_at    timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenancy.isolated_tables FROM PUBLIC, tenancy_app;

-- Journal of tier moves: each phase of each move, so an interrupted move resumes where it stopped.
CREATE TABLE IF NOT EXISTS tenancy.move_journal (
  move_id     text NOT NULL,
  tenant_id   text NOT NULL,
  phase       text NOT NULL,
  status      text NOT NULL CHECK (status IN ('started', 'done', 'aborted')),
  detail      jsonb NOT NULL DEFAULT '{}',
  at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (move_id, phase)
);
REVOKE ALL ON tenancy.move_journal FROM PUBLIC, tenancy_app;

-- The tenant of the current transaction, or NULL. NULL when never set and '' after a SET LOCAL ended
-- earlier in the session both become NULL, and `tenant_id = NULL` matches no row: no tenant, no rows.
CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.current_tenant', true), '') $$;

-- Sets the tenant for the current transaction only (set_config(..., true)).
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
END
$$;
REVOKE ALL ON FUNCTION tenancy.set_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.set_tenant(text) TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.current_tenant() TO tenancy_app;

-- Refuses writes of a frozen (moving) or read-only tenant, and of tenant ids not in the registry, whoever
-- writes. Only the owner role may write a frozen tenant's rows, which is how a move fills the target.
-- Statement-level, over the statement's transition table: one registry lookup per statement, not per row.
-- (Changing a row's tenant_id is already impossible: RLS USING and WITH CHECK both pin it to the tenant.)
CREATE OR REPLACE FUNCTION tenancy.guard_writes() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, tenancy
  AS $$
DECLARE
  bad record;
BEGIN
  SELECT c.tenant_id, t.state INTO bad
    FROM (SELECT DISTINCT tenant_id FROM changed) c
    LEFT JOIN tenancy.tenants t ON t.id = c.tenant_id
   WHERE t.id IS NULL
      OR (t.state IN ('frozen', 'readonly') AND NOT pg_has_role(session_user, 'tenancy_owner', 'MEMBER'))
   LIMIT 1;
  IF FOUND THEN
    IF bad.state IS NULL THEN
      RAISE EXCEPTION 'tenant % is not registered in tenancy.tenants', bad.tenant_id USING ERRCODE = '42704';
    END IF;
    RAISE EXCEPTION 'tenant % is % (a tier move is in progress); writes are refused until it ends', bad.tenant_id, bad.state
      USING ERRCODE = '25006';
  END IF;
  RETURN NULL;
END
$$;

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
$$;

RESET ROLE;
