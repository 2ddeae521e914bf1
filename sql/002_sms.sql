-- Confirmation SMS: per-org provider chain, durable outbox, attempt audit,
-- sticky senders, opt-outs and the per-recipient rate log.

-- Org-level switches. No row means SMS is not configured for the clinic.
CREATE TABLE sms_settings (
  org_id              uuid PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
  enabled             boolean NOT NULL DEFAULT true,
  rate_limit_per_hour integer NOT NULL DEFAULT 5 CHECK (rate_limit_per_hour BETWEEN 1 AND 1000),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The ordered chain: position 0 is the primary, the rest are failovers.
-- Credentials are an AES-256-GCM blob bound to (org, position, kind) and are
-- never selected back out through the API.
CREATE TABLE sms_providers (
  org_id          uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  position        integer NOT NULL CHECK (position BETWEEN 0 AND 9),
  kind            text NOT NULL CHECK (kind IN ('twilio', 'telnyx', 'sandbox')),
  credentials_enc text,
  sender_numbers  text[] NOT NULL DEFAULT '{}',
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, position)
);

CREATE TABLE sms_outbox (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  org_id              uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  appointment_id      uuid NOT NULL,
  kind                text NOT NULL,
  to_phone            text NOT NULL,
  body                text NOT NULL,
  -- pending: waiting for (another) attempt; sending: leased by a worker;
  -- sent: a provider accepted it; failed: permanent no-send (dead letter);
  -- cancelled: the appointment went away before we sent.
  status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
  attempts            integer NOT NULL DEFAULT 0,
  next_attempt_at     timestamptz NOT NULL DEFAULT now(),
  locked_until        timestamptz,
  locked_by           text,
  -- Never send after the appointment has started.
  expires_at          timestamptz NOT NULL,
  -- Dry runs (VERIFY_SMS_BRIDGE.sh) go through the sandbox provider only.
  dry_run             boolean NOT NULL DEFAULT false,
  -- Set by an admin retry: an operator decided to send despite the rate limit.
  bypass_rate_limit   boolean NOT NULL DEFAULT false,
  provider            text,
  provider_message_id text,
  from_number         text,
  last_error_class    text,
  last_error_code     text,
  last_error          text,
  -- Why a failed/cancelled row was not sent, in the words smsStatus reports:
  -- invalid_recipient, opted_out, rate_limited, expired, not_configured,
  -- retries_exhausted, appointment_cancelled, superseded.
  failure_reason      text,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  sent_at             timestamptz,
  failed_at           timestamptz,
  -- The sent-flag guard: one confirmation of a kind per appointment, ever.
  UNIQUE (org_id, appointment_id, kind),
  FOREIGN KEY (appointment_id) REFERENCES appointments(id) ON DELETE CASCADE
);
CREATE INDEX sms_outbox_due_idx ON sms_outbox (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX sms_outbox_failed_idx ON sms_outbox (failed_at DESC, id) WHERE status = 'failed';

-- One row per provider call, written before the call so that a crash leaves a
-- trace the next worker reconciles instead of blindly re-sending.
CREATE TABLE sms_attempts (
  id                  bigserial PRIMARY KEY,
  outbox_id           uuid NOT NULL REFERENCES sms_outbox(id) ON DELETE CASCADE,
  org_id              uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  provider            text NOT NULL,
  account_key         text NOT NULL,
  from_number         text,
  outcome             text NOT NULL CHECK (outcome IN ('in_flight', 'accepted', 'failed', 'reconciled', 'skipped')),
  error_class         text,
  error_code          text,
  error_message       text,
  provider_message_id text,
  failed_over         boolean NOT NULL DEFAULT false,
  latency_ms          integer,
  -- The worker (host:pid:nonce) that made the call: which process to look at
  -- when an attempt was left in flight.
  worker              text,
  started_at          timestamptz NOT NULL DEFAULT now(),
  finished_at         timestamptz
);
CREATE INDEX sms_attempts_outbox_idx ON sms_attempts (outbox_id, id);

-- Sticky sender: which number of a provider account a recipient hears from.
CREATE TABLE sms_sender_assignments (
  org_id       uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  account_key  text NOT NULL,
  recipient    text NOT NULL,
  from_number  text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, account_key, recipient)
);

