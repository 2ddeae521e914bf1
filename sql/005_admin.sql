-- Operator views and the clinic inbox.

-- The token endpoint's lookup in one round trip: the one client row the
-- request names (visible through app.client_id), then whether its clinic is
-- active (visible once app.org_id is that client's org). A deactivated clinic
-- gets no new tokens.
CREATE FUNCTION oauth_client_lookup(p_client text) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  c        oauth_clients%ROWTYPE;
  v_active boolean;
BEGIN
  PERFORM set_config('app.client_id', p_client, true);
  SELECT * INTO c FROM oauth_clients WHERE client_id = p_client;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  PERFORM set_config('app.org_id', c.org_id::text, true);
  SELECT active INTO v_active FROM orgs WHERE id = c.org_id;
  RETURN jsonb_build_object('clientId', c.client_id, 'orgId', c.org_id, 'secretHash', c.secret_hash,
                            'revoked', c.revoked_at IS NOT NULL, 'orgActive', COALESCE(v_active, false));
END
$$;
GRANT EXECUTE ON FUNCTION oauth_client_lookup(text) TO clinic_app;

-- Operator views list every clinic (GET /api/admin/orgs, the console). Only the
-- worker role may, only to read, and only in a transaction that says so with
-- app.operator = 'on' (withOperator() in src/db/pool.ts): with nothing set it
-- still sees no clinic at all.
CREATE FUNCTION operator_scope() RETURNS boolean
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT COALESCE(current_setting('app.operator', true), '') = 'on' $$;
CREATE POLICY orgs_operator_read ON orgs FOR SELECT TO clinic_worker USING ((SELECT operator_scope()));

-- What patients and callers left for the clinic: SMS replies that are not a
-- keyword, messages taken by the voice agent, reschedule requests. One table so
-- the front desk reads one list.
CREATE TABLE inbox_messages (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id              uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  -- sms: an inbound text; voice: left with the voice agent.
  channel             text NOT NULL CHECK (channel IN ('sms', 'voice')),
  -- What it is, e.g. sms_reply, reschedule_request, voice_message.
  kind                text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,39}$'),
  from_phone          text CHECK (from_phone ~ '^\+[1-9][0-9]{6,14}$'),
  patient_name        text CHECK (length(patient_name) BETWEEN 1 AND 200),
  body                text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
  appointment_id      uuid,
  -- For SMS: which provider delivered it and its id there (dedupes webhook retries).
  provider            text,
  provider_message_id text,
  -- For voice: the platform and call it came from.
  call_id             text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  handled_at          timestamptz
);
CREATE UNIQUE INDEX inbox_messages_provider_idx ON inbox_messages (org_id, provider, provider_message_id)
  WHERE provider_message_id IS NOT NULL;
CREATE INDEX inbox_messages_list_idx ON inbox_messages (org_id, created_at DESC, id DESC);

ALTER TABLE inbox_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbox_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY inbox_messages_tenant ON inbox_messages
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

GRANT SELECT, INSERT, UPDATE (handled_at) ON inbox_messages TO clinic_app, clinic_worker;
