-- Reminders, replies to them, and the clinic's locale (issue 11). See
-- docs/sms.md ("Reminders", "Replies") and src/sms/reminders.ts,
-- src/sms/replies.ts.
--
-- A reminder is an outbox row of its own kind ('reminder:<minutes before>'),
-- written by the booking transaction with its due time in next_attempt_at and
-- the appointment's start in expires_at, so the gate's "still booked, at the
-- same time" check covers it as it covers the confirmation, and the unique
-- (org, appointment, kind) makes it once. Replaced here: org_context (007),
-- book_appointment (006), the outbox move guard (004) and the gate (008).

-- How the clinic's times are spoken and texted.
ALTER TABLE orgs
  ADD COLUMN locale text NOT NULL DEFAULT 'en-US' CHECK (locale IN ('en-US', 'en-GB'));

-- The reminder schedule and the sending window, beside the clinic's other SMS
-- settings. Offsets are minutes before the appointment ('{}': no reminders).
-- The window is wall-clock time, start <= t < end, read in the patient's zone
-- when their number tells it ('patient') or always in the clinic's ('clinic').
ALTER TABLE sms_settings
  ADD COLUMN reminder_offsets_minutes integer[] NOT NULL DEFAULT '{1440}'
    CHECK (cardinality(reminder_offsets_minutes) <= 3 AND 1 <= ALL (reminder_offsets_minutes)
           AND 43200 >= ALL (reminder_offsets_minutes)),
  ADD COLUMN sending_window_start time NOT NULL DEFAULT '08:00',
  ADD COLUMN sending_window_end time NOT NULL DEFAULT '21:00',
  ADD COLUMN quiet_hours_zone text NOT NULL DEFAULT 'patient' CHECK (quiet_hours_zone IN ('patient', 'clinic')),
  -- Patients may cancel by replying X (asked to confirm once). Off by default.
  ADD COLUMN cancel_by_reply boolean NOT NULL DEFAULT false,
  ADD CONSTRAINT sms_settings_sending_window_check
    CHECK (sending_window_end >= sending_window_start + interval '1 hour');

-- "Confirmed" is not a status: every query that treats status = 'booked' as
-- live (the gate, busy intervals, the EXCLUDE constraint, reschedule, lookups)
-- keeps working unchanged, and a confirmed appointment is a booked one with
-- confirmed_at set. The tools and views show it as status "confirmed".
-- A reschedule clears all three: the patient confirmed the old time.
ALTER TABLE appointments
  ADD COLUMN confirmed_at timestamptz,
  ADD COLUMN reschedule_requested_at timestamptz,
  -- The first "X" of a cancel by reply; a second within a day cancels.
  ADD COLUMN cancel_requested_at timestamptz;

-- The end of the sending window a reminder was planned in: the gate drops it
-- once that has passed (a worker that fell behind must not text at night).
-- NULL for confirmations, which answer the patient's own booking.
ALTER TABLE sms_outbox ADD COLUMN send_by timestamptz;

-- Due rows are claimed oldest first and, among rows due at the same instant
-- (every clinic's 9:00 reminders), clinic by clinic, so that a claimed batch
-- spans few clinics: the gate and the opening of attempts run one statement
-- per clinic of the batch. This index replaces 002's on next_attempt_at alone.
CREATE INDEX sms_outbox_due_org_idx ON sms_outbox (next_attempt_at, org_id) WHERE status IN ('pending', 'sending');
DROP INDEX sms_outbox_due_idx;

-- "Which appointment": a reply applies to the appointment of the last reminder
-- sent to that phone, read from the outbox itself.
CREATE INDEX sms_outbox_last_reminder_idx ON sms_outbox (org_id, to_phone, sent_at DESC)
  WHERE status = 'sent' AND kind LIKE 'reminder:%';

-- Reminders let through the gate, per (clinic, recipient): the daily and
-- weekly caps count these, under the same advisory lock as the hourly limit.
-- Confirmations and replies are not written here: they answer the patient.
CREATE TABLE sms_reminder_log (
  org_id    uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  recipient text NOT NULL,
  outbox_id uuid NOT NULL REFERENCES sms_outbox(id) ON DELETE CASCADE,
  at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, outbox_id)
);
CREATE INDEX sms_reminder_log_recipient_idx ON sms_reminder_log (org_id, recipient, at);

