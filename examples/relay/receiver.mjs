// A minimal receiver for the clinic-voice-tools SMS relay (`kind: "relay"`).
// Plain Node (20+), no dependencies. See README.md beside this file and
// docs/sms.md ("HTTPS relay") for the contract it implements.
//
//   RELAY_SIGNING_SECRET=... PORT=8787 node examples/relay/receiver.mjs
//   RELAY_FORWARD=twilio TWILIO_ACCOUNT_SID=AC... TWILIO_AUTH_TOKEN=... TWILIO_FROM=+1... node examples/relay/receiver.mjs
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const MAX_BODY = 64 * 1024;

/** Lowercase hex HMAC-SHA256 over `${timestamp}.${rawBody}`: the signature in both directions. */
export function sign(secret, timestamp, rawBody) {
  return createHmac('sha256', secret).update(`${timestamp}.${rawBody}`).digest('hex');
}

/** 'ok', 'stale' or 'bad'. Constant-time compare; the timestamp must be within `toleranceSeconds` of our clock. */
export function verify(secret, headers, rawBody, toleranceSeconds = 300, now = Date.now()) {
  const ts = String(headers['x-relay-timestamp'] ?? '');
  const sig = String(headers['x-relay-signature'] ?? '');
  if (!/^\d{1,12}$/.test(ts) || !/^[0-9a-f]{64}$/.test(sig)) return 'bad';
  const expected = Buffer.from(sign(secret, ts, rawBody), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(sig, 'hex'))) return 'bad';
  return Math.abs(now / 1000 - Number(ts)) > toleranceSeconds ? 'stale' : 'ok';
}

/** Only the last four digits of a phone number go to the log. */
const masked = (phone) => `…${String(phone).slice(-4)}`;

/** Writes one line per message and accepts it. */
export function logForwarder(write = (line) => process.stdout.write(`${line}\n`)) {
  return async (msg) => {
    const messageId = `log_${randomUUID()}`;
    write(
      JSON.stringify({
        at: new Date().toISOString(),
        messageId,
        id: msg.id,
        orgId: msg.orgId,
        to: masked(msg.to),
        attempt: msg.attempt,
        chars: msg.text.length,
      }),
    );
    return { messageId };
  };
}

/**
 * Sends through Twilio's Messages API with fetch. Twilio's refusals become the
 * relay's answers: STOP (21610) is `opted_out`, a bad number `invalid_recipient`,
 * a 429 or 5xx is passed on as such; anything else is the sender's problem.
 */
export function twilioForwarder({ accountSid, authToken, from, baseUrl = 'https://api.twilio.com' }) {
  const auth = `Basic ${Buffer.from(`${accountSid}:${authToken}`).toString('base64')}`;
  return async (msg) => {
    const res = await fetch(`${baseUrl.replace(/\/+$/, '')}/2010-04-01/Accounts/${accountSid}/Messages.json`, {
      method: 'POST',
      headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ To: msg.to, From: msg.from ?? from, Body: msg.text }),
      signal: AbortSignal.timeout(10_000),
    });
    const body = await res.json().catch(() => ({}));
    if (res.ok && typeof body.sid === 'string') return { messageId: body.sid };
    if (res.status === 429 || res.status >= 500)
      return { status: res.status === 429 ? 429 : 502, error: { code: 'upstream_unavailable', message: `twilio HTTP ${res.status}` } };
    if (body.code === 21610) return { status: 400, error: { code: 'opted_out', message: 'recipient replied STOP' } };
    if (body.code === 21211 || body.code === 21614)
      return { status: 400, error: { code: 'invalid_recipient', message: `twilio ${body.code}` } };
    return {
      status: 400,
      error: { code: 'sender_unavailable', message: `twilio HTTP ${res.status} code ${body.code ?? 'none'}`, class: 'provider' },
    };
  };
}

/**
 * The request handler. `forward(msg)` resolves to `{messageId}` (accepted) or
 * `{status, error: {code, message, class?}}` (refused). Accepted messages are
 * remembered by idempotency key for `dedupeMs`, and a request with a key
 * already accepted (or still being forwarded) is answered with the same
 * messageId without forwarding again.
 */
