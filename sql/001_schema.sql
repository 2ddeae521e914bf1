-- Core tenant schema: clinics (orgs), their catalogue, OAuth clients, appointments
-- and idempotency keys. Every tenant table carries org_id and is guarded by
-- row-level security; the app connects as clinic_app, which is neither owner,
-- superuser nor BYPASSRLS, and sets app.org_id per transaction.

CREATE EXTENSION IF NOT EXISTS btree_gist;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clinic_app') THEN
    CREATE ROLE clinic_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clinic_worker') THEN
    CREATE ROLE clinic_worker NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END $$;

-- The current tenant, NULL when unset. NULLIF matters: once a pooled connection
-- has run set_config(..., true), the setting reads back as '' rather than NULL,
-- and a bare ::uuid cast would raise instead of matching nothing.
CREATE FUNCTION current_org() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('app.org_id', true), '')::uuid $$;

CREATE TABLE orgs (
  id                    uuid PRIMARY KEY,
  name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  time_zone             text NOT NULL,
  default_region        text NOT NULL DEFAULT 'US' CHECK (default_region ~ '^[A-Z]{2}$'),
  -- {"1": [["09:00","17:00"]], ..., "7": []} keyed by ISO weekday, clinic-local.
  opening_hours         jsonb NOT NULL,
  slot_interval_minutes integer NOT NULL DEFAULT 15 CHECK (slot_interval_minutes BETWEEN 5 AND 120),
  active                boolean NOT NULL DEFAULT true,
  -- Optional per-org Vapi layers: the legacy shared secret is kept as a SHA-256
  -- hash; the HMAC key must be usable, so it is encrypted (AES-256-GCM).
  vapi_secret_sha256    text,
  vapi_hmac_secret_enc  text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE services (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id           uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  code             text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 480),
  active           boolean NOT NULL DEFAULT true,
  UNIQUE (org_id, code),
  UNIQUE (org_id, id)
);

CREATE TABLE practitioners (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id        uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  -- NULL means the practitioner offers every service of the clinic.
  service_codes text[],
  active        boolean NOT NULL DEFAULT true,
  UNIQUE (org_id, name),
  UNIQUE (org_id, id)
);

CREATE TABLE oauth_clients (
  client_id   text PRIMARY KEY,
  org_id      uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  name        text NOT NULL DEFAULT 'default',
  secret_hash text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX oauth_clients_org_idx ON oauth_clients (org_id);

CREATE TABLE appointments (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id          uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  practitioner_id uuid NOT NULL,
  service_id      uuid NOT NULL,
  patient_name    text NOT NULL CHECK (length(patient_name) BETWEEN 1 AND 200),
  patient_phone   text NOT NULL CHECK (patient_phone ~ '^\+[1-9][0-9]{6,14}$'),
  patient_email   text,
  starts_at       timestamptz NOT NULL,
  ends_at         timestamptz NOT NULL,
  status          text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'cancelled')),
  call_id         text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  cancelled_at    timestamptz,
  CHECK (ends_at > starts_at),
  -- Composite keys keep a row from pointing at another clinic's practitioner.
  FOREIGN KEY (org_id, practitioner_id) REFERENCES practitioners (org_id, id),
  FOREIGN KEY (org_id, service_id) REFERENCES services (org_id, id),
  -- The backstop: whatever path writes, one practitioner never has two live
  -- appointments overlapping in time. Violations surface as SQLSTATE 23P01.
  CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
    org_id WITH =,
    practitioner_id WITH =,
    tstzrange(starts_at, ends_at, '[)') WITH &&
  ) WHERE (status <> 'cancelled')
);
CREATE INDEX appointments_patient_idx ON appointments (org_id, patient_phone, starts_at);
CREATE INDEX appointments_call_idx ON appointments (org_id, call_id) WHERE call_id IS NOT NULL;

-- One row per tool call (key = platform + toolCallId), claimed in the booking's
-- own transaction. request_hash detects a key reused with different arguments.
CREATE TABLE idempotency_keys (
  org_id       uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
  tool         text NOT NULL,
  request_hash text NOT NULL,
  response     jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Row-level security. FORCE makes the owner obey the policies as well; only a
-- superuser or BYPASSRLS role could skip them, and the app is neither.
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY orgs_tenant ON orgs
  USING (id = (SELECT current_org())) WITH CHECK (id = (SELECT current_org()));

ALTER TABLE services ENABLE ROW LEVEL SECURITY;
ALTER TABLE services FORCE ROW LEVEL SECURITY;
CREATE POLICY services_tenant ON services
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

ALTER TABLE practitioners ENABLE ROW LEVEL SECURITY;
ALTER TABLE practitioners FORCE ROW LEVEL SECURITY;
CREATE POLICY practitioners_tenant ON practitioners
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY appointments_tenant ON appointments
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_tenant ON idempotency_keys
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

ALTER TABLE oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_clients_tenant ON oauth_clients
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
-- The token endpoint does not know the org yet: it may read exactly the one
-- client row it names through app.client_id, and nothing else.
CREATE POLICY oauth_clients_token_lookup ON oauth_clients FOR SELECT
  USING (client_id = NULLIF(current_setting('app.client_id', true), ''));

GRANT USAGE ON SCHEMA public TO clinic_app, clinic_worker;
-- Readiness checks read which migrations are applied (the runner creates this table).
GRANT SELECT ON schema_migrations TO clinic_app, clinic_worker;
GRANT SELECT, INSERT, UPDATE ON orgs, services, practitioners, appointments, idempotency_keys, oauth_clients TO clinic_app;
GRANT DELETE ON services, practitioners, idempotency_keys TO clinic_app;
GRANT SELECT ON orgs, services, practitioners, appointments TO clinic_worker;
