/**
 * Requests as each voice platform sends them: Retell signed over the exact
 * raw body with the clinic's API key, ElevenLabs with a Bearer token and the
 * flat arguments plus the mapped system variables, Vapi as a server message.
 */
import { randomUUID } from 'node:crypto';
import type { Test } from 'supertest';
import { signRetell } from '../../src/auth/retell-signature.js';
import { ADMIN_TOKEN, type Harness } from './harness.js';

export const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** Gives the clinic a Retell API key through the admin API and returns it. */
export async function setRetellKey(h: Harness, orgId: string, key = `key_${randomUUID().replace(/-/g, '')}`): Promise<string> {
  const res = await h.http.patch(`/api/admin/orgs/${orgId}`).set(admin).send({ retellApiKey: key });
  if (res.status !== 200) throw new Error(`retell key: ${res.status} ${JSON.stringify(res.body)}`);
  return key;
}

export interface RetellCall {
  call_id: string;
  from_number?: string;
  to_number?: string;
  direction?: 'inbound' | 'outbound';
  metadata?: Record<string, unknown>;
  retell_llm_dynamic_variables?: Record<string, string>;
}

export const retellCall = (over: Partial<RetellCall> = {}): RetellCall => ({
  call_id: `call_${randomUUID().replace(/-/g, '')}`,
  from_number: '+14155550142',
  to_number: '+14155550100',
  direction: 'inbound',
  metadata: {},
  ...over,
});

/** Retell's default payload, as the raw string it signs. */
export const retellBody = (name: string, args: Record<string, unknown>, call: RetellCall = retellCall()) =>
  JSON.stringify({
    name,
    call: { agent_id: 'agent_test', call_type: 'phone_call', call_status: 'ongoing', transcript: '…', ...call },
    args,
  });

/** POSTs a raw body with a Retell signature (computed now unless `signature` is given). */
export function retellPost(
  h: Harness,
  path: string,
  raw: string,
  key: string | null,
  opts: { signature?: string; at?: number; headers?: Record<string, string> } = {},
): Test {
  const req = h.http.post(path).set('Content-Type', 'application/json');
  const sig = opts.signature ?? (key === null ? undefined : signRetell(raw, key, opts.at ?? Date.now()));
  if (sig !== undefined) req.set('X-Retell-Signature', sig);
  for (const [k, v] of Object.entries(opts.headers ?? {})) req.set(k, v);
  return req.send(raw);
}

/** An ElevenLabs server-tool request: Bearer token, flat args, the mapped system variables. */
export function elevenPost(
  h: Harness,
  token: string | null,
  tool: string,
  args: Record<string, unknown>,
  conversationId = `conv_${randomUUID()}`,
  callerNumber?: string,
): Test {
  const req = h.http.post(`/api/elevenlabs/tools/${tool}`);
  if (token !== null) req.set('Authorization', `Bearer ${token}`);
  return req.send({ ...args, conversationId, ...(callerNumber ? { callerNumber } : {}) });
}

export async function appointmentsOf(h: Harness, orgId: string): Promise<number> {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`;
  return r!.n;
}
