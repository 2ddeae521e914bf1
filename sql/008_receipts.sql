-- Provider webhooks: delivery receipts, inbound texts (STOP / START / HELP and
-- replies for the inbox), the wait of an ambiguous attempt for evidence, and
-- the one resend after a failure receipt. See docs/sms.md ("Delivery
-- receipts", "Inbound texts") and src/sms/receipts.ts, src/sms/inbound.ts.
--
-- 004's gate, settle and requeue are replaced here (applied migrations are
-- checksummed, so 004 itself is left as it was).

-- Clinic settings the webhooks need: a contact number for HELP answers, and
-- per link the settings that are not secret (a Telnyx link's webhook public
-- key, who answers keywords on a Twilio link). Returned by GET .../sms.
ALTER TABLE sms_settings
  ADD COLUMN contact_phone text CHECK (contact_phone ~ '^\+[1-9][0-9]{6,14}$');
ALTER TABLE sms_providers
  ADD COLUMN link_settings jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Delivery state of each attempt a provider accepted, moved forward only by
-- receipts and lookups: accepted -> sent -> delivered | undelivered | failed.
-- NULL: the provider never accepted this attempt (as far as we know).
ALTER TABLE sms_attempts
  ADD COLUMN delivery_state text CHECK (delivery_state IN ('accepted', 'sent', 'delivered', 'undelivered', 'failed')),
  -- The provider's asynchronous error code of a final undelivered / failed receipt (Twilio 30007, Telnyx 40002).
  ADD COLUMN delivery_code text,
  -- Its class from the adapter's code table: provider (resend once elsewhere), recipient, transient.
  ADD COLUMN delivery_class text,
  -- When the latest receipt (or lookup) that moved the state arrived.
  ADD COLUMN receipt_at timestamptz,
  ADD COLUMN delivered_at timestamptz,
  -- When a lost receipt was looked up at the provider (once, after SMS_RECEIPT_TIMEOUT_MS).
  ADD COLUMN lookup_at timestamptz,
  -- Delivered although another attempt of the same confirmation was delivered too: a duplicate text.
  ADD COLUMN duplicate_delivery boolean NOT NULL DEFAULT false;

CREATE INDEX sms_attempts_message_idx ON sms_attempts (org_id, provider, provider_message_id)
  WHERE provider_message_id IS NOT NULL;
CREATE INDEX sms_attempts_receipt_due_idx ON sms_attempts (started_at)
  WHERE delivery_state IN ('accepted', 'sent') AND lookup_at IS NULL;
-- The status figures read recent attempts by time. Attempts are written in
-- time order, so a BRIN index finds them for almost nothing on the send path.
CREATE INDEX sms_attempts_started_brin ON sms_attempts USING brin (started_at);

-- An attempt that becomes accepted or reconciled (settle, reconcile, a receipt)
-- starts its delivery state at 'accepted', wherever that happens.
CREATE FUNCTION sms_attempts_accepted_state() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF NEW.outcome IN ('accepted', 'reconciled') AND NEW.delivery_state IS NULL THEN
    NEW.delivery_state := 'accepted';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER sms_attempts_accepted_state BEFORE INSERT OR UPDATE OF outcome ON sms_attempts
  FOR EACH ROW EXECUTE FUNCTION sms_attempts_accepted_state();

-- Attempts accepted before this migration: accepted, and not looked up again.
-- The table's row security binds its owner too; it is lifted for this one
-- statement inside the migration's transaction.
ALTER TABLE sms_attempts NO FORCE ROW LEVEL SECURITY;
UPDATE sms_attempts SET delivery_state = 'accepted', lookup_at = now()
 WHERE outcome IN ('accepted', 'reconciled') AND delivery_state IS NULL;
ALTER TABLE sms_attempts FORCE ROW LEVEL SECURITY;

-- The one resend after a failure receipt is a row of its own, kind
-- '<kind>:resend', so the unique (org, appointment, kind) makes "once" a fact
-- of the schema: two processes handling the same failure cannot both insert it.
-- waiting_since: set while an ambiguous attempt waits for evidence (a receipt
-- or a lookup); such runs are not counted against SMS_MAX_ATTEMPTS.
ALTER TABLE sms_outbox
  ADD COLUMN waiting_since timestamptz,
  ADD COLUMN resend_of uuid REFERENCES sms_outbox(id) ON DELETE SET NULL,
  -- The account whose failure the resend replaces: the engine sends through the links after it.
  ADD COLUMN resend_after_account text;
CREATE INDEX sms_outbox_resend_idx ON sms_outbox (resend_of) WHERE resend_of IS NOT NULL;

