import type { Server } from 'node:http';
import { ConfigError, loadConfig } from './config.js';
import { startEmbeddedPostgres, type EmbeddedDb } from './db/embedded.js';
import { createLogger } from './log.js';
import { createRuntime } from './runtime.js';
import { resolveSecrets } from './secrets.js';
import type { SeedResult } from './orgs/seed.js';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const log = createLogger(cfg.LOG_LEVEL);
  const secrets = await resolveSecrets(cfg);

  let embedded: EmbeddedDb | undefined;
  let ownerUrl = cfg.DATABASE_URL;
  if (!ownerUrl) {
    log.info({ dataDir: cfg.DATA_DIR }, 'DATABASE_URL not set: starting embedded PostgreSQL');
    const pgLog = log.child({ module: 'embedded-pg' });
    embedded = await startEmbeddedPostgres({
      dataDir: cfg.DATA_DIR,
      port: cfg.EMBEDDED_PG_PORT,
      log: (line) => line && pgLog.debug(line),
      warn: (line) => pgLog.warn(line),
    });
    ownerUrl = embedded.ownerUrl;
  }

  const runtime = await createRuntime({ cfg, secrets, ownerUrl, log, embedded: embedded !== undefined });
  const server: Server = await new Promise((resolve) => {
    const s = runtime.app.listen(cfg.PORT, cfg.HOST, () => resolve(s));
  });
  // Vapi waits up to 20 s per tool call; keep connections alive longer than
  // typical proxies so they never reuse a socket we are closing.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : cfg.PORT;
  printFirstRun(runtime.seed, cfg.PUBLIC_URL ?? `http://localhost:${port}`, secrets.generated.includes('ADMIN_TOKEN') ? secrets.adminToken : undefined);
  log.info({ port }, 'listening');

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    server.close();
    server.closeIdleConnections();
    const force = setTimeout(() => process.exit(1), 15_000).unref();
    try {
      await runtime.close();
      await embedded?.stop();
    } finally {
      log.flush();
      clearTimeout(force);
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

/** Everything an operator needs to try the service, printed once when the demo clinic is created. */
function printFirstRun(seed: SeedResult | null, baseUrl: string, adminToken: string | undefined) {
  if (!seed?.created || !seed.client) return;
  const { clientId, clientSecret } = seed.client;
  const lines = [
    '',
    '  Demo clinic ready: Maple Street Family Clinic (America/New_York), SMS via the sandbox provider',
    `  org id:         ${seed.orgId}`,
    `  client id:      ${clientId}`,
    `  client secret:  ${clientSecret}`,
    ...(adminToken ? [`  admin token:    ${adminToken}   (also in DATA_DIR/secrets.json)`] : []),
    '',
    '  Verify the deployment (dry run, nobody is texted):',
    `    CLIENT_ID=${clientId} CLIENT_SECRET=${clientSecret} ./VERIFY_SMS_BRIDGE.sh ${baseUrl}`,
    '',
    '  Or by hand:',
    `    TOKEN=$(curl -s -u '${clientId}:${clientSecret}' -d grant_type=client_credentials ${baseUrl}/oauth/token | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')`,
    `    curl -s ${baseUrl}/api/vapi/tools -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\`,
    `      -d '{"message":{"type":"tool-calls","toolCallList":[{"id":"call_1","type":"function","function":{"name":"checkAvailability","arguments":{"date":"'$(date -d tomorrow +%F)'"}}}]}}'`,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
  } else {
    process.stderr.write(`startup failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
  process.exit(1);
});
