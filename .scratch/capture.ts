import fs from 'node:fs/promises'; import os from 'node:os'; import path from 'node:path';
import pino from 'pino'; import supertest from 'supertest';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { loadConfig } from '../src/config.js'; import { createRuntime } from '../src/runtime.js';
import { generateKeySpec } from '../src/crypto.js';
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-'));
const db = await startEmbeddedPostgres({ dataDir: dir });
const cfg = loadConfig({ DATA_DIR: dir, SEED_DEMO: 'true', SMS_WORKER_ENABLED: 'false', LOG_LEVEL: 'silent', DEMO_CLIENT_ID: 'cli_demo', DEMO_CLIENT_SECRET: 'cs_demo_secret_0123456789' });
const admin = 'admin-token-0123456789abcdefgh';
const rt = await createRuntime({ cfg, secrets: { jwtSecret: 'j'.repeat(40), adminToken: admin, credentialsKey: generateKeySpec(), appDbPassword: 'a', workerDbPassword: 'w', generated: [] }, ownerUrl: db.ownerUrl, log: pino({ level: 'silent' }), embedded: true });
const http = supertest(rt.app);
for (const spec of rt.app.registry.routes.filter((s) => s.access === 'admin' && s.example)) {
  let p = spec.path; for (const [k, v] of Object.entries(spec.example!.params ?? {})) p = p.replace(`:${k}`, v);
  const qs = new URLSearchParams(spec.example!.query ?? {}).toString();
  const req = (http as any)[spec.method](qs ? `${p}?${qs}` : p).set('Authorization', `Bearer ${admin}`);
  const res = spec.example!.body !== undefined ? await req.send(spec.example!.body) : await req;
  console.log(`### ${spec.method.toUpperCase()} ${spec.path} -> ${res.status}\n${JSON.stringify(res.body, null, 1).slice(0, 1500)}\n`);
}
await rt.close(); await db.stop();