CREATE TABLE sms_opt_outs (
  org_id     uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  phone      text NOT NULL,
  source     text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, phone)
);

-- Sliding-window rate log: one row per message that was let through to a
-- provider, counted under an advisory lock so the limit holds across processes.
CREATE TABLE sms_rate_log (
  org_id    uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  recipient text NOT NULL,
  outbox_id uuid NOT NULL REFERENCES sms_outbox(id) ON DELETE CASCADE,
  at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, outbox_id)
);
CREATE INDEX sms_rate_log_recipient_idx ON sms_rate_log (org_id, recipient, at);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['sms_settings', 'sms_providers', 'sms_outbox', 'sms_attempts',
                           'sms_sender_assignments', 'sms_opt_outs', 'sms_rate_log'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY %I ON %I USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()))',
                   t || '_tenant', t);
  END LOOP;
END $$;

-- The outbox worker must find due rows of every clinic before it knows which
-- clinic they belong to. Only the worker role gets that cross-tenant view, and
-- only of the outbox itself; everything it does per message runs with app.org_id
-- set to the message's clinic.
CREATE POLICY sms_outbox_worker ON sms_outbox TO clinic_worker USING (true) WITH CHECK (true);
CREATE POLICY sms_attempts_worker_read ON sms_attempts FOR SELECT TO clinic_worker USING (true);

GRANT SELECT, INSERT, UPDATE, DELETE ON sms_settings, sms_providers TO clinic_app;
GRANT SELECT, INSERT ON sms_outbox TO clinic_app;
GRANT SELECT ON sms_attempts, sms_opt_outs TO clinic_app;

GRANT SELECT, UPDATE, DELETE ON sms_outbox TO clinic_worker;
GRANT SELECT ON sms_settings, sms_providers TO clinic_worker;
GRANT UPDATE (credentials_enc) ON sms_providers TO clinic_worker;
GRANT SELECT, INSERT, UPDATE ON sms_attempts TO clinic_worker;
GRANT USAGE ON SEQUENCE sms_attempts_id_seq TO clinic_worker;
GRANT SELECT, INSERT, UPDATE ON sms_sender_assignments TO clinic_worker;
GRANT SELECT, INSERT ON sms_opt_outs TO clinic_worker;
GRANT SELECT, INSERT, DELETE ON sms_rate_log TO clinic_worker;

-- Checks made once per delivery run, in one round trip, under the message's
-- org: is the message still wanted (appointment live, not started, recipient
-- not opted out), and may it pass the per-recipient rate limit? The limit is
-- counted under an advisory lock on (org, recipient), so concurrent workers in
-- any number of processes cannot both slip under it. Also reports an attempt
-- left in flight by a crashed or timed-out run, which must be reconciled first.
CREATE FUNCTION sms_gate(p_outbox uuid, p_default_limit integer) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v        sms_outbox%ROWTYPE;
  v_appt   text;
  v_limit  integer;
  v_count  integer;
  v_prior  sms_attempts%ROWTYPE;
