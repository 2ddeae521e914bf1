-- Daylight saving time. One policy everywhere a time is offered, spoken or
-- accepted (see src/booking/time.ts): a wall-clock time that happens twice means
-- its first occurrence, the earlier instant still on the pre-change offset; a
-- time the clocks skip is never offered or accepted. Opening hours are wall-clock
-- times; on a change day each boundary is resolved by the same rule, and a
-- boundary the clocks skip is the moment they jump past it.
--
-- 003's hours check compared wall-clock readings only. When the clocks change
-- during an appointment that is wrong in two ways: a slot ending at a midnight
-- that does not exist (Chile, Cuba: Saturday 24:00 is Sunday 01:00) was refused,
-- and one whose end read a repeated midnight or closing time a second time was
-- accepted although it ran past it. This migration moves the check into
-- within_opening_hours(), which the application mirrors in isWithinOpeningHours()
-- (src/booking/availability.ts), and replaces book_appointment to call it.
-- 003 is left as it was: applied migrations are checksummed.

-- The first instant on p_day at which the wall clock in p_zone reads p_time or
-- later ('24:00' is the next midnight): a time that happens twice gives its
-- first occurrence, one the clocks skip gives the moment they jump past it.
-- PostgreSQL's own "timestamp AT TIME ZONE" reads a repeated time as its second
-- occurrence and a skipped one on the old offset, hence this function.
CREATE FUNCTION wall_instant(p_zone text, p_day date, p_time time) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
  v_wall  timestamp := p_day + p_time;
  -- The reading as if it were UTC, then read on the offsets in force a day
  -- either side: every interpretation of it lies between the two.
  v_naive timestamptz := v_wall AT TIME ZONE 'UTC';
  v_a     timestamptz := v_naive - (((v_naive - interval '24 hours') AT TIME ZONE p_zone)
                                    - ((v_naive - interval '24 hours') AT TIME ZONE 'UTC'));
  v_b     timestamptz := v_naive - (((v_naive + interval '24 hours') AT TIME ZONE p_zone)
                                    - ((v_naive + interval '24 hours') AT TIME ZONE 'UTC'));
  v_lo    timestamptz := least(v_a, v_b);
  v_hi    timestamptz := greatest(v_a, v_b);
  v_mid   timestamptz;
BEGIN
  IF (v_lo AT TIME ZONE p_zone) = v_wall THEN RETURN v_lo; END IF;
  IF (v_hi AT TIME ZONE p_zone) = v_wall THEN RETURN v_hi; END IF;
  -- In a spring-forward gap: before the jump the clock reads earlier than
  -- v_wall, from the jump on later. Only ever reached on a change day.
  WHILE v_hi - v_lo > interval '1 microsecond' LOOP
    v_mid := v_lo + (v_hi - v_lo) / 2;
    IF (v_mid AT TIME ZONE p_zone) >= v_wall THEN v_hi := v_mid; ELSE v_lo := v_mid; END IF;
  END LOOP;
  RETURN v_hi;
END
$$;

-- Whether [p_starts, p_ends) lies inside one opening window of its start's
-- local day. Without a clock change during the appointment (wall-clock length =
-- real length) the wall-clock readings are compared, exactly as 003 did. When
-- the clocks change during it, instants are compared: the appointment keeps its
-- real duration and must lie between the instant the window opens and the
-- instant it closes, both resolved by wall_instant().
CREATE FUNCTION within_opening_hours(p_hours jsonb, p_zone text, p_starts timestamptz, p_ends timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
  v_local_s  timestamp := p_starts AT TIME ZONE p_zone;
  v_local_e  timestamp := p_ends AT TIME ZONE p_zone;
  v_windows  jsonb := COALESCE(p_hours -> extract(isodow FROM v_local_s)::int::text, '[]'::jsonb);
  v_end_time time;
BEGIN
  IF v_local_e - v_local_s = p_ends - p_starts THEN
    IF v_local_e > v_local_s::date + 1 THEN RETURN false; END IF;
    v_end_time := CASE WHEN v_local_e = v_local_s::date + 1 THEN '24:00'::time ELSE v_local_e::time END;
    RETURN EXISTS (SELECT 1 FROM jsonb_array_elements(v_windows) w
                    WHERE (w ->> 0)::time <= v_local_s::time AND v_end_time <= (w ->> 1)::time);
  END IF;
  RETURN EXISTS (SELECT 1 FROM jsonb_array_elements(v_windows) w
                  WHERE wall_instant(p_zone, v_local_s::date, (w ->> 0)::time) <= p_starts
                    AND p_ends <= wall_instant(p_zone, v_local_s::date, (w ->> 1)::time));
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
--   4. re-check opening hours (within_opening_hours, above) and overlaps;
--   5. insert, or move the appointment being rescheduled; the EXCLUDE constraint
--      is the backstop, met through ON CONFLICT DO NOTHING (no subtransaction);
--   6. enqueue the confirmation SMS in the same transaction;
--   7. store the response under the idempotency key.
CREATE OR REPLACE FUNCTION book_appointment(
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

    IF NOT within_opening_hours(v_org.opening_hours, v_org.time_zone, p_starts, p_ends) THEN
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

GRANT EXECUTE ON FUNCTION wall_instant, within_opening_hours TO clinic_app;