ALTER TABLE sms_reminder_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE sms_reminder_log FORCE ROW LEVEL SECURITY;
CREATE POLICY sms_reminder_log_tenant ON sms_reminder_log
  USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));

-- The "call us at ..." answer to a text that is no keyword goes out at most
-- once a clinic-local day per phone; the inbox row says whether it got one.
ALTER TABLE inbox_messages ADD COLUMN auto_reply text CHECK (auto_reply ~ '^[a-z][a-z_]{0,39}$');
CREATE INDEX inbox_messages_auto_reply_idx ON inbox_messages (org_id, from_phone, created_at)
  WHERE auto_reply IS NOT NULL;

GRANT SELECT, INSERT, DELETE ON sms_reminder_log TO clinic_worker;
GRANT SELECT ON sms_reminder_log TO clinic_app;
-- The booking, reschedule and cancel transactions move and void their
-- appointment's pending reminders (app role); replies confirm, flag and cancel
-- appointments (worker role).
GRANT UPDATE (status, next_attempt_at, expires_at, send_by, body, attempts, failure_reason, last_error, updated_at)
  ON sms_outbox TO clinic_app;
GRANT UPDATE (status, cancelled_at, updated_at, confirmed_at, reschedule_requested_at, cancel_requested_at)
  ON appointments TO clinic_worker;

