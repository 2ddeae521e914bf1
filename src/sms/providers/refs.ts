/**
 * The reference to our outbox row that a status-callback URL carries
 * (`?m=<outbox id>`, see src/sms/webhooks.ts). A receipt for an attempt whose
 * answer never reached us (the send timed out or the connection reset) can
 * only be matched through it: we never learned the provider's message id.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const OUTBOX_REF_PARAM = 'm';

export function outboxRefOf(url: string | undefined | null): string | undefined {
  if (!url) return undefined;
  try {
    const v = new URL(url).searchParams.get(OUTBOX_REF_PARAM);
    return v && UUID.test(v) ? v.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}
