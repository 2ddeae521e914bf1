-- The operator console (/ops): its sessions, the registry of running
-- processes, and the operator-scope reads its overview needs.

-- A signed-in operator. Only hashes are kept: a copy of this table (a backup,
-- a replica) signs nobody in. No patient data, no org_id: a session is the
-- operator's, across clinics. expires_at slides forward with use (idle
-- timeout, OPS_SESSION_TTL_MINUTES) but never past created_at + the absolute
-- cap the service applies.
CREATE TABLE ops_sessions (
  id_hash      text PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
  csrf_hash    text NOT NULL CHECK (csrf_hash ~ '^[0-9a-f]{64}$'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  CHECK (expires_at > created_at)
);
CREATE INDEX ops_sessions_expires_idx ON ops_sessions (expires_at);

-- One row per running service process, written every few seconds by the
-- process itself (src/ops/processes.ts) and removed when it stops cleanly.
-- A row whose last_seen_at is old belongs to a process that died: the console
-- shows it as gone, and the next heartbeat of any process drops it after a day.
CREATE TABLE ops_processes (
  id             text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
  host           text NOT NULL CHECK (length(host) BETWEEN 1 AND 255),
  pid            integer NOT NULL CHECK (pid > 0),
  version        text NOT NULL CHECK (length(version) BETWEEN 1 AND 50),
  started_at     timestamptz NOT NULL,
  -- What runs in it: the outbox worker, the provider health probes; and their
  -- ids, as they appear in sms_attempts.worker and sms_provider_health.leased_by.
  worker_enabled boolean NOT NULL,
  health_probing boolean NOT NULL,
  worker_id      text CHECK (length(worker_id) <= 200),
  monitor_id     text CHECK (length(monitor_id) <= 200),
  last_seen_at   timestamptz NOT NULL DEFAULT now()
);

-- Both are the operator's, read and written through the worker role, the one
-- that already serves operator views; the request role (which every tool call
-- uses) gets nothing here, so no statement on the tool path can mint a session.
GRANT SELECT, INSERT, DELETE ON ops_sessions TO clinic_worker;
GRANT UPDATE (expires_at, last_seen_at) ON ops_sessions TO clinic_worker;
GRANT SELECT, INSERT, DELETE ON ops_processes TO clinic_worker;
GRANT UPDATE (version, worker_enabled, health_probing, worker_id, monitor_id, last_seen_at) ON ops_processes TO clinic_worker;

-- The overview counts each clinic's bookings made today, in the clinic's own
-- zone. A clinic's local today began less than 25 hours ago (a day the clocks
-- fall back), so operator scope sees only appointments created in the last 26
-- hours, and the status module reads only their org_id and created_at. Older
-- appointments, the bulk of any clinic's book, stay invisible to it. A SQL
-- function returning counts would be narrower still, but FORCE ROW LEVEL
-- SECURITY binds its owner too, so it would need a policy like this one anyway.
CREATE POLICY appointments_operator_recent ON appointments FOR SELECT TO clinic_worker
  USING ((SELECT operator_scope()) AND created_at > now() - interval '26 hours');
-- Appointments are written in time order: a BRIN index finds the last day for
-- almost nothing on the booking path.
CREATE INDEX appointments_created_brin ON appointments USING brin (created_at);

-- The status figures count each clinic's opt-outs (count only, no phones) in
-- operator scope, like the other operator reads of 005 and 009.
CREATE POLICY sms_opt_outs_operator_read ON sms_opt_outs FOR SELECT TO clinic_worker USING ((SELECT operator_scope()));