-- 007's org_context() with the locale, the number texts give patients to call
-- (the SMS settings' contact_phone, else the front desk) and the reminder
-- settings, so a booking plans its reminders from the settings cache and stays
-- one round trip. The signature is unchanged, so the grant stands.
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
      'locale', o.locale,
      'smsContactPhone', COALESCE((SELECT st.contact_phone FROM sms_settings st), o.front_desk_phone),
      'reminders', (SELECT jsonb_build_object(
                             'offsetsMinutes', to_jsonb(st.reminder_offsets_minutes),
                             'window', jsonb_build_object('start', to_char(st.sending_window_start, 'HH24:MI'),
                                                          'end', to_char(st.sending_window_end, 'HH24:MI')),
                             'zoneRule', st.quiet_hours_zone, 'cancelByReply', st.cancel_by_reply)
                      FROM sms_settings st WHERE st.enabled),
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

-- 004's move guard with one more move, "void": a waiting reminder of an
-- appointment that was cancelled or moved is cancelled by that transaction
-- (pending -> cancelled). MOVES in src/sms/outbox.ts lists it.
CREATE OR REPLACE FUNCTION sms_outbox_guard_move() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  -- The service roles are checked without a catalogue lookup.
  IF current_user NOT IN ('clinic_app', 'clinic_worker')
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'INSERT' THEN
    IF NEW.status <> 'pending' THEN
      RAISE EXCEPTION 'a new sms outbox row starts pending, not %', NEW.status USING ERRCODE = 'SM002';
    END IF;
  ELSIF (OLD.status, NEW.status) NOT IN (('pending', 'sending'), ('sending', 'pending'), ('sending', 'sent'),
                                          ('sending', 'failed'), ('sending', 'cancelled'), ('failed', 'pending'),
                                          ('pending', 'cancelled')) THEN
    RAISE EXCEPTION 'sms outbox row % cannot move from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = 'SM002';
  END IF;
  RETURN NEW;
END
$$;

-- 006's booking transaction, with the appointment's reminders. The steps are
-- 006's; what is new:
--   6a. a new booking enqueues one row per planned reminder (p_reminders:
--       [{kind, due, sendBy, body}], computed by the app in the clinic's zone),
--       due at next_attempt_at, expiring at the appointment's start;
--   6b. a reschedule moves the appointment's waiting reminders that never ran
--       to the new time (due, window, expiry, text), voids the other waiting
--       ones (the gate would call them superseded), and enqueues a reminder of
--       a new generation (kind 'reminder:<offset>#<n>') for an offset whose
--       earlier row was already sent or settled; it also clears the patient's
--       confirmation and requests, which were about the old time.
-- The parameter list grows, so the old signature is dropped.
DROP FUNCTION book_appointment(uuid, text, text, text, text, uuid[], uuid, timestamptz, timestamptz, text, text, text,
                               text, uuid, text, text, boolean);
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
  p_sms_dry_run    boolean,
  p_reminders      jsonb
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
               starts_at = p_starts, ends_at = p_ends, updated_at = now(),
               confirmed_at = NULL, reschedule_requested_at = NULL, cancel_requested_at = NULL
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

    IF p_replace IS NULL THEN
      INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, next_attempt_at, send_by, dry_run)
      SELECT p_org, v_id, r.kind, p_patient_phone, r.body, p_starts, r.due, r."sendBy", COALESCE(p_sms_dry_run, false)
        FROM jsonb_to_recordset(COALESCE(p_reminders, '[]'::jsonb)) AS r(kind text, due timestamptz, "sendBy" timestamptz, body text)
      ON CONFLICT DO NOTHING;
    ELSE
      -- move: a waiting reminder that never ran takes the new time of its offset.
      WITH r AS (
        SELECT x.* FROM jsonb_to_recordset(COALESCE(p_reminders, '[]'::jsonb))
                 AS x(kind text, due timestamptz, "sendBy" timestamptz, body text)
      )
      UPDATE sms_outbox o
         SET next_attempt_at = r.due, send_by = r."sendBy", expires_at = p_starts, body = r.body, updated_at = now()
        FROM r
       WHERE o.org_id = p_org AND o.appointment_id = v_id AND o.status = 'pending' AND o.attempts = 0
         AND o.resend_of IS NULL AND (o.kind = r.kind OR o.kind LIKE r.kind || '#%');
      -- void: every other waiting reminder still announces the old time.
      UPDATE sms_outbox
         SET status = 'cancelled', failure_reason = 'superseded', last_error = 'superseded', updated_at = now()
       WHERE org_id = p_org AND appointment_id = v_id AND status = 'pending' AND kind LIKE 'reminder:%'
         AND expires_at <> p_starts;
      -- enqueue: an offset whose row was already sent (or settled) gets a new generation.
      INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, next_attempt_at, send_by, dry_run)
      SELECT p_org, v_id,
             r.kind || '#' || (1 + (SELECT count(*) FROM sms_outbox g
                                     WHERE g.org_id = p_org AND g.appointment_id = v_id
                                       AND (g.kind = r.kind OR g.kind LIKE r.kind || '#%'))),
             p_patient_phone, r.body, p_starts, r.due, r."sendBy", COALESCE(p_sms_dry_run, false)
        FROM jsonb_to_recordset(COALESCE(p_reminders, '[]'::jsonb)) AS r(kind text, due timestamptz, "sendBy" timestamptz, body text)
       WHERE NOT EXISTS (SELECT 1 FROM sms_outbox o
                          WHERE o.org_id = p_org AND o.appointment_id = v_id AND o.status = 'pending'
                            AND o.expires_at = p_starts AND (o.kind = r.kind OR o.kind LIKE r.kind || '#%'))
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

GRANT EXECUTE ON FUNCTION book_appointment(uuid, text, text, text, text, uuid[], uuid, timestamptz, timestamptz, text, text,
                                           text, text, uuid, text, text, boolean, jsonb) TO clinic_app;

