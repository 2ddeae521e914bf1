/**
 * Requests as each voice platform sends them.
 */
import { randomUUID } from 'node:crypto';
import type { Test } from 'supertest';
import { ADMIN_TOKEN, type Harness } from './harness.js';

export const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** An ElevenLabs server-tool request: Bearer token, flat args, the mapped system variables. */
export function elevenPost(h: Harness, token: string | null, tool: string, args: Record<string, unknown>, conversationId = `conv_${randomUUID()}`, callerNumber?: string): Test {
  const req = h.http.post(`/api/elevenlabs/tools/${tool}`);
  if (token !== null) req.set('Authorization', `Bearer ${token}`);
  return req.send({ ...args, conversationId, ...(callerNumber ? { callerNumber } : {}) });
}

export async function appointmentsOf(h: Harness, orgId: string): Promise<number> {
  const [r] = await h.owner<{ n: number }[]>`SELECT count(*)::int AS n FROM appointments WHERE org_id = ${orgId}`;
  return r!.n;
}
