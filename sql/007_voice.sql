-- Voice platforms beyond Vapi (Retell, ElevenLabs), spoken results, the
-- hand-off to the front desk, and the clinic's call log.

-- Per-clinic settings:
--   spoken_results     Vapi results also carry the sentence to say at once
--                      (off: the model phrases every result itself);
--   front_desk_phone   where "let me talk to a person" goes during opening hours;
--   retell_api_key_enc the clinic's Retell API key, which signs Retell's
--                      requests (X-Retell-Signature); it must be usable, so it is
--                      encrypted (AES-256-GCM) like the Vapi HMAC key;
--   store_transcripts  keep the transcript in the call log (off by default:
--                      transcripts are patient data nobody asked us to keep).
ALTER TABLE orgs
  ADD COLUMN spoken_results     boolean NOT NULL DEFAULT true,
  ADD COLUMN front_desk_phone   text CHECK (front_desk_phone ~ '^\+[1-9][0-9]{6,14}$'),
  ADD COLUMN retell_api_key_enc text,
  ADD COLUMN store_transcripts  boolean NOT NULL DEFAULT false;

-- The clinic's call log: one row per call, from the platform's end-of-call
-- report. A report delivered twice (platform retries) is stored once.
CREATE TABLE calls (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id           uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  platform         text NOT NULL CHECK (platform IN ('vapi', 'retell', 'elevenlabs')),
  call_id          text NOT NULL CHECK (length(call_id) BETWEEN 1 AND 200),
  caller_phone     text CHECK (caller_phone ~ '^\+[1-9][0-9]{6,14}$'),
  started_at       timestamptz,
  ended_at         timestamptz,
  duration_seconds numeric(9, 1) CHECK (duration_seconds >= 0),
  ended_reason     text CHECK (length(ended_reason) <= 200),
  tools_used       text[] NOT NULL DEFAULT '{}',
  transcript       text CHECK (length(transcript) <= 200000),
  created_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (org_id, platform, call_id)
);
CREATE INDEX calls_list_idx ON calls (org_id, created_at DESC, id DESC);

ALTER TABLE calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE calls FORCE ROW LEVEL SECURITY;
CREATE POLICY calls_tenant ON calls
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

GRANT SELECT, INSERT ON calls TO clinic_app;

-- 003's org_context() with the new settings. The signature is unchanged, so
-- the grant to clinic_app stands.
CREATE OR REPLACE FUNCTION org_context(p_org uuid, p_client text) RETURNS jsonb
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  RETURN (
    SELECT jsonb_build_object(
      'id', o.id, 'name', o.name, 'timeZone', o.time_zone, 'defaultRegion', o.default_region,
      'openingHours', o.opening_hours, 'slotIntervalMinutes', o.slot_interval_minutes,
      'active', o.active, 'vapiSecretSha256', o.vapi_secret_sha256,
      'vapiHmacSecretEnc', o.vapi_hmac_secret_enc,
      'spokenResults', o.spoken_results, 'frontDeskPhone', o.front_desk_phone,
      'retellApiKeyEnc', o.retell_api_key_enc, 'storeTranscripts', o.store_transcripts,
      'services', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'code', s.code, 'name', s.name,
                                    'durationMinutes', s.duration_minutes) ORDER BY s.code)
                              FROM services s WHERE s.active), '[]'::jsonb),
      'practitioners', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', p.id, 'name', p.name,
                                    'serviceCodes', p.service_codes) ORDER BY p.id)
                              FROM practitioners p WHERE p.active), '[]'::jsonb),
      'clientActive', p_client IS NULL OR EXISTS (
                         SELECT 1 FROM oauth_clients c WHERE c.client_id = p_client AND c.revoked_at IS NULL),
      'smsConfigured', EXISTS (SELECT 1 FROM sms_settings st WHERE st.enabled)
                       AND EXISTS (SELECT 1 FROM sms_providers sp))
    FROM orgs o WHERE o.id = p_org);
END
$$;
