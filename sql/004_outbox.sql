-- The outbox state machine in batch form (see src/sms/outbox.ts for the states
-- and their moves, and docs/sms.md for the same table generated from it).
--
-- A claimed batch costs one statement each to gate, to open its first
-- attempts and to settle, instead of three per message. Every move of a row is
-- guarded by the lease (locked_by = the worker AND status = 'sending'), and
-- marking a row sent happens in exactly one place: sms_settle.

-- The moves the service roles may make; anything else is refused (SQLSTATE
-- SM002). The table owner (migrations, a person repairing rows by hand) is not
-- bound by it.
CREATE FUNCTION sms_outbox_guard_move() RETURNS trigger
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
                                          ('sending', 'failed'), ('sending', 'cancelled'), ('failed', 'pending')) THEN
    RAISE EXCEPTION 'sms outbox row % cannot move from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = 'SM002';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER sms_outbox_insert_move BEFORE INSERT ON sms_outbox
  FOR EACH ROW EXECUTE FUNCTION sms_outbox_guard_move();
CREATE TRIGGER sms_outbox_update_move BEFORE UPDATE OF status ON sms_outbox
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION sms_outbox_guard_move();

-- The batch functions look rows up by key only, and are declared with
-- enable_seqscan off: the attempt and outbox tables of a fresh or quiet system
-- grow from nearly empty to thousands of rows within seconds, long before
-- autovacuum analyses them again, and a sequential scan planned on the old
-- statistics would then be repeated once per row of every batch.