-- Every signed webhook request, stored before anything acts on it. The exact
-- signature of a stored request is never accepted again (a replay); another
-- delivery of the same event (a new signature) is stored and processed
-- idempotently by event_key.
CREATE TABLE sms_webhook_events (
  id                  bigserial PRIMARY KEY,
  org_id              uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  provider            text NOT NULL,
  -- The clinic's account whose key verified the signature.
  account_key         text NOT NULL,
  kind                text NOT NULL CHECK (kind IN ('receipt', 'inbound', 'probe', 'other')),
  -- The provider's identity of the event: Telnyx's event id; Twilio's
  -- MessageSid:MessageStatus for a receipt, MessageSid for an inbound text.
  event_key           text NOT NULL,
  provider_message_id text,
  signature_sha256    text NOT NULL,
  -- The public URL the signature was checked against, query included (?m= names our outbox row).
  request_url         text NOT NULL,
  raw_body            text NOT NULL,
  received_at         timestamptz NOT NULL DEFAULT now(),
  -- NULL until processed (a crash, or a receipt that waits for a run holding its message).
  processed_at        timestamptz,
  -- applied, duplicate, stale, unmatched (a message we do not know), opt_out, opt_in, help, inbox, probe, ignored
  outcome             text,
  attempt_id          bigint,
  UNIQUE (provider, signature_sha256)
);
CREATE INDEX sms_webhook_events_pending_idx ON sms_webhook_events (received_at) WHERE processed_at IS NULL;
-- The inbound duplicate check's lookup; receipts are deduplicated by their attempt's state instead.
CREATE INDEX sms_webhook_events_key_idx ON sms_webhook_events (org_id, provider, event_key) WHERE kind = 'inbound';
CREATE INDEX sms_webhook_events_unmatched_idx ON sms_webhook_events (received_at) WHERE outcome = 'unmatched';

-- The opt-out registry keeps one row per opted-out phone (sms_opt_outs, the
-- gate reads it); every opt-out and opt-in is also kept as history, so a START
-- does not erase that there was a STOP.
ALTER TABLE sms_opt_outs ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX sms_opt_outs_id_idx ON sms_opt_outs (id);
CREATE INDEX sms_opt_outs_list_idx ON sms_opt_outs (org_id, created_at DESC, id DESC);

CREATE TABLE sms_opt_out_events (
  id         bigserial PRIMARY KEY,
  org_id     uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
  phone      text NOT NULL,
  action     text NOT NULL CHECK (action IN ('opt_out', 'opt_in')),
  -- e.g. inbound:twilio:STOP, provider:twilio:21610 (a refused send), receipt:telnyx:40300
  source     text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_opt_out_events_phone_idx ON sms_opt_out_events (org_id, phone, id);

-- History is written by the registry itself, whoever changes it (an inbound
-- keyword, a provider refusal in sms_finish_attempt, a receipt). An opt-in
-- names its source through app.sms_opt_source, set in the same transaction.
CREATE FUNCTION sms_opt_outs_history() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  -- The service roles act under the row's clinic already; an operator
  -- changing the registry by hand (as the owner) need not remember to.
  IF current_org() IS NULL THEN
    PERFORM set_config('app.org_id', COALESCE(NEW.org_id, OLD.org_id)::text, true);
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO sms_opt_out_events (org_id, phone, action, source) VALUES (NEW.org_id, NEW.phone, 'opt_out', NEW.source);
    RETURN NEW;
  END IF;
  INSERT INTO sms_opt_out_events (org_id, phone, action, source)
  VALUES (OLD.org_id, OLD.phone, 'opt_in', COALESCE(NULLIF(current_setting('app.sms_opt_source', true), ''), 'unknown'));
  RETURN OLD;
END
$$;
CREATE TRIGGER sms_opt_outs_history AFTER INSERT OR DELETE ON sms_opt_outs
  FOR EACH ROW EXECUTE FUNCTION sms_opt_outs_history();

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['sms_webhook_events', 'sms_opt_out_events'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY %I ON %I USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()))',
                   t || '_tenant', t);
  END LOOP;
END $$;
-- The worker's sweeps find unprocessed events of every clinic before they know
-- whose they are; everything they then do runs under the event's org.
CREATE POLICY sms_webhook_events_worker_read ON sms_webhook_events FOR SELECT TO clinic_worker USING (true);

-- The request path (clinic_app) may only append verified events and read
-- back the id; acting on them is the worker role's.
GRANT INSERT ON sms_webhook_events TO clinic_app;
-- id for RETURNING; provider and signature_sha256 because ON CONFLICT names them.
GRANT SELECT (id, provider, signature_sha256) ON sms_webhook_events TO clinic_app;
GRANT USAGE ON SEQUENCE sms_webhook_events_id_seq TO clinic_app;
GRANT SELECT ON sms_webhook_events TO clinic_worker;
GRANT UPDATE (processed_at, outcome, attempt_id) ON sms_webhook_events TO clinic_worker;
GRANT SELECT ON sms_opt_out_events TO clinic_app, clinic_worker;
GRANT INSERT ON sms_opt_out_events TO clinic_worker;
GRANT USAGE ON SEQUENCE sms_opt_out_events_id_seq TO clinic_worker;
GRANT DELETE ON sms_opt_outs TO clinic_worker;
-- The resend row is enqueued by the worker role (the receipt processor).
GRANT INSERT ON sms_outbox TO clinic_worker;