BEGIN
  SELECT * INTO v FROM sms_outbox WHERE id = p_outbox;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('decision', 'gone');
  END IF;
  PERFORM set_config('app.org_id', v.org_id::text, true);

  SELECT * INTO v_prior FROM sms_attempts
   WHERE outbox_id = p_outbox AND outcome IN ('accepted', 'reconciled') LIMIT 1;
  IF FOUND THEN
    RETURN jsonb_build_object('decision', 'already_sent', 'provider', v_prior.provider,
                              'providerMessageId', v_prior.provider_message_id, 'from', v_prior.from_number);
  END IF;

  SELECT status INTO v_appt FROM appointments WHERE id = v.appointment_id;
  IF v_appt IS DISTINCT FROM 'booked' THEN
    RETURN jsonb_build_object('decision', 'cancelled');
  END IF;
  IF v.expires_at <= now() THEN
    RETURN jsonb_build_object('decision', 'expired');
  END IF;
  -- expires_at is the start time the text announces. If the appointment has
  -- moved since (rescheduled), this text would give the patient the old time;
  -- the reschedule enqueues its own confirmation.
  IF EXISTS (SELECT 1 FROM appointments WHERE id = v.appointment_id AND starts_at <> v.expires_at) THEN
    RETURN jsonb_build_object('decision', 'superseded');
  END IF;
  IF EXISTS (SELECT 1 FROM sms_opt_outs WHERE org_id = v.org_id AND phone = v.to_phone) THEN
    RETURN jsonb_build_object('decision', 'opted_out');
  END IF;

  IF NOT v.bypass_rate_limit
     AND NOT EXISTS (SELECT 1 FROM sms_rate_log WHERE org_id = v.org_id AND outbox_id = p_outbox) THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('sms-rate|' || v.org_id::text || '|' || v.to_phone, 0));
    SELECT COALESCE((SELECT rate_limit_per_hour FROM sms_settings WHERE org_id = v.org_id), p_default_limit)
      INTO v_limit;
    SELECT count(*) INTO v_count FROM sms_rate_log
     WHERE org_id = v.org_id AND recipient = v.to_phone AND at > now() - interval '1 hour';
    IF v_count >= v_limit THEN
      RETURN jsonb_build_object('decision', 'rate_limited', 'limit', v_limit);
    END IF;
    INSERT INTO sms_rate_log (org_id, recipient, outbox_id) VALUES (v.org_id, v.to_phone, p_outbox);
  END IF;

  SELECT * INTO v_prior FROM sms_attempts
   WHERE outbox_id = p_outbox AND outcome = 'in_flight' ORDER BY id DESC LIMIT 1;
  RETURN jsonb_build_object(
    'decision', 'send',
    'inFlight', CASE WHEN v_prior.id IS NULL THEN NULL ELSE jsonb_build_object(
      'attemptId', v_prior.id, 'provider', v_prior.provider, 'accountKey', v_prior.account_key,
      'from', v_prior.from_number, 'startedAt', v_prior.started_at) END);
END
$$;

-- Opens an attempt: picks the sticky sender (keeping a stored choice while that
-- number is still in the pool, else storing the caller's rendezvous pick) and
-- writes the in-flight audit row before any byte goes to the provider.
--
-- p_worker fences the call: only the worker that currently holds the row's
-- lease may open an attempt. A worker that stalled past its lease (and whose
-- row another worker has since claimed) gets SQLSTATE SM001 instead of sending
-- a second copy. FOR SHARE keeps the lease from changing hands mid-call.
CREATE FUNCTION sms_begin_attempt(
  p_org uuid, p_outbox uuid, p_worker text, p_recipient text, p_provider text, p_account text,
  p_pool text[], p_preferred text, p_failed_over boolean
) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v_from text;
  v_id   bigint;
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  PERFORM 1 FROM sms_outbox
    WHERE id = p_outbox AND org_id = p_org AND status = 'sending' AND locked_by = p_worker
    FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'sms outbox row % is no longer leased by this worker', p_outbox USING ERRCODE = 'SM001';
  END IF;
  IF p_preferred IS NOT NULL THEN
    SELECT from_number INTO v_from FROM sms_sender_assignments
     WHERE org_id = p_org AND account_key = p_account AND recipient = p_recipient;
    IF v_from IS NULL OR NOT (v_from = ANY (p_pool)) THEN
      v_from := p_preferred;
      INSERT INTO sms_sender_assignments (org_id, account_key, recipient, from_number)
      VALUES (p_org, p_account, p_recipient, v_from)
      ON CONFLICT (org_id, account_key, recipient)
        DO UPDATE SET from_number = EXCLUDED.from_number, last_used_at = now();
    ELSE
      UPDATE sms_sender_assignments SET last_used_at = now()
       WHERE org_id = p_org AND account_key = p_account AND recipient = p_recipient;
    END IF;
  END IF;
  INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, from_number, outcome, failed_over, worker)
  VALUES (p_outbox, p_org, p_provider, p_account, v_from, 'in_flight', p_failed_over, p_worker)
  RETURNING id INTO v_id;
  RETURN jsonb_build_object('attemptId', v_id, 'from', v_from);
