/**
 * What we answer Vapi, held against the official @vapi-ai/server-sdk types
 * (a dev dependency: the server itself does not load it).
 *
 * At compile time (`npm run typecheck`): our response types must be
 * assignable to the SDK's ToolCallResult, ServerMessageResponseToolCalls and
 * ServerMessageResponseTransferDestinationRequest, and the key lists below
 * must name exactly the SDK's keys, so a field added to, renamed in or
 * removed from the SDK breaks the build.
 *
 * At run time: real responses from the server use only those keys, with the
 * SDK's literal values, so a field the server starts sending that the SDK
 * does not know fails here.
 */
import type { Vapi } from '@vapi-ai/server-sdk';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { VapiSpokenMessage, VapiToolCallResult, VapiToolCallsResponse, VapiTransferResponse } from '../src/http/vapi.js';
import { callTools, createOrg, localDate, vapiMessage } from './helpers/harness.js';
import { useClinic, useHarness } from './helpers/fixture.js';

/** Compiles only when U can be sent where the SDK expects T. */
type Assignable<T, U extends T> = U;
/** Every key of every member of a union. */
type KeysOf<U> = U extends unknown ? keyof U : never;
export type Checks = [
  Assignable<Vapi.ToolCallResult, VapiToolCallResult>,
  Assignable<Vapi.ServerMessageResponseToolCalls, VapiToolCallsResponse>,
  Assignable<Vapi.ServerMessageResponseTransferDestinationRequest, VapiTransferResponse>,
  Assignable<Vapi.ToolCallResultSpokenMessage, VapiSpokenMessage & { type: 'request-complete' }>,
  Assignable<Vapi.ToolCallResultSpokenMessage, VapiSpokenMessage & { type: 'request-failed' }>,
  // Structural assignability allows extra fields; these do not: every key we declare is one the SDK knows.
  Assignable<keyof Vapi.ToolCallResult, KeysOf<VapiToolCallResult>>,
  Assignable<keyof Vapi.ServerMessageResponseTransferDestinationRequest, KeysOf<VapiTransferResponse>>,
  Assignable<
    keyof Vapi.ServerMessageResponseTransferDestinationRequestDestination.Number,
    KeysOf<Extract<VapiTransferResponse, { destination: unknown }>['destination']>
  >,
  Assignable<keyof Vapi.ToolCallResultSpokenMessage.RequestComplete, keyof VapiSpokenMessage>,
];

/** Compiles only when the tuple lists every key of T and nothing else. */
type Exactly<T, K extends readonly (keyof T)[]> = [Exclude<keyof T, K[number]>] extends [never] ? K : never;
const exactly =
  <T>() =>
  <const K extends readonly (keyof T)[]>(keys: Exactly<T, K>): readonly string[] =>
    keys as readonly string[];

const RESULT_KEYS = exactly<Vapi.ToolCallResult>()(['toolCallId', 'name', 'result', 'error', 'message', 'metadata']);
const RESPONSE_KEYS = exactly<Vapi.ServerMessageResponseToolCalls>()(['results', 'error']);
const TRANSFER_KEYS = exactly<Vapi.ServerMessageResponseTransferDestinationRequest>()(['destination', 'message', 'error']);
const NUMBER_KEYS = [
  'type',
  ...exactly<Vapi.TransferDestinationNumber>()([
    'message',
    'numberE164CheckEnabled',
    'number',
    'extension',
    'callerId',
    'transferPlan',
    'name',
    'description',
  ]),
];
const SPOKEN_KEYS = [
  'type',
  ...exactly<Vapi.ToolMessageComplete>()(['contents', 'role', 'endCallAfterSpokenEnabled', 'content', 'conditions']),
];
const SPOKEN_TYPES: ReadonlyArray<Vapi.ToolCallResultSpokenMessage['type']> = ['request-complete', 'request-failed'];
// Both message kinds share their keys; were the SDK to give one a field the other lacks, this stops compiling.
export type SameSpokenKeys = Assignable<keyof Vapi.ToolMessageComplete, keyof Vapi.ToolMessageFailed>;

const h = useHarness();
const org = useClinic(h, { frontDeskPhone: '+14155550100' });

function expectOnlyKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string) {
  expect(
    Object.keys(obj).filter((k) => !allowed.includes(k)),
    where,
  ).toEqual([]);
}

describe('responses match @vapi-ai/server-sdk at run time', () => {
  it('tool-calls: results, results and errors, spoken messages', async () => {
    const res = await callTools(
      h,
      org.token,
      vapiMessage([
        { name: 'checkAvailability', args: { date: localDate(6) } },
        {
          name: 'bookClinicAppointment',
          args: { patientName: 'Sdk Shape', patientPhone: '+14155550196', appointmentDate: localDate(13), appointmentTime: '10:00' },
        },
        { name: 'checkAvailability', args: { date: 'when pigs fly' } },
        { name: 'nothingLikeThis', args: {} },
      ]),
    );
    expect(res.status).toBe(200);
    const body = res.body as Record<string, unknown> & { results: Array<Record<string, unknown>> };
    expectOnlyKeys(body, RESPONSE_KEYS, 'response');
    expect(body.results).toHaveLength(4);
    for (const [i, r] of body.results.entries()) {
      expectOnlyKeys(r, RESULT_KEYS, `results[${i}]`);
      expect(typeof r.toolCallId).toBe('string');
      expect(typeof r.name).toBe('string');
      expect('result' in r !== 'error' in r, `results[${i}] has exactly one of result and error`).toBe(true);
      expect(typeof (r.result ?? r.error)).toBe('string');
      const m = r.message as Record<string, unknown>;
      expectOnlyKeys(m, SPOKEN_KEYS, `results[${i}].message`);
      expect(SPOKEN_TYPES).toContain(m.type);
      expect(m.type).toBe('result' in r ? 'request-complete' : 'request-failed');
      expect(typeof m.content).toBe('string');
    }
  });

  it('transfer-destination-request, open and closed', async () => {
    const ask = (token: string) =>
      h.http
        .post('/api/vapi/tools')
        .set('Authorization', `Bearer ${token}`)
        .send({ message: { type: 'transfer-destination-request', call: { id: randomUUID() } } });
    const open = (await ask(org.token)).body as Record<string, unknown>;
    expectOnlyKeys(open, TRANSFER_KEYS, 'transfer');
    const destination = open.destination as Record<string, unknown>;
    expectOnlyKeys(destination, NUMBER_KEYS, 'destination');
    expect(destination).toMatchObject({ type: 'number', number: '+14155550100' });
    expect(typeof destination.message).toBe('string');

    const closed = await createOrg(h, { openingHours: {} });
    const refused = (await ask(closed.token)).body as Record<string, unknown>;
    expectOnlyKeys(refused, TRANSFER_KEYS, 'transfer');
    expect(typeof refused.error).toBe('string');
  });
});
