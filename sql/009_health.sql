-- Provider health shared by every process (src/sms/health.ts).

-- One row per distinct provider account: the adapter's account key (a Twilio
-- account SID, a hash prefix of a Telnyx API key) plus a hash prefix of the
-- credentials the probe used, so that two clinics of an agency share a verdict
-- only when they hold the same credentials (one clinic's stale token must not
-- mark the account down for the others). Whichever process claims a row's
-- lease probes it; every process reads every row. No org_id, no credentials,
-- no patient data: only the key, the provider kind and what the probe found.
CREATE TABLE sms_provider_health (
  account_key          text NOT NULL CHECK (length(account_key) BETWEEN 1 AND 200),
  credentials_fp       text NOT NULL CHECK (credentials_fp ~ '^([0-9a-f]{16}|-)$'),
  kind                 text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,19}$'),
  -- The next probe is due once this has passed (NULL: never probed). A process
  -- claims the probe by moving it one interval on, so N processes make one.
  lease_until          timestamptz,
  -- The process (host:pid:nonce) that claimed the last probe.
  leased_by            text,
  probed_at            timestamptz,
  ok                   boolean,
  latency_ms           integer CHECK (latency_ms >= 0),
  error_class          text CHECK (error_class IN ('transient', 'provider', 'ambiguous')),
  error_code           text CHECK (length(error_code) <= 40),
  consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
  -- First failed probe of the current run of failures.
  down_since           timestamptz,
  CHECK ((ok IS NULL) = (probed_at IS NULL)),
  PRIMARY KEY (account_key, credentials_fp)
);

-- Only the worker role probes and reads; the request role never sees the table.
GRANT SELECT ON sms_provider_health TO clinic_worker;
GRANT INSERT (account_key, credentials_fp, kind) ON sms_provider_health TO clinic_worker;
GRANT UPDATE (lease_until, leased_by, probed_at, ok, latency_ms, error_class, error_code, consecutive_failures, down_since)
  ON sms_provider_health TO clinic_worker;

-- To find the accounts, the monitor lists every clinic's chain in an operator
-- transaction (withOperator: app.operator = 'on'), read-only, like the other
-- operator views of 005. Outside such a transaction the tenant policies alone apply.
CREATE POLICY sms_providers_operator_read ON sms_providers FOR SELECT TO clinic_worker USING ((SELECT operator_scope()));
CREATE POLICY sms_settings_operator_read ON sms_settings FOR SELECT TO clinic_worker USING ((SELECT operator_scope()));
