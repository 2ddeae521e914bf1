-- Booking as SQL functions, so a tool call costs the app one round trip per
-- step and the advisory lock is held for the shortest possible time. All are
-- SECURITY INVOKER (the default): every statement runs as clinic_app, under RLS,
-- after scoping the transaction to the org with set_config(..., is_local = true).

-- Advisory-lock key for one practitioner's local day. hashtextextended is an
-- internal hash, but lock keys only have to agree between sessions of the same
-- server at the same moment; a collision merely serialises two unrelated days.
CREATE FUNCTION booking_lock_key(p_org uuid, p_practitioner uuid, p_day date) RETURNS bigint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT hashtextextended(p_org::text || '|' || p_practitioner::text || '|' || p_day::text, 0) $$;

-- The database layer of the org check, for statements that run on cached
-- clinic settings: scopes the transaction to the org, then refuses unless the
-- org exists and is active and the calling OAuth client is not revoked.
-- Custom SQLSTATEs let the app answer 403 / 401 instead of a generic error.
CREATE FUNCTION tenant_scope(p_org uuid, p_client text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  IF NOT EXISTS (SELECT 1 FROM orgs WHERE id = p_org AND active) THEN
    RAISE EXCEPTION 'org % is not active', p_org USING ERRCODE = 'CV403';
  END IF;
  IF p_client IS NOT NULL AND NOT EXISTS (
       SELECT 1 FROM oauth_clients WHERE client_id = p_client AND revoked_at IS NULL) THEN
    RAISE EXCEPTION 'client revoked' USING ERRCODE = 'CV401';
  END IF;
END
$$;

-- Everything a tool call needs about its clinic, and whether the org and the
-- calling OAuth client are still active: the database layer of org checks.
CREATE FUNCTION org_context(p_org uuid, p_client text) RETURNS jsonb
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

CREATE FUNCTION busy_intervals(p_org uuid, p_client text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (practitioner_id uuid, starts_at timestamptz, ends_at timestamptz)
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM tenant_scope(p_org, p_client);
  RETURN QUERY
    SELECT a.practitioner_id, a.starts_at, a.ends_at FROM appointments a
     WHERE a.org_id = p_org AND a.status <> 'cancelled'
       AND tstzrange(a.starts_at, a.ends_at, '[)') && tstzrange(p_from, p_to, '[)')
     ORDER BY a.starts_at;
END
$$;

-- The booking transaction (READ COMMITTED), in order:
--   1. scope to the org; refuse an inactive org or a revoked client (the
--      database layer of the org check, in the booking's own transaction);
--   2. claim the idempotency key: a concurrent duplicate blocks on the primary
--      key until the first commits, then replays its stored response;
--   3. for each candidate practitioner (given in a fixed order, so two bookings
--      never wait on each other in a cycle), pg_advisory_xact_lock every local
--      date the appointment touches, ascending;
--   4. re-check opening hours and overlaps;
--   5. insert, or move the appointment being rescheduled; the EXCLUDE constraint
--      is the backstop, met through ON CONFLICT DO NOTHING (no subtransaction);
--   6. enqueue the confirmation SMS in the same transaction;
--   7. store the response under the idempotency key.
CREATE FUNCTION book_appointment(
  p_org            uuid,
  p_client         text,
  p_key            text,
  p_tool           text,
  p_request_hash   text,
  p_practitioners  uuid[],
  p_service        uuid,
  p_starts         timestamptz,
  p_ends           timestamptz,
  p_patient_name   text,
  p_patient_phone  text,
  p_patient_email  text,
  p_call_id        text,
  p_replace        uuid,
  p_sms_kind       text,
  p_sms_body       text,
  p_sms_dry_run    boolean
) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v_org        orgs%ROWTYPE;
  v_prior      idempotency_keys%ROWTYPE;
  v_local_s    timestamp;
  v_local_e    timestamp;
  v_end_time   time;
  v_pract      uuid;
  v_day        date;
  v_id         uuid;
  v_chosen     uuid;
  v_result     jsonb;
BEGIN
  PERFORM tenant_scope(p_org, p_client);
  SELECT * INTO v_org FROM orgs WHERE id = p_org;

  IF p_key IS NOT NULL THEN
    INSERT INTO idempotency_keys (org_id, key, tool, request_hash)
    VALUES (p_org, p_key, p_tool, p_request_hash)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      SELECT * INTO v_prior FROM idempotency_keys WHERE org_id = p_org AND key = p_key;
      IF v_prior.tool <> p_tool OR v_prior.request_hash <> p_request_hash THEN
        RETURN jsonb_build_object('outcome', 'idempotency_mismatch');
      END IF;
      RETURN v_prior.response || jsonb_build_object('replayed', true);
    END IF;
  END IF;

  v_local_s := p_starts AT TIME ZONE v_org.time_zone;
  v_local_e := p_ends AT TIME ZONE v_org.time_zone;

  <<decide>>
  BEGIN
    -- The model sometimes re-asks with a fresh tool-call id: the same call,
    -- patient and start time is the same booking.
    IF p_replace IS NULL AND p_call_id IS NOT NULL THEN
      SELECT a.id, a.practitioner_id INTO v_id, v_chosen FROM appointments a
       WHERE a.org_id = p_org AND a.call_id = p_call_id AND a.patient_phone = p_patient_phone
         AND a.starts_at = p_starts AND a.status = 'booked'
       LIMIT 1;
      IF FOUND THEN
        v_result := jsonb_build_object('outcome', 'booked', 'appointmentId', v_id,
                                       'practitionerId', v_chosen, 'existing', true);
        EXIT decide;
      END IF;
    END IF;

    IF p_replace IS NOT NULL THEN
      PERFORM 1 FROM appointments WHERE id = p_replace AND status = 'booked' FOR UPDATE;
      IF NOT FOUND THEN
        v_result := jsonb_build_object('outcome', 'not_found');
        EXIT decide;
      END IF;
    END IF;

    v_end_time := CASE WHEN v_local_e = v_local_s::date + 1 THEN '24:00'::time ELSE v_local_e::time END;
    IF v_local_e > v_local_s::date + 1 OR NOT EXISTS (
         SELECT 1
           FROM jsonb_array_elements(COALESCE(v_org.opening_hours -> extract(isodow FROM v_local_s)::int::text,
                                              '[]'::jsonb)) w
          WHERE (w ->> 0)::time <= v_local_s::time AND v_end_time <= (w ->> 1)::time) THEN
      v_result := jsonb_build_object('outcome', 'outside_hours');
      EXIT decide;
    END IF;

    FOREACH v_pract IN ARRAY p_practitioners LOOP
      CONTINUE WHEN NOT EXISTS (SELECT 1 FROM practitioners WHERE id = v_pract AND active);
      FOR v_day IN
        SELECT d::date FROM generate_series(v_local_s::date, (v_local_e - interval '1 microsecond')::date,
                                            interval '1 day') d
      LOOP
        PERFORM pg_advisory_xact_lock(booking_lock_key(p_org, v_pract, v_day));
      END LOOP;

      CONTINUE WHEN EXISTS (
        SELECT 1 FROM appointments
         WHERE org_id = p_org AND practitioner_id = v_pract AND status <> 'cancelled'
           AND tstzrange(starts_at, ends_at, '[)') && tstzrange(p_starts, p_ends, '[)')
           AND id IS DISTINCT FROM p_replace);

      IF p_replace IS NULL THEN
        INSERT INTO appointments (org_id, practitioner_id, service_id, patient_name, patient_phone,
                                  patient_email, starts_at, ends_at, call_id)
        VALUES (p_org, v_pract, p_service, p_patient_name, p_patient_phone,
                p_patient_email, p_starts, p_ends, p_call_id)
        ON CONFLICT DO NOTHING
        RETURNING id INTO v_id;
      ELSE
        UPDATE appointments
           SET practitioner_id = v_pract, service_id = p_service,
               starts_at = p_starts, ends_at = p_ends, updated_at = now()
         WHERE id = p_replace
        RETURNING id INTO v_id;
      END IF;
      -- NULL only if a writer that skipped the advisory lock got there first:
      -- the EXCLUDE constraint refused the overlap, so try the next candidate.
      IF v_id IS NOT NULL THEN
        v_chosen := v_pract;
        EXIT;
      END IF;
    END LOOP;

    IF v_chosen IS NULL THEN
      v_result := jsonb_build_object('outcome', 'slot_taken');
      EXIT decide;
    END IF;

    IF p_sms_kind IS NOT NULL THEN
      INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, dry_run)
      VALUES (p_org, v_id, p_sms_kind, p_patient_phone, p_sms_body, p_starts, COALESCE(p_sms_dry_run, false))
      ON CONFLICT DO NOTHING;
    END IF;

    v_result := jsonb_build_object('outcome', 'booked', 'appointmentId', v_id,
                                   'practitionerId', v_chosen, 'existing', false);
  END decide;

  IF p_key IS NOT NULL THEN
    UPDATE idempotency_keys SET response = v_result WHERE org_id = p_org AND key = p_key;
  END IF;
  RETURN v_result;
END
$$;

GRANT EXECUTE ON FUNCTION booking_lock_key, tenant_scope, org_context, busy_intervals, book_appointment TO clinic_app;
