/**
 * Writes docs/api.md: every route from the registry, with its worked example
 * replayed against a real server (fresh embedded PostgreSQL, the demo clinic
 * seeded with client id cli_demo) and the response it gave.
 *
 *   npm run docs:api
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import supertest from 'supertest';
import { loadConfig } from '../src/config.js';
import { generateKeySpec } from '../src/crypto.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { examplePath, renderApiDoc, routeKey, type CapturedResponse } from '../src/http/api-doc.js';
import { createRuntime } from '../src/runtime.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ADMIN = 'docs-admin-token-0123456789abcdef';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'docs-api-'));
const db = await startEmbeddedPostgres({ dataDir: dir });
try {
  const cfg = loadConfig({
    DATA_DIR: dir,
    SEED_DEMO: 'true',
    SMS_WORKER_ENABLED: 'false',
    LOG_LEVEL: 'silent',
    DEMO_CLIENT_ID: 'cli_demo',
    DEMO_CLIENT_SECRET: 'cs_demo_docs_secret_0123456789',
    // So the webhook URLs in the examples read as a deployment's, not as this run's random port.
    PUBLIC_URL: 'https://clinic-tools.example.com',
  });
  const secrets = {
    jwtSecret: 'docs-jwt-secret-0123456789abcdefghijkl',
    adminToken: ADMIN,
    credentialsKey: generateKeySpec(),
    appDbPassword: 'docs-app',
    workerDbPassword: 'docs-worker',
    generated: [],
  };
  const runtime = await createRuntime({ cfg, secrets, ownerUrl: db.ownerUrl, log: pino({ level: 'silent' }), embedded: true });
  try {
    const http = supertest(runtime.app);
    const captured = new Map<string, CapturedResponse>();
    for (const spec of runtime.app.registry.routes) {
      if (!spec.example || spec.access !== 'admin') continue;
      const req = (http as unknown as Record<string, (p: string) => supertest.Test>)[spec.method]!(examplePath(spec)).set(
        'Authorization',
        `Bearer ${ADMIN}`,
      );
      const res = spec.example.body !== undefined ? await req.send(spec.example.body as object) : await req;
      captured.set(routeKey(spec), { status: res.status, body: res.status === 204 ? null : res.body });
    }
    await fs.writeFile(path.join(ROOT, 'docs/api.md'), renderApiDoc(runtime.app.registry, captured));
    console.log(`docs/api.md: ${runtime.app.registry.routes.length} routes, ${captured.size} worked examples`);
  } finally {
    await runtime.close();
  }
} finally {
  await db.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