-- Stores one verified webhook request under its clinic. NULL when the exact
-- signature was stored before: a replay, refused by the caller.
CREATE FUNCTION sms_store_webhook_event(
  p_org uuid, p_provider text, p_account text, p_kind text, p_event_key text, p_message_id text,
  p_signature_sha256 text, p_url text, p_raw text
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  v_id bigint;
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  INSERT INTO sms_webhook_events (org_id, provider, account_key, kind, event_key, provider_message_id,
                                  signature_sha256, request_url, raw_body)
  VALUES (p_org, p_provider, p_account, p_kind, p_event_key, p_message_id, p_signature_sha256, p_url, p_raw)
  ON CONFLICT (provider, signature_sha256) DO NOTHING
  RETURNING id INTO v_id;
  RETURN v_id;
END
$$;

-- Many webhook requests stored in one statement (one commit): the request
-- path group-commits them. Items: [{org, provider, account, kind, key,
-- messageId, sig, url, raw}]; answers (idx, id), id NULL for a replay.
CREATE FUNCTION sms_store_webhook_events(p_items jsonb) RETURNS TABLE (idx integer, id bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  e jsonb;
  i integer := 0;
BEGIN
  FOR e IN SELECT * FROM jsonb_array_elements(p_items) LOOP
    idx := i;
    id := sms_store_webhook_event((e ->> 'org')::uuid, e ->> 'provider', e ->> 'account', e ->> 'kind', e ->> 'key',
                                  e ->> 'messageId', e ->> 'sig', e ->> 'url', e ->> 'raw');
    RETURN NEXT;
    i := i + 1;
  END LOOP;
END
$$;

-- Whether any attempt of a confirmation (its original row p_root, and the
-- row that resends it) other than p_except has a delivered receipt. Two index
-- lookups: one on the original's attempts, one through the resend rows.
CREATE FUNCTION sms_confirmation_delivered(p_root uuid, p_except bigint) RETURNS boolean
  LANGUAGE sql STABLE
  AS $$
    SELECT EXISTS (SELECT 1 FROM sms_attempts x
                    WHERE x.outbox_id = p_root AND x.delivery_state = 'delivered' AND x.id IS DISTINCT FROM p_except)
        OR EXISTS (SELECT 1 FROM sms_outbox g JOIN sms_attempts x ON x.outbox_id = g.id
                    WHERE g.resend_of = p_root AND x.delivery_state = 'delivered' AND x.id IS DISTINCT FROM p_except)
  $$;

-- How far a delivery state is along: a receipt only ever moves it forward.
CREATE FUNCTION sms_delivery_rank(p_state text) RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT CASE p_state WHEN 'accepted' THEN 1 WHEN 'sent' THEN 2
                            WHEN 'delivered' THEN 3 WHEN 'undelivered' THEN 3 WHEN 'failed' THEN 3 ELSE 0 END $$;

-- Applies one delivery receipt (or the answer of a lookup, p_event NULL) to
-- the attempt it is about, and decides what follows, in one transaction:
--
-- - The attempt is found by the provider's message id, or, when the callback
--   URL we named carried our outbox row (p_outbox), as that row's attempt at
--   this account whose answer never came (in flight, or given up as ambiguous).
--   None: the event is kept as 'unmatched' (a later sweep matches it once the
--   message id is recorded).
-- - While a run holds the message (status 'sending') nothing is applied and
--   the event stays unprocessed ('deferred'): the run's own settle decides
--   first, and the receipt is applied right after.
-- - States only move forward (sms_delivery_rank): a repeated state is a
--   'duplicate', a late earlier one 'stale'; neither changes anything.
-- - A receipt proves the provider accepted the attempt: one that was in flight
--   or given up becomes 'reconciled', and a message waiting for that evidence
--   is made due, so its next run settles it sent (sms_settle stays the only
--   place a row becomes sent).
-- - delivered: counted as a duplicate when another attempt of the same
--   confirmation (the row, its resend) was delivered too.
-- - undelivered / failed of class 'provider' (sender, provider or carrier
--   filtering) on the confirmation's current attempt, with nothing of it
--   delivered: the resend row is enqueued, once, to go through the next
--   provider. Other classes are only recorded. A STOP-class code also writes
--   the opt-out registry.
--
-- Receipts of one appointment are applied one at a time (an advisory lock;
-- the second comes back 'deferred' and is tried again), so two processes
-- handling the same failure at once decide once.
CREATE FUNCTION sms_apply_receipt(
  p_org uuid, p_event bigint, p_provider text, p_account text, p_outbox uuid, p_message_id text,
  p_state text, p_code text, p_class text, p_opt_out boolean
) RETURNS jsonb
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
  v_att     bigint;
  v_outbox  uuid;
  v_appt    uuid;
  a         sms_attempts%ROWTYPE;
  o         sms_outbox%ROWTYPE;
  v_root    uuid;
  v_outcome text;
  v_dup     boolean := false;
  v_resend  uuid;
  v_proved  boolean := false;
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  IF p_message_id IS NOT NULL THEN
    SELECT t.id, t.outbox_id INTO v_att, v_outbox FROM sms_attempts t
     WHERE t.org_id = p_org AND t.provider = p_provider AND t.provider_message_id = p_message_id
     ORDER BY t.id DESC LIMIT 1;
  END IF;
  IF v_att IS NULL AND p_outbox IS NOT NULL THEN
    SELECT t.id, t.outbox_id INTO v_att, v_outbox FROM sms_attempts t
     WHERE t.outbox_id = p_outbox AND t.org_id = p_org AND t.account_key = p_account AND t.provider_message_id IS NULL
       AND (t.outcome = 'in_flight' OR (t.outcome = 'failed' AND t.error_class = 'ambiguous'))
     ORDER BY t.id DESC LIMIT 1;
  END IF;
  IF v_att IS NULL THEN
    IF p_event IS NOT NULL THEN
      UPDATE sms_webhook_events SET processed_at = now(), outcome = 'unmatched' WHERE id = p_event;
    END IF;
    RETURN jsonb_build_object('outcome', 'unmatched');
  END IF;

  SELECT x.appointment_id INTO v_appt FROM sms_outbox x WHERE x.id = v_outbox;
  -- Nothing here waits for a lock: whoever holds one (another process on the
  -- same appointment, a settle under way) finishes first and this receipt is
  -- tried again ('deferred'). So batches of receipts and settles can never
  -- deadlock on each other.
  IF NOT pg_try_advisory_xact_lock(hashtextextended('sms-receipt|' || v_appt::text, 0)) THEN
    RETURN jsonb_build_object('outcome', 'deferred', 'attemptId', v_att, 'outboxId', v_outbox);
  END IF;
  SELECT * INTO a FROM sms_attempts WHERE id = v_att FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('outcome', 'deferred', 'attemptId', v_att, 'outboxId', v_outbox);
  END IF;
  SELECT * INTO o FROM sms_outbox WHERE id = a.outbox_id FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('outcome', 'deferred', 'attemptId', a.id, 'outboxId', v_outbox);
  END IF;
  -- A run holds the message. Its own decision comes first, except for the one
  -- thing a waiting message is waiting for: the proof that its ambiguous
  -- attempt was accepted. That is recorded on the attempt at once (the run
  -- looking it up cannot give up on it any more, sms_give_up_attempt), and
  -- the next run settles the message sent.
  IF o.status = 'sending' AND NOT (o.waiting_since IS NOT NULL AND a.outcome NOT IN ('accepted', 'reconciled')
                                   AND p_state IN ('sent', 'delivered')) THEN
    RETURN jsonb_build_object('outcome', 'deferred', 'attemptId', a.id, 'outboxId', o.id);
  END IF;
  v_root := COALESCE(o.resend_of, o.id);

  IF a.delivery_state = p_state THEN
    v_outcome := 'duplicate';
  ELSIF sms_delivery_rank(p_state) <= sms_delivery_rank(a.delivery_state) THEN
    v_outcome := 'stale';
  ELSE
    v_outcome := 'applied';
    v_proved := a.outcome NOT IN ('accepted', 'reconciled');
    IF p_state = 'delivered' THEN
      v_dup := sms_confirmation_delivered(v_root, a.id);
    END IF;
    UPDATE sms_attempts
       SET delivery_state = p_state,
           delivery_code = CASE WHEN p_state IN ('undelivered', 'failed') THEN p_code ELSE delivery_code END,
           delivery_class = CASE WHEN p_state IN ('undelivered', 'failed') THEN p_class ELSE delivery_class END,
           receipt_at = now(),
           delivered_at = CASE WHEN p_state = 'delivered' THEN now() ELSE delivered_at END,
           duplicate_delivery = duplicate_delivery OR v_dup,
           provider_message_id = COALESCE(provider_message_id, p_message_id),
           outcome = CASE WHEN v_proved THEN 'reconciled' ELSE outcome END,
           finished_at = COALESCE(finished_at, now()),
           error_message = CASE WHEN v_proved
                                THEN left(COALESCE(error_message || ' | ', '') || 'accepted, as a receipt showed', 500)
                                ELSE error_message END
     WHERE id = a.id;

    IF v_proved THEN
      -- Earlier attempts at the same account still in flight were the same
      -- message resent under one idempotency key, or are explained by this one.
      UPDATE sms_attempts
         SET outcome = 'failed', error_code = 'SUPERSEDED', finished_at = now(),
             error_message = left(COALESCE(error_message || ' | ', '') || 'settled by attempt ' || a.id, 500)
       WHERE outbox_id = o.id AND account_key = a.account_key AND outcome = 'in_flight' AND id < a.id;
      -- Waiting for this evidence: due now, so its next run settles it sent.
      UPDATE sms_outbox SET next_attempt_at = now(), updated_at = now() WHERE id = o.id AND status = 'pending';
    END IF;

    IF p_state IN ('undelivered', 'failed') THEN
      IF p_opt_out THEN
        INSERT INTO sms_opt_outs (org_id, phone, source)
        VALUES (p_org, o.to_phone, 'receipt:' || p_provider || ':' || COALESCE(p_code, ''))
        ON CONFLICT DO NOTHING;
      END IF;
      IF p_class = 'provider' AND o.resend_of IS NULL AND NOT o.dry_run AND o.status IN ('sent', 'pending')
         AND o.expires_at > now()
         -- The confirmation's current attempt: nothing later is accepted or in flight ...
         AND NOT EXISTS (SELECT 1 FROM sms_attempts x WHERE x.outbox_id = o.id AND x.id > a.id
                            AND x.outcome IN ('accepted', 'reconciled', 'in_flight'))
         -- ... and nothing of it reached the patient.
         AND NOT sms_confirmation_delivered(v_root, NULL) THEN
        INSERT INTO sms_outbox (org_id, appointment_id, kind, to_phone, body, expires_at, dry_run,
                                bypass_rate_limit, resend_of, resend_after_account)
        VALUES (o.org_id, o.appointment_id, o.kind || ':resend', o.to_phone, o.body, o.expires_at, false,
                -- The patient has had no text from this confirmation: the resend replaces it, not adds to it.
                true, o.id, a.account_key)
        ON CONFLICT (org_id, appointment_id, kind) DO NOTHING
        RETURNING id INTO v_resend;
      END IF;
    END IF;
  END IF;

  IF p_event IS NOT NULL THEN
    UPDATE sms_webhook_events SET processed_at = now(), outcome = v_outcome, attempt_id = a.id WHERE id = p_event;
  END IF;
  RETURN jsonb_build_object('outcome', v_outcome, 'attemptId', a.id, 'outboxId', o.id, 'state', p_state,
                            'duplicate', v_dup, 'resendId', v_resend, 'accountKey', a.account_key,
                            'proved', v_proved);
END
$$;

-- Many receipts in one statement (one commit), in the order given; each is
-- sms_apply_receipt. Items: [{org, event, provider, account, outbox,
-- messageId, state, code, class, optOut}]; answers (idx, result).
CREATE FUNCTION sms_apply_receipts(p_items jsonb) RETURNS TABLE (idx integer, result jsonb)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
  e jsonb;
  i integer := 0;
BEGIN
  FOR e IN SELECT * FROM jsonb_array_elements(p_items) LOOP
    idx := i;
    result := sms_apply_receipt((e ->> 'org')::uuid, (e ->> 'event')::bigint, e ->> 'provider', e ->> 'account',
                                (e ->> 'outbox')::uuid, e ->> 'messageId', e ->> 'state', e ->> 'code', e ->> 'class',
                                COALESCE((e ->> 'optOut')::boolean, false));
    RETURN NEXT;
    i := i + 1;
  END LOOP;
END
$$;

-- Gives up on an ambiguous attempt (no evidence within SMS_AMBIGUOUS_MAX_MS)
-- before the message fails over, unless a receipt proved it meanwhile: then
-- nothing changes and the caller settles the message sent instead. Answers
-- {gaveUp, providerMessageId}. Only the lease holder may.
CREATE FUNCTION sms_give_up_attempt(p_org uuid, p_attempt bigint, p_worker text, p_message text) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  a sms_attempts%ROWTYPE;
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  PERFORM 1 FROM sms_outbox o JOIN sms_attempts t ON t.outbox_id = o.id
    WHERE t.id = p_attempt AND o.status = 'sending' AND o.locked_by = p_worker
      FOR SHARE OF o;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'sms attempt % is not held by this worker', p_attempt USING ERRCODE = 'SM001';
  END IF;
  SELECT * INTO a FROM sms_attempts WHERE id = p_attempt FOR UPDATE;
  IF a.outcome IN ('accepted', 'reconciled') THEN
    RETURN jsonb_build_object('gaveUp', false, 'providerMessageId', a.provider_message_id);
  END IF;
  UPDATE sms_attempts
     SET outcome = 'failed', error_class = 'ambiguous', error_code = 'UNRECONCILED', finished_at = now(),
         error_message = left(COALESCE(error_message || ' | ', '') || p_message, 500)
   WHERE id = p_attempt;
  RETURN jsonb_build_object('gaveUp', true);
END
$$;

-- Marks an event processed without a receipt to apply (inbound texts, probes,
-- events of no interest).
CREATE FUNCTION sms_webhook_event_done(p_org uuid, p_event bigint, p_outcome text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM set_config('app.org_id', p_org::text, true);
  UPDATE sms_webhook_events SET processed_at = now(), outcome = p_outcome WHERE id = p_event;
END
$$;

-- Lost receipts: attempts a receipt-capable provider (p_kinds) accepted more
-- than p_timeout_ms ago that still have no final receipt and were never
-- looked up. Each is claimed (lookup_at) by exactly one caller, once.
CREATE FUNCTION sms_claim_lost_receipts(p_timeout_ms integer, p_kinds text[], p_limit integer)
RETURNS TABLE (attempt_id bigint, org_id uuid, outbox_id uuid, provider text, account_key text, provider_message_id text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  v_org uuid;
BEGIN
  FOR v_org IN
    SELECT DISTINCT t.org_id FROM sms_attempts t
     WHERE t.delivery_state IN ('accepted', 'sent') AND t.lookup_at IS NULL AND t.provider = ANY (p_kinds)
       AND t.started_at < now() - p_timeout_ms * interval '1 millisecond'
  LOOP
    PERFORM set_config('app.org_id', v_org::text, true);
    RETURN QUERY
    WITH claimed AS (
      UPDATE sms_attempts s SET lookup_at = now()
        FROM (SELECT t.id FROM sms_attempts t
               WHERE t.org_id = v_org AND t.delivery_state IN ('accepted', 'sent') AND t.lookup_at IS NULL
                 AND t.provider = ANY (p_kinds) AND t.started_at < now() - p_timeout_ms * interval '1 millisecond'
               ORDER BY t.started_at LIMIT p_limit FOR UPDATE SKIP LOCKED) due
       WHERE s.id = due.id
      RETURNING s.id, s.org_id, s.outbox_id, s.provider, s.account_key, s.provider_message_id
    )
    SELECT * FROM claimed;
  END LOOP;
END
$$;

-- Per clinic and provider account, for attempts started since p_since (the
-- status API reads the last hour): what the providers accepted, and what
-- became of it.
--   accepted             attempts the provider accepted (by its answer, a lookup or a receipt)
--   delivered            ... with a delivered receipt
--   undelivered          ... with a final undelivered receipt
--   failed               ... with a final failed receipt
--   awaiting_receipt     ... with no final receipt yet
--   async_failovers      confirmations resent elsewhere after a failure receipt on this account
--   ambiguous_failovers  attempts on this account given up after SMS_AMBIGUOUS_MAX_MS, the message sent elsewhere
--   duplicate_deliveries delivered although another attempt of the same confirmation was delivered too
CREATE FUNCTION sms_delivery_stats(p_since timestamptz)
RETURNS TABLE (org_id uuid, provider text, account_key text, accepted bigint, delivered bigint, undelivered bigint,
               failed bigint, awaiting_receipt bigint, async_failovers bigint, ambiguous_failovers bigint,
               duplicate_deliveries bigint)
LANGUAGE sql STABLE
AS $$
  SELECT a.org_id, a.provider, a.account_key,
         count(*) FILTER (WHERE a.delivery_state IS NOT NULL),
         count(*) FILTER (WHERE a.delivery_state = 'delivered'),
         count(*) FILTER (WHERE a.delivery_state = 'undelivered'),
         count(*) FILTER (WHERE a.delivery_state = 'failed'),
         count(*) FILTER (WHERE a.delivery_state IN ('accepted', 'sent')),
         count(*) FILTER (WHERE EXISTS (SELECT 1 FROM sms_outbox r
                                         WHERE r.resend_of = a.outbox_id AND r.resend_after_account = a.account_key)
                            AND a.delivery_state IN ('undelivered', 'failed')),
         count(*) FILTER (WHERE a.error_code = 'UNRECONCILED'),
         count(*) FILTER (WHERE a.duplicate_delivery)
    FROM sms_attempts a
   WHERE a.started_at >= p_since AND a.outcome <> 'skipped'
   GROUP BY a.org_id, a.provider, a.account_key
$$;

-- The gate of 004, and for the engine also: when the message waits for
-- evidence, since when (waitingSince in in_flight), and for a resend row,
-- which account's failure it replaces (resend_after).
DROP FUNCTION sms_gate_batch(uuid[], integer);
CREATE FUNCTION sms_gate_batch(p_ids uuid[], p_default_limit integer)
RETURNS TABLE (outbox_id uuid, decision text, provider text, provider_message_id text, from_number text,
               in_flight jsonb, resend_after text)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_org   uuid;
  v_ids   uuid[];
  v_limit integer;
  v_keys  bigint[];
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
             WHERE o.id = ANY (v_ids) AND NOT o.bypass_rate_limit) s;
    IF v_keys IS NOT NULL THEN
      PERFORM pg_advisory_xact_lock(k) FROM unnest(v_keys) AS k;
    END IF;
    SELECT COALESCE((SELECT rate_limit_per_hour FROM sms_settings WHERE org_id = v_org), p_default_limit)
      INTO v_limit;

    RETURN QUERY
    WITH r AS MATERIALIZED (
      SELECT o.id, o.to_phone, o.created_at, o.waiting_since, o.resend_after_account,
             acc.provider AS acc_provider, acc.provider_message_id AS acc_pmid, acc.from_number AS acc_from,
             o.bypass_rate_limit OR EXISTS (SELECT 1 FROM sms_rate_log l WHERE l.org_id = v_org AND l.outbox_id = o.id)
               AS exempt,
             CASE
               WHEN acc.id IS NOT NULL THEN 'already_sent'
               WHEN a.status IS DISTINCT FROM 'booked' THEN 'cancelled'
               WHEN o.expires_at <= now() THEN 'expired'
               WHEN a.starts_at <> o.expires_at THEN 'superseded'
               WHEN EXISTS (SELECT 1 FROM sms_opt_outs x WHERE x.org_id = v_org AND x.phone = o.to_phone) THEN 'opted_out'
               ELSE 'send'
             END AS pre
        FROM sms_outbox o
        LEFT JOIN LATERAL (SELECT ap.status, ap.starts_at FROM appointments ap
                            WHERE ap.id = o.appointment_id LIMIT 1) a ON true
        LEFT JOIN LATERAL (SELECT t.id, t.provider, t.provider_message_id, t.from_number FROM sms_attempts t
                            WHERE t.outbox_id = o.id AND t.outcome IN ('accepted', 'reconciled')
                            ORDER BY t.id DESC LIMIT 1) acc ON true
       WHERE o.id = ANY (v_ids)
    ), ranked AS MATERIALIZED (
      SELECT r.id, r.to_phone, row_number() OVER (PARTITION BY r.to_phone ORDER BY r.created_at, r.id) AS nth,
             (SELECT count(*) FROM sms_rate_log l
               WHERE l.org_id = v_org AND l.recipient = r.to_phone AND l.at > now() - interval '1 hour') AS used
        FROM r WHERE r.pre = 'send' AND NOT r.exempt
    ), allowed AS MATERIALIZED (
      SELECT ranked.id, ranked.to_phone FROM ranked WHERE ranked.used + ranked.nth <= v_limit
    ), logged AS (
      INSERT INTO sms_rate_log (org_id, recipient, outbox_id)
      SELECT v_org, allowed.to_phone, allowed.id FROM allowed
      ON CONFLICT DO NOTHING
      RETURNING 1
    )
    SELECT r.id,
           CASE WHEN r.pre <> 'send' THEN r.pre
                WHEN r.exempt OR r.id IN (SELECT allowed.id FROM allowed) THEN 'send'
                ELSE 'rate_limited' END,
           r.acc_provider, r.acc_pmid, r.acc_from, f.j, r.resend_after_account
      FROM r
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

-- The next look at a message waiting for evidence: as long again as it has
-- waited (from p_retry_base_ms up to p_retry_max_ms), and never past the
-- moment it stops waiting (p_deadline), so the run that fails over comes on time.
CREATE FUNCTION sms_wait_delay(p_since timestamptz, p_deadline timestamptz, p_base_ms integer, p_max_ms integer)
RETURNS interval
  LANGUAGE sql STABLE
  AS $$
    SELECT greatest(p_base_ms::double precision,
                    least(p_max_ms::double precision,
                          extract(epoch FROM now() - p_since) * 1000,
                          CASE WHEN p_deadline > now() THEN extract(epoch FROM p_deadline - now()) * 1000
                               ELSE p_base_ms END)) * interval '1 millisecond'
  $$;

-- The settle of 004, plus the wait: an item with "wait" (an ambiguous attempt
-- no lookup could settle) goes back to pending with waiting_since set (from
-- the waited-on attempt's start, "waitFrom"), is looked at again after
-- sms_wait_delay, and never becomes a dead letter by running out of runs; the
-- claim does not count its runs. Any other settle ends the wait.
DROP FUNCTION sms_settle(text, jsonb, integer, integer, integer);
CREATE FUNCTION sms_settle(p_worker text, p_items jsonb, p_retry_base_ms integer, p_retry_max_ms integer,
                           p_max_attempts integer, p_ambiguous_max_ms integer)
RETURNS TABLE (outbox_id uuid, status text)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_org uuid;
  v_ids uuid[] := ARRAY(SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(p_items) e);
BEGIN
  FOR v_org IN SELECT DISTINCT (e ->> 'org')::uuid FROM jsonb_array_elements(p_items) e
                WHERE e ? 'attempt' ORDER BY 1 LOOP
    PERFORM set_config('app.org_id', v_org::text, true);
    WITH f AS MATERIALIZED (
      SELECT (e -> 'attempt' ->> 'id')::bigint AS id, e -> 'attempt' ->> 'outcome' AS outcome,
             e -> 'attempt' ->> 'errorClass' AS cls, e -> 'attempt' ->> 'code' AS code,
             e -> 'attempt' ->> 'message' AS msg, e -> 'attempt' ->> 'providerMessageId' AS pmid,
             (e -> 'attempt' ->> 'latencyMs')::integer AS latency
        FROM jsonb_array_elements(p_items) e
       WHERE e ? 'attempt' AND (e ->> 'org')::uuid = v_org
    ), closed AS (
      UPDATE sms_attempts a
         SET outcome = f.outcome,
             error_class = COALESCE(f.cls, a.error_class),
             error_code = COALESCE(f.code, a.error_code),
             error_message = left(CASE WHEN a.error_message IS NULL OR f.msg IS NULL THEN COALESCE(f.msg, a.error_message)
                                       WHEN a.error_message = f.msg THEN a.error_message
                                       ELSE a.error_message || ' | ' || f.msg END, 500),
             provider_message_id = COALESCE(f.pmid, a.provider_message_id),
             latency_ms = COALESCE(f.latency, a.latency_ms),
             finished_at = now()
        FROM f
       WHERE a.id = ANY (ARRAY(SELECT f.id FROM f)) AND a.id = f.id AND f.outcome IN ('accepted', 'reconciled')
      RETURNING a.id, a.outbox_id, a.account_key
    )
    UPDATE sms_attempts s
       SET outcome = 'failed', error_code = 'SUPERSEDED', finished_at = now(),
           error_message = left(COALESCE(s.error_message || ' | ', '') || 'settled by attempt ' || closed.id, 500)
      FROM closed
     WHERE s.outbox_id = closed.outbox_id AND s.account_key = closed.account_key AND s.outcome = 'in_flight'
       AND s.id < closed.id;
  END LOOP;

  RETURN QUERY
  WITH i AS MATERIALIZED (
    SELECT x.* FROM jsonb_to_recordset(p_items)
             AS x(id uuid, status text, reason text, "errorClass" text, code text, message text, provider text,
                  "providerMessageId" text, "from" text, wait boolean, "waitFrom" timestamptz)
  ), j AS MATERIALIZED (
    SELECT i.*, COALESCE(i.wait, false) AS waits, o.attempts AS runs,
           COALESCE(o.waiting_since, i."waitFrom", now()) AS since
      FROM i JOIN sms_outbox o ON o.id = i.id
     WHERE o.id = ANY (v_ids)
  ), moved AS (
    UPDATE sms_outbox o
       SET status = CASE WHEN j.waits THEN 'pending'
                         WHEN j.status = 'pending' AND o.attempts >= p_max_attempts THEN 'failed' ELSE j.status END,
           next_attempt_at = CASE WHEN j.waits
                                  THEN now() + sms_wait_delay(j.since, j.since + p_ambiguous_max_ms * interval '1 millisecond',
                                                              p_retry_base_ms, p_retry_max_ms)
                                  WHEN j.status = 'pending' AND o.attempts < p_max_attempts
                                  THEN now() + sms_retry_delay(o.attempts, p_retry_base_ms, p_retry_max_ms)
                                  ELSE o.next_attempt_at END,
           waiting_since = CASE WHEN j.waits THEN j.since ELSE NULL END,
           sent_at = CASE WHEN j.status = 'sent' THEN now() ELSE o.sent_at END,
           failed_at = CASE WHEN j.waits THEN o.failed_at
                            WHEN j.status = 'failed' OR (j.status = 'pending' AND o.attempts >= p_max_attempts)
                            THEN now() ELSE o.failed_at END,
           failure_reason = CASE WHEN j.waits THEN o.failure_reason
                                 WHEN j.status = 'pending' AND o.attempts >= p_max_attempts THEN 'retries_exhausted'
                                 WHEN j.status IN ('failed', 'cancelled') THEN j.reason
                                 ELSE o.failure_reason END,
           last_error = CASE WHEN j.waits THEN left(j.reason || ': ' || j.message, 500)
                             WHEN j.status = 'pending' AND o.attempts >= p_max_attempts
                             THEN left('retries_exhausted: ' || j.reason || ': ' || j.message, 500)
                             WHEN j.status IN ('pending', 'failed') THEN left(j.reason || ': ' || j.message, 500)
                             WHEN j.status = 'cancelled' THEN j.reason
                             ELSE o.last_error END,
           last_error_class = CASE WHEN j.waits THEN COALESCE(j."errorClass", j.reason)
                                   WHEN j.status = 'pending' AND o.attempts >= p_max_attempts
                                   THEN COALESCE(j."errorClass", 'retries_exhausted')
                                   WHEN j.status IN ('pending', 'failed') THEN COALESCE(j."errorClass", j.reason)
                                   ELSE o.last_error_class END,
           last_error_code = CASE WHEN j.status IN ('pending', 'failed') OR j.waits THEN j.code ELSE o.last_error_code END,
           provider = COALESCE(j.provider, o.provider),
           provider_message_id = CASE WHEN j.status = 'sent' THEN COALESCE(j."providerMessageId", o.provider_message_id)
                                      ELSE o.provider_message_id END,
           from_number = CASE WHEN j.status = 'sent' THEN COALESCE(j."from", o.from_number) ELSE o.from_number END,
           locked_until = NULL, locked_by = NULL, updated_at = now()
      FROM j
     WHERE o.id = ANY (v_ids) AND o.id = j.id AND o.locked_by = p_worker AND o.status = 'sending'
    RETURNING o.id, o.status
  )
  SELECT i.id, COALESCE(m.status, 'not_held') FROM i LEFT JOIN moved m ON m.id = i.id;
END
$$;

-- The requeue of 004, on delivery states: refused once the patient has (or
-- may still get) this confirmation: an attempt of this row that the provider
-- accepted without a final failure receipt since, a delivered attempt of the
-- confirmation it belongs to (the original row or its resend), or a later
-- confirmation for the appointment that was sent.
CREATE OR REPLACE FUNCTION sms_requeue(p_outbox uuid) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v_status    text;
  v_delivered boolean;
BEGIN
  SELECT o.status,
         EXISTS (SELECT 1 FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome IN ('accepted', 'reconciled')
                    AND a.delivery_state IS DISTINCT FROM 'undelivered' AND a.delivery_state IS DISTINCT FROM 'failed')
         OR sms_confirmation_delivered(COALESCE(o.resend_of, o.id), NULL)
         OR EXISTS (SELECT 1 FROM sms_outbox n WHERE n.org_id = o.org_id AND n.appointment_id = o.appointment_id
                       AND n.id <> o.id AND n.status = 'sent' AND n.created_at > o.created_at)
    INTO v_status, v_delivered
    FROM sms_outbox o WHERE o.id = p_outbox
     FOR UPDATE;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('result', 'not_found');
  END IF;
  IF v_delivered OR v_status = 'sent' THEN
    RETURN jsonb_build_object('result', 'already_delivered', 'status', v_status);
  END IF;
  IF v_status <> 'failed' THEN
    RETURN jsonb_build_object('result', 'not_failed', 'status', v_status);
  END IF;
  UPDATE sms_outbox
     SET status = 'pending', next_attempt_at = now(), attempts = 0, bypass_rate_limit = true, waiting_since = NULL,
         failed_at = NULL, failure_reason = NULL, locked_until = NULL, locked_by = NULL, updated_at = now()
   WHERE id = p_outbox;
  RETURN jsonb_build_object('result', 'requeued', 'status', 'pending');
END
$$;

REVOKE ALL ON FUNCTION sms_confirmation_delivered, sms_store_webhook_event, sms_store_webhook_events, sms_apply_receipt, sms_apply_receipts, sms_give_up_attempt, sms_webhook_event_done, sms_claim_lost_receipts,
  sms_delivery_stats, sms_gate_batch, sms_wait_delay, sms_settle FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_store_webhook_event, sms_store_webhook_events TO clinic_app;
GRANT EXECUTE ON FUNCTION sms_confirmation_delivered, sms_apply_receipt, sms_apply_receipts, sms_give_up_attempt, sms_webhook_event_done, sms_claim_lost_receipts, sms_gate_batch,
  sms_wait_delay, sms_settle TO clinic_worker;
GRANT EXECUTE ON FUNCTION sms_delivery_stats TO clinic_app, clinic_worker;
