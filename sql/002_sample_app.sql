-- Sample application schema (users, itineraries, comments, likes, audit events, API requests) used by tests, demos and benchmarks.
-- Every key includes tenant_id: foreign keys cannot point across tenants, and unique keys are per tenant
-- (a global UNIQUE(email) would tell one tenant that another has that email).
-- Row ids are random UUIDs (gen_random_uuid(), version 4): an identity or serial column is one sequence for every
-- tenant, so the gap between two of one tenant's ids would count the other tenants' inserts. Per-tenant
-- counters would hide that too, but every insert of a tenant would wait on its counter row until commit, and
-- the counters would have to move with the tenant; a random key needs neither.

SET ROLE tenancy_owner;

CREATE SCHEMA IF NOT EXISTS app;
REVOKE ALL ON SCHEMA app FROM PUBLIC;
GRANT USAGE ON SCHEMA app TO tenancy_app;

CREATE TABLE IF NOT EXISTS app.users (
  tenant_id     text   NOT NULL,
  id            uuid   NOT NULL DEFAULT gen_random_uuid(),
  email         text   NOT NULL,
  display_name  text   NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, email)
);

CREATE TABLE IF NOT EXISTS app.itineraries (
  tenant_id   text   NOT NULL,
  id          uuid   NOT NULL DEFAULT gen_random_uuid(),
  owner_id    uuid   NOT NULL,
  title       text   NOT NULL,
  body        text   NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, owner_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS app.comments (
  tenant_id     text   NOT NULL,
  id            uuid   NOT NULL DEFAULT gen_random_uuid(),
  itinerary_id  uuid   NOT NULL,
  author_id     uuid   NOT NULL,
  body          text   NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, itinerary_id) REFERENCES app.itineraries (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, author_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS app.likes (
  tenant_id     text   NOT NULL,
  itinerary_id  uuid   NOT NULL,
  user_id       uuid   NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, itinerary_id, user_id),
  FOREIGN KEY (tenant_id, itinerary_id) REFERENCES app.itineraries (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, user_id) REFERENCES app.users (tenant_id, id) ON DELETE CASCADE
);

-- Tables of features that live in a tenant's other databases (stores.yaml: postgres-2, postgres-3). They
-- reference no other table, so they can live apart from the users they mention.
CREATE TABLE IF NOT EXISTS app.audit_events (
  tenant_id   text   NOT NULL,
  id          uuid   NOT NULL DEFAULT gen_random_uuid(),
  actor       text   NOT NULL,
  action      text   NOT NULL,
  detail      jsonb  NOT NULL DEFAULT '{}',
  at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS app.api_requests (
  tenant_id   text   NOT NULL,
  id          uuid   NOT NULL DEFAULT gen_random_uuid(),
  client      text   NOT NULL,
  path        text   NOT NULL,
  status      int    NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

-- Databases created before ids were UUIDs hold bigint identity keys (CREATE TABLE IF NOT EXISTS leaves them as
-- they are). They are migrated here, once, in the transaction that applies this file: every id and reference
-- becomes the UUID whose hex digits are the old number (25 -> 00000000-0000-0000-0000-000000000019), so a
-- reference kept outside the database (a URL, a document, a cache) still translates and foreign keys still
-- match; the identity sequences go, and new rows get random UUIDs. Old ids keep telling what they always told;
-- new ones tell nothing. Each table is rewritten under an exclusive lock (the application waits for the
-- rewrite, as for any table-rewriting migration), and the application must expect UUIDs from then on.
-- Refused, changing nothing, while an online move replicates this database (the other database's column types
-- and the keys the move recorded would no longer match: finish or abort it first), and while another table's
-- foreign key references these keys (its columns have to change in the same migration).
DO $$
DECLARE
  keys constant text[][] := ARRAY[
    ['users', 'id'], ['itineraries', 'id'], ['itineraries', 'owner_id'], ['comments', 'id'],
    ['comments', 'itinerary_id'], ['comments', 'author_id'], ['likes', 'itinerary_id'], ['likes', 'user_id'],
    ['audit_events', 'id'], ['api_requests', 'id']];
  tables constant text[] := ARRAY['users', 'itineraries', 'comments', 'likes', 'audit_events', 'api_requests'];
  old text[] := '{}';
  fk record;
  fks text[] := '{}';
  t text;
  changes text;
  i int;
BEGIN
  FOR i IN 1 .. array_length(keys, 1) LOOP
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = format('app.%I', keys[i][1])::regclass
          AND attname = keys[i][2] AND NOT attisdropped) = 'bigint'::regtype THEN
      old := old || format('%s.%s', keys[i][1], keys[i][2]);
    END IF;
  END LOOP;
  IF cardinality(old) = 0 THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_publication_tables WHERE schemaname = 'app' AND tablename = ANY (tables))
     OR EXISTS (SELECT 1 FROM pg_subscription
                 WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())) THEN
    RAISE EXCEPTION 'the sample schema''s bigint keys (%) cannot become UUIDs while an online move replicates this '
                    'database''s tables: finish or abort the move, then apply the SQL again', array_to_string(old, ', ')
      USING ERRCODE = '55006';
  END IF;
  SELECT string_agg(format('%s (%s)', conname, conrelid::regclass), ', ') INTO t FROM pg_constraint
   WHERE contype = 'f' AND confrelid IN (SELECT format('app.%I', x)::regclass FROM unnest(tables) x)
     AND conrelid NOT IN (SELECT format('app.%I', x)::regclass FROM unnest(tables) x);
  IF t IS NOT NULL THEN
    RAISE EXCEPTION 'the sample schema''s bigint keys (%) cannot become UUIDs: foreign keys of other tables reference '
                    'them (%); migrate those tables'' columns in the same change', array_to_string(old, ', '), t
      USING ERRCODE = '55000';
  END IF;
  RAISE NOTICE 'migrating the sample schema''s bigint keys to UUIDs: %', array_to_string(old, ', ');
  -- A key's type cannot change under a foreign key that still has the other type: drop them, put them back after.
  FOR fk IN SELECT conrelid::regclass AS tbl, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE contype = 'f' AND conrelid IN (SELECT format('app.%I', x)::regclass FROM unnest(tables) x) LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    fks := fks || format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.tbl, fk.conname, fk.def);
  END LOOP;
  FOREACH t IN ARRAY tables LOOP
    changes := NULL;
    FOR i IN 1 .. array_length(keys, 1) LOOP
      CONTINUE WHEN keys[i][1] <> t OR NOT format('%s.%s', t, keys[i][2]) = ANY (old);
      -- a separate statement: an identity column cannot change to uuid in the command that drops its identity
      EXECUTE format('ALTER TABLE app.%I ALTER COLUMN %I DROP IDENTITY IF EXISTS', t, keys[i][2]);
      changes := concat_ws(', ', changes,
        format('ALTER COLUMN %1$I TYPE uuid USING lpad(to_hex(%1$I), 32, ''0'')::uuid', keys[i][2]),
        CASE WHEN keys[i][2] = 'id' THEN 'ALTER COLUMN id SET DEFAULT gen_random_uuid()' END);
    END LOOP;
    IF changes IS NOT NULL THEN
      EXECUTE format('ALTER TABLE app.%I %s', t, changes);
    END IF;
  END LOOP;
  FOREACH t IN ARRAY fks LOOP
    EXECUTE t;
  END LOOP;
END
$$;

-- Foreign keys need an index on the referencing side, or each parent delete scans the child table.
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

RESET ROLE;