-- 008's gate, with what reminders need besides "still booked, at the same time":
--   * outside_window: a reminder whose sending window has closed (send_by,
--     its resend's original's for a resend) is not sent late at night by a
--     worker that fell behind: it is skipped and recorded;
--   * the caps: reminders (the texts we start; not confirmations, not the one
--     resend after a failure receipt, which replaces a reminder the patient
--     never got) pass at most 1 per clinic-local day and 3 per rolling 7 days
--     per (clinic, recipient); one over is capped_daily / capped_weekly,
--     skipped and recorded, never sent later in a burst. They are counted in
--     sms_reminder_log under the same advisory lock on (clinic, recipient) as
--     the hourly limit, which they also pass. An operator's retry bypasses the
--     hourly limit, not the caps.
-- Several reminders to one recipient in one batch pass in creation order while
-- the caps allow. The signature and the other decisions are 008's.
CREATE OR REPLACE FUNCTION sms_gate_batch(p_ids uuid[], p_default_limit integer)
RETURNS TABLE (outbox_id uuid, decision text, provider text, provider_message_id text, from_number text,
               in_flight jsonb, resend_after text)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_org       uuid;
  v_ids       uuid[];
  v_limit     integer;
  v_keys      bigint[];
  v_day_start timestamptz;
BEGIN
  RETURN QUERY
    SELECT x.id, 'gone'::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::text
      FROM unnest(p_ids) AS x(id)
     WHERE NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.id = x.id);

  FOR v_org IN SELECT DISTINCT o.org_id FROM sms_outbox o WHERE o.id = ANY (p_ids) ORDER BY 1 LOOP
    PERFORM set_config('app.org_id', v_org::text, true);
    v_ids := ARRAY(SELECT o.id FROM sms_outbox o WHERE o.id = ANY (p_ids) AND o.org_id = v_org);

    SELECT array_agg(k ORDER BY k) INTO v_keys
      FROM (SELECT DISTINCT hashtextextended('sms-rate|' || o.org_id::text || '|' || o.to_phone, 0) AS k
              FROM sms_outbox o
             WHERE o.id = ANY (v_ids) AND (NOT o.bypass_rate_limit OR o.kind LIKE 'reminder:%')) s;
    IF v_keys IS NOT NULL THEN
      PERFORM pg_advisory_xact_lock(k) FROM unnest(v_keys) AS k;
    END IF;
    SELECT COALESCE((SELECT rate_limit_per_hour FROM sms_settings WHERE org_id = v_org), p_default_limit)
      INTO v_limit;
    -- The clinic's local day starts at its (first) midnight, as everywhere else.
    SELECT wall_instant(o.time_zone, (now() AT TIME ZONE o.time_zone)::date, '00:00') INTO v_day_start
      FROM orgs o WHERE o.id = v_org;

    RETURN QUERY
    WITH r AS MATERIALIZED (
      SELECT o.id, o.to_phone, o.created_at, o.waiting_since, o.resend_after_account,
             acc.provider AS acc_provider, acc.provider_message_id AS acc_pmid, acc.from_number AS acc_from,
             o.bypass_rate_limit OR EXISTS (SELECT 1 FROM sms_rate_log l WHERE l.org_id = v_org AND l.outbox_id = o.id)
               AS exempt,
             o.kind LIKE 'reminder:%' AND o.resend_of IS NULL AS capped_kind,
             EXISTS (SELECT 1 FROM sms_reminder_log g WHERE g.org_id = v_org AND g.outbox_id = o.id) AS cap_counted,
             CASE
               WHEN acc.id IS NOT NULL THEN 'already_sent'
               WHEN a.status IS DISTINCT FROM 'booked' THEN 'cancelled'
               WHEN o.expires_at <= now() THEN 'expired'
               WHEN a.starts_at <> o.expires_at THEN 'superseded'
               WHEN EXISTS (SELECT 1 FROM sms_opt_outs x WHERE x.org_id = v_org AND x.phone = o.to_phone) THEN 'opted_out'
               WHEN COALESCE(o.send_by, (SELECT p.send_by FROM sms_outbox p WHERE p.id = o.resend_of)) <= now()
                 THEN 'outside_window'
               ELSE 'send'
             END AS pre
        FROM sms_outbox o
        LEFT JOIN LATERAL (SELECT ap.status, ap.starts_at FROM appointments ap
                            WHERE ap.id = o.appointment_id LIMIT 1) a ON true
        LEFT JOIN LATERAL (SELECT t.id, t.provider, t.provider_message_id, t.from_number FROM sms_attempts t
                            WHERE t.outbox_id = o.id AND t.outcome IN ('accepted', 'reconciled')
                            ORDER BY t.id DESC LIMIT 1) acc ON true
       WHERE o.id = ANY (v_ids)
    ), caps AS MATERIALIZED (
      SELECT r.id, row_number() OVER (PARTITION BY r.to_phone ORDER BY r.created_at, r.id) AS nth,
             (SELECT count(*) FROM sms_reminder_log g
               WHERE g.org_id = v_org AND g.recipient = r.to_phone AND g.at >= v_day_start) AS day_used,
             (SELECT count(*) FROM sms_reminder_log g
               WHERE g.org_id = v_org AND g.recipient = r.to_phone AND g.at > now() - interval '7 days') AS week_used
        FROM r WHERE r.pre = 'send' AND r.capped_kind AND NOT r.cap_counted
    ), capped AS MATERIALIZED (
      SELECT caps.id, CASE WHEN caps.day_used + caps.nth > 1 THEN 'capped_daily' ELSE 'capped_weekly' END AS why
        FROM caps WHERE caps.day_used + caps.nth > 1 OR caps.week_used + caps.nth > 3
    ), ranked AS MATERIALIZED (
      SELECT r.id, r.to_phone, row_number() OVER (PARTITION BY r.to_phone ORDER BY r.created_at, r.id) AS nth,
             (SELECT count(*) FROM sms_rate_log l
               WHERE l.org_id = v_org AND l.recipient = r.to_phone AND l.at > now() - interval '1 hour') AS used
        FROM r WHERE r.pre = 'send' AND NOT r.exempt AND r.id NOT IN (SELECT capped.id FROM capped)
    ), allowed AS MATERIALIZED (
      SELECT ranked.id, ranked.to_phone FROM ranked WHERE ranked.used + ranked.nth <= v_limit
    ), logged AS (
      INSERT INTO sms_rate_log (org_id, recipient, outbox_id)
      SELECT v_org, allowed.to_phone, allowed.id FROM allowed
      ON CONFLICT DO NOTHING
      RETURNING 1
    ), counted AS (
      INSERT INTO sms_reminder_log (org_id, recipient, outbox_id)
      SELECT v_org, r.to_phone, r.id FROM r
       WHERE r.pre = 'send' AND r.capped_kind AND NOT r.cap_counted
         AND r.id NOT IN (SELECT capped.id FROM capped)
         AND (r.exempt OR r.id IN (SELECT allowed.id FROM allowed))
      ON CONFLICT DO NOTHING
      RETURNING 1
    )
    SELECT r.id,
           CASE WHEN r.pre <> 'send' THEN r.pre
                WHEN c.why IS NOT NULL THEN c.why
                WHEN r.exempt OR r.id IN (SELECT allowed.id FROM allowed) THEN 'send'
                ELSE 'rate_limited' END,
           r.acc_provider, r.acc_pmid, r.acc_from, f.j, r.resend_after_account
      FROM r
      LEFT JOIN capped c ON c.id = r.id
      LEFT JOIN LATERAL (
        SELECT jsonb_build_object('attemptId', t.id, 'provider', t.provider, 'accountKey', t.account_key,
                                  'from', t.from_number, 'startedAt', t.started_at,
                                  'waitingSince', r.waiting_since) AS j
          FROM sms_attempts t
         WHERE t.outbox_id = r.id AND t.outcome = 'in_flight'
         ORDER BY t.id DESC LIMIT 1) f ON r.pre = 'send';
  END LOOP;
