-- Providers of wave 2: Amazon SNS and an HTTPS relay the clinic runs itself,
-- a per-link attempt timeout, and the clinic's failover switch with its audit.

ALTER TABLE sms_providers DROP CONSTRAINT sms_providers_kind_check;
ALTER TABLE sms_providers ADD CONSTRAINT sms_providers_kind_check
  CHECK (kind IN ('twilio', 'telnyx', 'sandbox', 'sns', 'relay'));

-- NULL: the process's SMS_ATTEMPT_TIMEOUT_MS. A relay on the far side of the
-- world, or a gateway that queues, may need longer than the primary's.
ALTER TABLE sms_providers ADD COLUMN attempt_timeout_ms integer
  CHECK (attempt_timeout_ms BETWEEN 100 AND 60000);

-- Off: only position 0 is used. Clinics configured before this migration keep
-- failing over (true); a clinic's first configuration starts off unless it says
-- otherwise (src/sms/config.ts, NEW_CLINIC_FAILOVER).
ALTER TABLE sms_settings ADD COLUMN failover_enabled boolean NOT NULL DEFAULT true;

-- Who flipped the switch, when, from what to what. from_enabled is NULL for a
-- clinic's first SMS configuration.
CREATE TABLE sms_failover_changes (
  id           bigserial PRIMARY KEY,
  org_id       uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  actor        text NOT NULL CHECK (actor ~ '^[a-z][a-z0-9_:.-]{0,63}$'),
  from_enabled boolean,
  to_enabled   boolean NOT NULL,
  at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_failover_changes_org_idx ON sms_failover_changes (org_id, at DESC);

ALTER TABLE sms_failover_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sms_failover_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY sms_failover_changes_tenant ON sms_failover_changes
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

-- An audit trail is appended to, never rewritten.
GRANT SELECT, INSERT ON sms_failover_changes TO clinic_app;
GRANT USAGE ON SEQUENCE sms_failover_changes_id_seq TO clinic_app;
