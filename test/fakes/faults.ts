/**
 * Fault injection and HTTP plumbing shared by the fake provider servers.
 *
 * Each fake speaks its provider's real wire protocol; these helpers only decide
 * *whether* a request is answered normally, and make sure a test run can always
 * tear the server down without leaking sockets or timers.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Fault = (
  | { kind: 'down' }
  | { kind: 'slow'; ms: number }
  /** Accept the request and never answer. `records` (default true) stores the message first: "accepted, response lost". */
  | { kind: 'hang'; records?: boolean }
  /** Read the request, then reset the connection. `records` (default true) stores the message first: "accepted, connection dropped". */
  | { kind: 'reset'; records?: boolean }
  | { kind: 'status'; status: number; code?: string | number; message?: string }
  | { kind: 'http429' }
  | { kind: 'http5xx'; status?: number }
) & {
  /** Apply to the next N requests only, then clear. Omitted = until replaced. Ignored by 'down'. */
  times?: number;
  /**
   * Which requests the fault hits: 'all' (default), only message-create calls, so
   * a lookup (Twilio's list, Telnyx's GET) still answers while sends misbehave,
   * or only health probes (Twilio's account fetch, Telnyx's messaging profiles).
   * Requests outside the scope do not consume `times`.
   */
  scope?: 'all' | 'create' | 'probe';
};

/** Holds the active fault and counts down `times`. */
export class FaultSwitch {
  private current: Fault | null = null;
  private remaining = Infinity;

  set(f: Fault | null): void {
    this.current = f;
    this.remaining = f?.times ?? Infinity;
  }

  get active(): Fault | null {
    return this.current;
  }

  /** The fault that applies to the request being handled now, consuming one use. */
  take(isCreate = true, isProbe = false): Fault | null {
    const f = this.current;
    if (!f || f.kind === 'down') return null;
    if (f.scope === 'create' && !isCreate) return null;
    if (f.scope === 'probe' && !isProbe) return null;
    this.remaining -= 1;
    if (this.remaining <= 0) this.current = null;
    return f;
  }
}

export interface TrackedServer {
  readonly port: number;
  readonly url: string;
  readonly listening: boolean;
  /** Stop listening and drop every connection, so new connects are refused. */
  stop(): Promise<void>;
  /** Listen again on the same port after stop(). */
  restart(): Promise<void>;
  /** Final teardown: fast, destroys hung sockets and pending timers. */
  close(): Promise<void>;
  /** Runs fn after ms unless the server closes first (keeps close() timer-leak-free). */
  later(ms: number, fn: () => void): void;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void | Promise<void>;

export async function startTrackedServer(handler: Handler, port = 0): Promise<TrackedServer> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      Promise.resolve(handler(req, res, Buffer.concat(chunks).toString('utf8'))).catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`fake server error: ${String(err)}`);
        }
      });
    });
  });
  // A provider-side keep-alive timeout longer than a test; sockets are destroyed explicitly instead.
  server.keepAliveTimeout = 5_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });

  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });

  const dropAll = async () => {
    await new Promise<void>((resolve) => {
      if (!server.listening) {
        for (const s of sockets) s.destroy();
        resolve();
        return;
      }
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
    // Give in-process clients a moment to see their pooled keep-alive sockets close;
    // otherwise the next request reuses a dead socket and sees a reset, not a refusal.
    await new Promise((r) => setTimeout(r, 20));
  };

  await listen(port);
  const boundPort = (server.address() as AddressInfo).port;

  return {
    port: boundPort,
    url: `http://127.0.0.1:${boundPort}`,
    get listening() {
      return server.listening;
    },
    stop: dropAll,
    async restart() {
      if (closed) throw new Error('fake server already closed');
      if (!server.listening) await listen(boundPort);
    },
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await dropAll();
    },
    later(ms, fn) {
      if (closed) return;
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, ms);
      timers.add(t);
    },
  };
}

export function sendJson(res: http.ServerResponse, status: number, payload: unknown): void {
  if (res.destroyed || res.headersSent) return;
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendText(res: http.ServerResponse, status: number, text: string, type = 'text/html'): void {
  if (res.destroyed || res.headersSent) return;
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** GSM-7 vs UCS-2 segment count, enough to fill num_segments / parts realistically. */
export function smsSegments(text: string): { segments: number; encoding: 'GSM-7' | 'UCS-2' } {
  const gsm = /^[\x0A\x0D\x20-\x7E£¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà€]*$/.test(text);
  const [single, multi] = gsm ? [160, 153] : [70, 67];
  const n = [...text].length;
  return { segments: n <= single ? 1 : Math.ceil(n / multi), encoding: gsm ? 'GSM-7' : 'UCS-2' };
}