END
$$;

-- Settles an attempt. What an earlier step already wrote is kept: settling a
-- timed-out attempt by reconcile adds to its error text and keeps its latency,
-- so the audit row still shows the original error.
CREATE FUNCTION sms_finish_attempt(
  p_org uuid, p_attempt bigint, p_outcome text, p_class text, p_code text, p_message text,
  p_provider_message_id text, p_latency_ms integer, p_opt_out boolean, p_worker text
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  a sms_attempts%ROWTYPE;
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  UPDATE sms_attempts
     SET outcome = p_outcome,
         error_class = COALESCE(p_class, error_class),
         error_code = COALESCE(p_code, error_code),
         error_message = left(CASE WHEN error_message IS NULL OR p_message IS NULL THEN COALESCE(p_message, error_message)
                                   WHEN error_message = p_message THEN error_message
                                   ELSE error_message || ' | ' || p_message END, 500),
         provider_message_id = COALESCE(p_provider_message_id, provider_message_id),
         latency_ms = COALESCE(p_latency_ms, latency_ms),
         finished_at = CASE WHEN p_outcome = 'in_flight' THEN NULL ELSE now() END
   WHERE id = p_attempt
  RETURNING * INTO a;
  IF p_outcome IN ('accepted', 'reconciled') THEN
    -- Earlier attempts of this message at the same account that were still in
    -- flight were resent under the same idempotency key and are settled by this
    -- one; left open they would read as unexplained in-flight sends.
    UPDATE sms_attempts
       SET outcome = 'failed', error_code = 'SUPERSEDED', finished_at = now(),
           error_message = left(COALESCE(error_message || ' | ', '') || 'settled by attempt ' || p_attempt, 500)
     WHERE outbox_id = a.outbox_id AND account_key = a.account_key AND outcome = 'in_flight' AND id < p_attempt;
    -- The message is sent: record it on the outbox row in the same transaction
    -- as the accepted attempt, so the two can never disagree. Only the current
    -- lease holder may, as everywhere else.
    UPDATE sms_outbox o
       SET status = 'sent', sent_at = now(), provider = a.provider,
           provider_message_id = COALESCE(a.provider_message_id, o.provider_message_id),
           from_number = COALESCE(a.from_number, o.from_number),
           locked_until = NULL, locked_by = NULL, updated_at = now()
     WHERE o.id = a.outbox_id AND o.status = 'sending' AND o.locked_by = p_worker;
  END IF;
  IF p_opt_out THEN
    INSERT INTO sms_opt_outs (org_id, phone, source)
    SELECT a.org_id, o.to_phone, 'provider:' || a.provider || ':' || COALESCE(p_code, '')
      FROM sms_outbox o WHERE o.id = a.outbox_id
    ON CONFLICT DO NOTHING;
  END IF;
END
$$;

-- A skipped provider (breaker open, empty pool) is part of the audit trail too.
CREATE FUNCTION sms_record_skip(
  p_org uuid, p_outbox uuid, p_provider text, p_account text, p_class text, p_code text, p_message text
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  INSERT INTO sms_attempts (outbox_id, org_id, provider, account_key, outcome, error_class, error_code,
                            error_message, failed_over, latency_ms, finished_at)
  VALUES (p_outbox, p_org, p_provider, p_account, 'skipped', p_class, p_code, p_message, true, 0, now());
END
$$;

GRANT EXECUTE ON FUNCTION sms_gate, sms_begin_attempt, sms_finish_attempt, sms_record_skip TO clinic_worker;
