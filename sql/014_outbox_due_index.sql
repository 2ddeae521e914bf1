-- 011's sms_outbox_due_org_idx (next_attempt_at, org_id) serves every query
-- 002's sms_outbox_due_idx (next_attempt_at) served, the claim's ORDER BY
-- next_attempt_at, org_id included. Two indexes on the same waiting rows cost
-- every enqueue, reminder and status move a second index write for nothing.
DROP INDEX IF EXISTS sms_outbox_due_idx;