-- The gate of a whole claimed batch, under each row's org: is the message
-- still wanted (appointment live and unmoved, not started, recipient not opted
-- out), and may it pass the per-recipient rate limit? The limit is counted
-- under advisory locks on (org, recipient), taken in one order (org, then key)
-- by every batch, so concurrent batches in any number of processes cannot both
-- slip under it nor wait on each other. Several rows to one recipient in one
-- batch are let through in creation order while the hour's count allows.
-- Also reports the attempt a previous run left in flight, which must be
-- reconciled before anything is sent.
CREATE FUNCTION sms_gate_batch(p_ids uuid[], p_default_limit integer)
RETURNS TABLE (outbox_id uuid, decision text, provider text, provider_message_id text, from_number text,
               in_flight jsonb)
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
    SELECT x.id, 'gone'::text, NULL::text, NULL::text, NULL::text, NULL::jsonb
      FROM unnest(p_ids) AS x(id)
     WHERE NOT EXISTS (SELECT 1 FROM sms_outbox o WHERE o.id = x.id);

  FOR v_org IN SELECT DISTINCT o.org_id FROM sms_outbox o WHERE o.id = ANY (p_ids) ORDER BY 1 LOOP
    PERFORM set_config('app.org_id', v_org::text, true);
    -- Every statement below finds its rows by primary key.
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

    -- A new statement, so its snapshot sees every row counted by whoever held
    -- these locks before us.
    RETURN QUERY
    WITH r AS MATERIALIZED (
      SELECT o.id, o.to_phone, o.created_at, acc.provider AS acc_provider, acc.provider_message_id AS acc_pmid,
             acc.from_number AS acc_from,
             o.bypass_rate_limit OR EXISTS (SELECT 1 FROM sms_rate_log l WHERE l.org_id = v_org AND l.outbox_id = o.id)
               AS exempt,
             CASE
               WHEN acc.id IS NOT NULL THEN 'already_sent'
               WHEN a.status IS DISTINCT FROM 'booked' THEN 'cancelled'
               WHEN o.expires_at <= now() THEN 'expired'
               -- expires_at is the start time the text announces: a moved
               -- appointment gets its own confirmation.
               WHEN a.starts_at <> o.expires_at THEN 'superseded'
               WHEN EXISTS (SELECT 1 FROM sms_opt_outs x WHERE x.org_id = v_org AND x.phone = o.to_phone) THEN 'opted_out'
               ELSE 'send'
             END AS pre
        FROM sms_outbox o
        -- Lateral with a LIMIT, which the planner does not flatten into a join
        -- over the clinic's whole appointment book: one primary-key lookup per row.
        LEFT JOIN LATERAL (SELECT ap.status, ap.starts_at FROM appointments ap
                            WHERE ap.id = o.appointment_id LIMIT 1) a ON true
        LEFT JOIN LATERAL (SELECT t.id, t.provider, t.provider_message_id, t.from_number FROM sms_attempts t
                            WHERE t.outbox_id = o.id AND t.outcome IN ('accepted', 'reconciled') LIMIT 1) acc ON true
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
           r.acc_provider, r.acc_pmid, r.acc_from, f.j
      FROM r
      LEFT JOIN LATERAL (
        SELECT jsonb_build_object('attemptId', t.id, 'provider', t.provider, 'accountKey', t.account_key,
                                  'from', t.from_number, 'startedAt', t.started_at) AS j
          FROM sms_attempts t
         WHERE t.outbox_id = r.id AND t.outcome = 'in_flight'
         ORDER BY t.id DESC LIMIT 1) f ON r.pre = 'send';
  END LOOP;
END
$$;

-- Opens one attempt for each item: picks the sticky sender (keeping a stored
-- choice while that number is still in the pool, else storing the caller's
-- rendezvous pick) and writes the in-flight audit row before any byte goes to
-- the provider.
--
-- p_worker fences the batch: an item whose row is no longer leased by this
-- worker (another worker took it over after the lease ran out) gets no attempt
-- (attempt_id NULL) and must not be sent. FOR SHARE keeps the lease from
-- changing hands until the attempts are committed.
CREATE FUNCTION sms_open_attempts(p_worker text, p_items jsonb)
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
    ), held AS (
      SELECT o.id FROM sms_outbox o
       WHERE o.id = ANY (v_ids) AND o.org_id = v_org AND o.status = 'sending' AND o.locked_by = p_worker
         FOR SHARE
    ), chosen AS MATERIALIZED (
      SELECT i.*, CASE WHEN i.preferred IS NULL THEN NULL
                       WHEN s.from_number = ANY (i.pool) THEN s.from_number
                       ELSE i.preferred END AS sender
        FROM i JOIN held h ON h.id = i.outbox
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
    SELECT i.outbox, o.id, o.from_number FROM i LEFT JOIN opened o ON o.outbox_id = i.outbox;
  END LOOP;
END
$$;

-- The single-message form, kept for the rarer per-message paths (retries,
-- failover): the same fencing, raised as SQLSTATE SM001.
CREATE OR REPLACE FUNCTION sms_begin_attempt(
  p_org uuid, p_outbox uuid, p_worker text, p_recipient text, p_provider text, p_account text,
  p_pool text[], p_preferred text, p_failed_over boolean
) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v record;
BEGIN
  SELECT * INTO v FROM sms_open_attempts(p_worker, jsonb_build_array(jsonb_build_object(
    'outbox', p_outbox, 'org', p_org, 'recipient', p_recipient, 'provider', p_provider, 'account', p_account,
    'pool', to_jsonb(p_pool), 'preferred', p_preferred, 'failedOver', p_failed_over)));
  IF v.attempt_id IS NULL THEN
    RAISE EXCEPTION 'sms outbox row % is no longer leased by this worker', p_outbox USING ERRCODE = 'SM001';
  END IF;
  RETURN jsonb_build_object('attemptId', v.attempt_id, 'from', v.from_number);
END
$$;

-- Closes an attempt that did not deliver (failed, or still in flight after an
-- ambiguous answer). An accepted or reconciled attempt is closed by sms_settle,
-- together with the row it delivers. What an earlier step already wrote is
-- kept: settling a timed-out attempt adds to its error text and keeps its
-- latency, so the audit row still shows the original error.
CREATE OR REPLACE FUNCTION sms_finish_attempt(
  p_org uuid, p_attempt bigint, p_outcome text, p_class text, p_code text, p_message text,
  p_provider_message_id text, p_latency_ms integer, p_opt_out boolean, p_worker text
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  a sms_attempts%ROWTYPE;
BEGIN
  IF p_outcome NOT IN ('failed', 'in_flight') THEN
    RAISE EXCEPTION 'an attempt that delivered is closed by sms_settle, not as %', p_outcome USING ERRCODE = 'SM002';
  END IF;
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
  IF p_opt_out THEN
    INSERT INTO sms_opt_outs (org_id, phone, source)
    SELECT a.org_id, o.to_phone, 'provider:' || a.provider || ':' || COALESCE(p_code, '')
      FROM sms_outbox o WHERE o.id = a.outbox_id
    ON CONFLICT DO NOTHING;
  END IF;
END
$$;

-- The wait before a message's next run: base * 2^(runs - 1), capped at max,
-- with "equal" jitter (half of it fixed, half random).
CREATE FUNCTION sms_retry_delay(p_runs integer, p_base_ms integer, p_max_ms integer) RETURNS interval
  LANGUAGE sql VOLATILE
  AS $$
    SELECT round(c / 2 + random() * c / 2) * interval '1 millisecond'
      FROM (SELECT least(p_max_ms::double precision,
                         p_base_ms * power(2::double precision, least(greatest(p_runs - 1, 0), 40))) AS c) cap
  $$;

-- Settles a batch of delivery runs: each item moves its row to its next state,
-- guarded by the lease (locked_by = p_worker AND status = 'sending'), in one
-- statement. An item whose run ends in "try again" goes back to pending with
-- an exponential backoff and equal jitter (half fixed, half random), or, after
-- p_max_attempts runs, to failed as retries_exhausted. An item that delivered
-- also closes its accepted (or reconciled) attempt, in the same transaction as
-- the row's sent status, so the two can never disagree; earlier attempts of
-- that message at the same account still in flight were resent under the same
-- idempotency key and are settled by it.
--
-- Items: [{id, org, status: sent|pending|failed|cancelled, reason, errorClass,
-- code, message, provider, providerMessageId, from, attempt: {id, outcome,
-- providerMessageId, latencyMs, errorClass, code, message}}]. Returns each
-- row's status after the move, or 'not_held' when this worker no longer holds it.
CREATE FUNCTION sms_settle(p_worker text, p_items jsonb, p_retry_base_ms integer, p_retry_max_ms integer,
                           p_max_attempts integer)
RETURNS TABLE (outbox_id uuid, status text)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_org uuid;
  v_ids uuid[] := ARRAY(SELECT (e ->> 'id')::uuid FROM jsonb_array_elements(p_items) e);
BEGIN
  -- An attempt the provider accepted is a fact, recorded whether or not this
  -- worker still holds the row.
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

  -- `pending AND attempts >= p_max_attempts`: that run was the last one allowed.
  RETURN QUERY
  WITH i AS MATERIALIZED (
    SELECT x.* FROM jsonb_to_recordset(p_items)
             AS x(id uuid, status text, reason text, "errorClass" text, code text, message text, provider text,
                  "providerMessageId" text, "from" text)
  ), moved AS (
    UPDATE sms_outbox o
       SET status = CASE WHEN i.status = 'pending' AND o.attempts >= p_max_attempts THEN 'failed' ELSE i.status END,
           next_attempt_at = CASE WHEN i.status = 'pending' AND o.attempts < p_max_attempts
                                  THEN now() + sms_retry_delay(o.attempts, p_retry_base_ms, p_retry_max_ms)
                                  ELSE o.next_attempt_at END,
           sent_at = CASE WHEN i.status = 'sent' THEN now() ELSE o.sent_at END,
           failed_at = CASE WHEN i.status = 'failed' OR (i.status = 'pending' AND o.attempts >= p_max_attempts)
                            THEN now() ELSE o.failed_at END,
           failure_reason = CASE WHEN i.status = 'pending' AND o.attempts >= p_max_attempts THEN 'retries_exhausted'
                                 WHEN i.status IN ('failed', 'cancelled') THEN i.reason
                                 ELSE o.failure_reason END,
           last_error = CASE WHEN i.status = 'pending' AND o.attempts >= p_max_attempts
                             THEN left('retries_exhausted: ' || i.reason || ': ' || i.message, 500)
                             WHEN i.status IN ('pending', 'failed') THEN left(i.reason || ': ' || i.message, 500)
                             WHEN i.status = 'cancelled' THEN i.reason
                             ELSE o.last_error END,
           last_error_class = CASE WHEN i.status = 'pending' AND o.attempts >= p_max_attempts
                                   THEN COALESCE(i."errorClass", 'retries_exhausted')
                                   WHEN i.status IN ('pending', 'failed') THEN COALESCE(i."errorClass", i.reason)
                                   ELSE o.last_error_class END,
           last_error_code = CASE WHEN i.status IN ('pending', 'failed') THEN i.code ELSE o.last_error_code END,
           provider = COALESCE(i.provider, o.provider),
           provider_message_id = CASE WHEN i.status = 'sent' THEN COALESCE(i."providerMessageId", o.provider_message_id)
                                      ELSE o.provider_message_id END,
           from_number = CASE WHEN i.status = 'sent' THEN COALESCE(i."from", o.from_number) ELSE o.from_number END,
           locked_until = NULL, locked_by = NULL, updated_at = now()
      FROM i
     WHERE o.id = ANY (v_ids) AND o.id = i.id AND o.locked_by = p_worker AND o.status = 'sending'
    RETURNING o.id, o.status
  )
  SELECT i.id, COALESCE(m.status, 'not_held') FROM i LEFT JOIN moved m ON m.id = i.id;
END
$$;

-- An operator's retry of a dead letter: back to pending with the rate limit
-- bypassed, unless the patient already has a confirmation for this
-- appointment, from this row (an accepted or reconciled attempt) or from a
-- later one (a reschedule's text supersedes this one). Answers requeued,
-- not_found, already_delivered or not_failed (with the row's status).
CREATE FUNCTION sms_requeue(p_outbox uuid) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  v_status    text;
  v_delivered boolean;
BEGIN
  SELECT o.status,
         EXISTS (SELECT 1 FROM sms_attempts a WHERE a.outbox_id = o.id AND a.outcome IN ('accepted', 'reconciled'))
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
     SET status = 'pending', next_attempt_at = now(), attempts = 0, bypass_rate_limit = true,
         failed_at = NULL, failure_reason = NULL, locked_until = NULL, locked_by = NULL, updated_at = now()
   WHERE id = p_outbox;
  RETURN jsonb_build_object('result', 'requeued', 'status', 'pending');
END
$$;

DROP FUNCTION sms_gate(uuid, integer);

REVOKE ALL ON FUNCTION sms_gate_batch, sms_open_attempts, sms_retry_delay, sms_settle, sms_requeue FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_gate_batch, sms_open_attempts, sms_retry_delay, sms_settle, sms_requeue TO clinic_worker;
