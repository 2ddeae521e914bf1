-- The status figures' "awaiting a receipt" counts only attempts that can get
-- one: Twilio and Telnyx always, a relay whose link says its receiver posts
-- receipts. The sandbox's and SNS's acceptances are final, so they never wait
-- (a relay link without receipts neither). Otherwise sms_delivery_stats as in
-- 008.
CREATE OR REPLACE FUNCTION sms_delivery_stats(p_since timestamptz)
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
         count(*) FILTER (WHERE a.delivery_state IN ('accepted', 'sent')
                            AND (a.provider IN ('twilio', 'telnyx')
                                 OR (a.provider = 'relay' AND EXISTS (
                                       SELECT 1 FROM sms_providers p
                                        WHERE p.org_id = a.org_id AND p.kind = 'relay'
                                          AND (p.link_settings ->> 'receipts')::boolean)))),
         count(*) FILTER (WHERE EXISTS (SELECT 1 FROM sms_outbox r
                                         WHERE r.resend_of = a.outbox_id AND r.resend_after_account = a.account_key)
                            AND a.delivery_state IN ('undelivered', 'failed')),
         count(*) FILTER (WHERE a.error_code = 'UNRECONCILED'),
         count(*) FILTER (WHERE a.duplicate_delivery)
    FROM sms_attempts a
   WHERE a.started_at >= p_since AND a.outcome <> 'skipped'
   GROUP BY a.org_id, a.provider, a.account_key
$$;