export function createRelayReceiver({
  signingSecret,
  forward,
  toleranceSeconds = 300,
  dedupeMs = 24 * 3_600_000,
  maxKeys = 100_000,
  log = () => {},
}) {
  if (!signingSecret) throw new Error('signingSecret is required');
  const seen = new Map(); // idempotencyKey -> { at, result: Promise<{messageId}|{status,error}> }

  const reply = (res, status, payload) => {
    const text = JSON.stringify(payload);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const forget = (now) => {
    for (const [k, v] of seen) {
      if (now - v.at < dedupeMs && seen.size <= maxKeys) break;
      seen.delete(k);
    }
  };

  return (req, res) => {
    if (req.method !== 'POST') return reply(res, 405, { code: 'method_not_allowed', message: 'POST only' });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(c);
    });
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const check = verify(signingSecret, req.headers, raw, toleranceSeconds);
      if (check !== 'ok') {
        log({ event: 'refused', reason: check });
        return reply(
          res,
          401,
          check === 'stale'
            ? { code: 'stale_timestamp', message: 'timestamp outside the tolerance', class: 'provider' }
            : { code: 'bad_signature', message: 'signature mismatch', class: 'provider' },
        );
      }
      let msg;
      try {
        msg = JSON.parse(raw);
      } catch {
        return reply(res, 400, { code: 'bad_request', message: 'body is not JSON', class: 'provider' });
      }
      if (
        typeof msg?.idempotencyKey !== 'string' ||
        typeof msg.to !== 'string' ||
        typeof msg.text !== 'string' ||
        typeof msg.id !== 'string'
      ) {
        return reply(res, 400, { code: 'bad_request', message: 'id, to, text and idempotencyKey are required', class: 'provider' });
      }
      const now = Date.now();
      forget(now);
      let entry = seen.get(msg.idempotencyKey);
      const duplicate = entry !== undefined && now - entry.at < dedupeMs;
      if (!duplicate) {
        entry = { at: now, result: Promise.resolve().then(() => forward(msg)) };
        seen.set(msg.idempotencyKey, entry);
      }
      let result;
      try {
        result = await entry.result;
      } catch (err) {
        seen.delete(msg.idempotencyKey);
        log({ event: 'forward_failed', id: msg.id, error: String(err?.message ?? err) });
        return reply(res, 502, { code: 'upstream_failed', message: 'forwarding failed' });
      }
      if (!result.messageId) {
        // Only acceptances are remembered: a refused message may be tried again.
        if (seen.get(msg.idempotencyKey) === entry) seen.delete(msg.idempotencyKey);
        log({ event: 'refused_upstream', id: msg.id, code: result.error?.code });
        return reply(res, result.status ?? 400, result.error ?? { code: 'refused', message: 'refused' });
      }
      log({ event: duplicate ? 'duplicate' : 'accepted', id: msg.id, attempt: msg.attempt, messageId: result.messageId });
      return reply(res, 200, { messageId: result.messageId });
    });
  };
}

/** Posts a signed delivery receipt back to the service (POST /webhooks/relay/:orgId). */
export async function sendReceipt({ url, signingSecret, messageId, status, code, at = new Date() }) {
  const raw = JSON.stringify({ messageId, status, ...(code ? { code } : {}), at: at.toISOString() });
  const timestamp = Math.floor(Date.now() / 1000);
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-relay-timestamp': String(timestamp),
      'x-relay-signature': sign(signingSecret, timestamp, raw),
    },
    body: raw,
  });
}

function main() {
  const env = process.env;
  const forward =
    env.RELAY_FORWARD === 'twilio'
      ? twilioForwarder({
          accountSid: env.TWILIO_ACCOUNT_SID,
          authToken: env.TWILIO_AUTH_TOKEN,
          from: env.TWILIO_FROM,
          baseUrl: env.TWILIO_API_BASE_URL,
        })
      : logForwarder();
  const handler = createRelayReceiver({ signingSecret: env.RELAY_SIGNING_SECRET, forward, log: (e) => console.error(JSON.stringify(e)) });
  const port = Number(env.PORT ?? 8787);
  http
    .createServer(handler)
    .listen(port, env.HOST ?? '127.0.0.1', () =>
      console.error(`relay receiver listening on ${env.HOST ?? '127.0.0.1'}:${port} (${env.RELAY_FORWARD ?? 'log'})`),
    );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
