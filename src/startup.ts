import path from 'node:path';
import { ConfigError } from './config.js';
import type { SeedResult } from './orgs/seed.js';

/**
 * A start-up failure we expected and can name (port taken, data directory held
 * by another instance, ...): reported as one line on stderr, without a stack.
 */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** Quotes a word for a POSIX shell. */
export function shq(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The one stderr line for a failed start, and whether the failure is an expected condition (no stack needed). */
export function describeStartupFailure(err: unknown): { line: string; expected: boolean } {
  if (!(err instanceof Error)) return { line: `startup failed: ${String(err)}`, expected: false };
  const e = err as Error & { code?: unknown; severity?: unknown };
  // Config errors list one problem per line; keep them on one.
  const message = err.message.replace(/:\n\s+/, ': ').replace(/\n\s*/g, '; ');
  if (err instanceof StartupError) return { line: message, expected: true };
  if (err instanceof ConfigError || err.name === 'KeyringConfigError') {
    return { line: message, expected: true };
  }
  // PostgreSQL's own errors (postgres.js PostgresError) and the OS's (ECONNREFUSED, EACCES, ...).
  if (typeof e.severity === 'string' && typeof e.code === 'string') {
    return { line: `startup failed: PostgreSQL: ${message} (SQLSTATE ${e.code})`, expected: true };
  }
  if (typeof e.code === 'string' && /^[A-Z][A-Z_]+$/.test(e.code)) return { line: `startup failed: ${message}`, expected: true };
  return { line: `startup failed: ${message}`, expected: false };
}

/** Why the HTTP server could not listen, in words an operator can act on. */
export function listenFailure(err: NodeJS.ErrnoException, host: string, port: number): StartupError {
  const where = `${host}:${port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new StartupError(`cannot listen on ${where}: the port is already in use (set PORT to a free port, or stop what holds it)`);
    case 'EACCES':
      return new StartupError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges; set PORT)`);
    case 'EADDRNOTAVAIL':
      return new StartupError(`cannot listen on ${where}: ${host} is not an address of this machine (set HOST)`);
    default:
      return new StartupError(`cannot listen on ${where}: ${err.message}`);
  }
}

export interface StartInfo {
  seed: SeedResult | null;
  baseUrl: string;
  /** The admin token, only when it was generated on this start (first run). */
  newAdminToken: string | undefined;
  /** Where the admin token can be read: from the environment, or from DATA_DIR/secrets.json. */
  adminTokenFrom: 'env' | { file: string };
}

const SHOW_RESULT = `node -e 'const r = JSON.parse(require("fs").readFileSync(0)).results[0]; console.log(r.name + ": " + (r.result ?? r.error))'`;
const NEXT_OPEN_DAY = `node -p 'let d = new Date(Date.now() + 864e5); while (d.getUTCDay() === 0) d = new Date(+d + 864e5); d.toISOString().slice(0, 10)'`;

/**
 * Everything an operator needs to try the service, printed once: when the demo
 * clinic is created. The client secret appears exactly once, and only when it
 * was generated here (a pinned secret is referred to by its variable).
 * The commands need a POSIX shell, curl and node, nothing GNU-specific.
 */
export function firstRunBanner({ seed, baseUrl, newAdminToken }: StartInfo): string | undefined {
  if (!seed?.created || !seed.client) return undefined;
  const { clientId, clientSecret, generated } = seed.client;
  const tools = (headers: string) =>
    `curl -s ${baseUrl}/api/vapi/tools -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json'${headers} \\`;
  const call = (id: string, name: string, args: string) =>
    `      -d '{"message":{"type":"tool-calls","toolCallList":[{"id":"${id}","type":"function","function":{"name":"${name}","arguments":${args}}}]}}' | show`;
  const lines = [
    '',
    '  Demo clinic ready: Maple Street Family Clinic (America/New_York), SMS via the sandbox provider',
    `  org id:         ${seed.orgId}`,
    `  client id:      ${clientId}`,
    ...(newAdminToken ? [`  admin token:    ${newAdminToken}   (also in DATA_DIR/secrets.json)`] : []),
    '',
    generated
      ? '  The client secret is shown only now (the database keeps a hash). Keep it in your shell:'
      : '  The client secret is the one you pinned with DEMO_CLIENT_SECRET:',
    `    export CLIENT_ID=${shq(clientId)} CLIENT_SECRET=${generated ? shq(clientSecret) : '"$DEMO_CLIENT_SECRET"'}`,
    '',
    '  Verify the deployment (dry run, nobody is texted):',
    `    ./VERIFY_SMS_BRIDGE.sh ${baseUrl}`,
    '',
    '  Or by hand: a token, the next open day, its openings, and a booking at 10:00 (sandbox SMS):',
    `    TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials ${baseUrl}/oauth/token | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')`,
    `    DAY=$(${NEXT_OPEN_DAY})`,
    `    show() { ${SHOW_RESULT}; }`,
    `    ${tools('')}`,
    call('try-check', 'checkAvailability', `{"date":"'"$DAY"'"}`),
    `    ${tools(" -H 'x-dry-run: 1'")}`,
    call(
      `try-book-'"$DAY"'`,
      'bookClinicAppointment',
      `{"patientName":"Test Patient","patientPhone":"+14155552671","appointmentDate":"'"$DAY"'","appointmentTime":"10:00"}`,
    ),
    '',
  ];
  return lines.join('\n') + '\n';
}

/**
 * Printed on every start: where the service is, the demo clinic, and how to
 * mint a new OAuth client when a secret is lost. Never contains a secret: the
 * admin token is referred to by where it is kept.
 */
export function readyLine({ seed, baseUrl, adminTokenFrom }: StartInfo): string {
  const token =
    adminTokenFrom === 'env'
      ? '$ADMIN_TOKEN'
      : `$(node -p 'require(process.argv[1]).adminToken' ${shq(path.resolve(adminTokenFrom.file))})`;
  const org = seed?.orgId ?? '<org-id>';
  return (
    `ready: ${baseUrl}` +
    (seed ? ` | demo org ${seed.orgId}` : '') +
    ` | new OAuth client (shows its secret once): curl -s -X POST -H "Authorization: Bearer ${token}" ${baseUrl}/api/admin/orgs/${org}/clients\n`
  );
}