END
$$;

-- 004's opening of attempts, which is the moment a send begins (the audit row
-- is written before any byte goes to the provider), now also asks once more
-- whether the message is still wanted: a cancel or a move that committed
-- after the gate and before this statement would otherwise still be texted.
-- Such a row is cancelled here by its lease holder, and its item answered
-- with no attempt and from_number 'cancelled:<reason>', which the engine
-- reads as "no longer wanted" (not as a lost lease). The signature is 004's.
CREATE OR REPLACE FUNCTION sms_open_attempts(p_worker text, p_items jsonb)
RETURNS TABLE (outbox_id uuid, attempt_id bigint, from_number text)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_org uuid;
  v_ids uuid[];
BEGIN
  FOR v_org IN SELECT DISTINCT (e ->> 'org')::uuid FROM jsonb_array_elements(p_items) e ORDER BY 1 LOOP
    PERFORM set_config('app.org_id', v_org::text, true);
    v_ids := ARRAY(SELECT (e ->> 'outbox')::uuid FROM jsonb_array_elements(p_items) e WHERE (e ->> 'org')::uuid = v_org);
    RETURN QUERY
    WITH i AS MATERIALIZED (
      SELECT x.* FROM jsonb_to_recordset(p_items)
               AS x(outbox uuid, org uuid, recipient text, provider text, account text, pool text[], preferred text,
                    "failedOver" boolean)
       WHERE x.org = v_org
    ), held AS MATERIALIZED (
      SELECT o.id,
             CASE WHEN a.status IS DISTINCT FROM 'booked' THEN 'appointment_cancelled'
                  WHEN a.starts_at <> o.expires_at THEN 'superseded' END AS unwanted
        FROM sms_outbox o
        LEFT JOIN LATERAL (SELECT ap.status, ap.starts_at FROM appointments ap
                            WHERE ap.id = o.appointment_id LIMIT 1) a ON true
       WHERE o.id = ANY (v_ids) AND o.org_id = v_org AND o.status = 'sending' AND o.locked_by = p_worker
         FOR SHARE OF o
    ), dropped AS (
      UPDATE sms_outbox o
         SET status = 'cancelled', failure_reason = h.unwanted, last_error = h.unwanted,
             locked_until = NULL, locked_by = NULL, updated_at = now()
        FROM held h
       WHERE o.id = h.id AND h.unwanted IS NOT NULL
      RETURNING o.id, h.unwanted
    ), chosen AS MATERIALIZED (
      SELECT i.*, CASE WHEN i.preferred IS NULL THEN NULL
                       WHEN s.from_number = ANY (i.pool) THEN s.from_number
                       ELSE i.preferred END AS sender
        FROM i JOIN held h ON h.id = i.outbox AND h.unwanted IS NULL
        LEFT JOIN sms_sender_assignments s
               ON s.org_id = v_org AND s.account_key = i.account AND s.recipient = i.recipient
    ), assigned AS (
      INSERT INTO sms_sender_assignments (org_id, account_key, recipient, from_number)
      SELECT DISTINCT ON (c.account, c.recipient) v_org, c.account, c.recipient, c.sender
        FROM chosen c WHERE c.sender IS NOT NULL
       ORDER BY c.account, c.recipient
      ON CONFLICT (org_id, account_key, recipient)
        DO UPDATE SET from_number = EXCLUDED.from_number, last_used_at = now()
      RETURNING 1
    ), opened AS (
      INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, from_number, outcome, failed_over, worker)
      SELECT c.outbox, v_org, c.provider, c.account, c.sender, 'in_flight', COALESCE(c."failedOver", false), p_worker
        FROM chosen c
      RETURNING sms_attempts.id, sms_attempts.outbox_id, sms_attempts.from_number
    )
    SELECT i.outbox, o.id, COALESCE(o.from_number, 'cancelled:' || d.unwanted)
      FROM i
      LEFT JOIN opened o ON o.outbox_id = i.outbox
      LEFT JOIN dropped d ON d.id = i.outbox;
  END LOOP;
END
$$;
