import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, type Config } from './config.js';

export interface Secrets {
  jwtSecret: string;
  adminToken: string;
  credentialsKey: string;
  appDbPassword: string;
  workerDbPassword: string;
  /** Names of secrets that were generated on this start rather than configured. */
  generated: string[];
}

const FILE = 'secrets.json';

/**
 * Secrets come from the environment; any that are missing are generated once and
 * kept in DATA_DIR/secrets.json (mode 0600) so restarts keep issued tokens and
 * encrypted credentials valid. In production every one must be configured:
 * processes on different hosts would otherwise disagree.
 */
export async function resolveSecrets(cfg: Config): Promise<Secrets> {
  const file = path.join(path.resolve(cfg.DATA_DIR), FILE);
  let stored: Partial<Record<keyof Secrets, string>> = {};
  try {
    stored = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch {
    /* first run */
  }
  const generated: string[] = [];
  const pick = (name: keyof Omit<Secrets, 'generated'>, envName: string, env: string | undefined, make: () => string) => {
    if (env) return env;
    if (cfg.NODE_ENV === 'production') throw new ConfigError(`Invalid configuration: ${envName} must be set in production`);
    const have = stored[name];
    if (have) return have;
    generated.push(envName);
    const v = make();
    stored[name] = v;
    return v;
  };
  const token = () => randomBytes(32).toString('base64url');
  const secrets: Secrets = {
    jwtSecret: pick('jwtSecret', 'JWT_SECRET', cfg.JWT_SECRET, token),
    adminToken: pick('adminToken', 'ADMIN_TOKEN', cfg.ADMIN_TOKEN, token),
    credentialsKey: pick('credentialsKey', 'CREDENTIALS_KEY', cfg.CREDENTIALS_KEY, () => `k1:${randomBytes(32).toString('base64')}`),
    appDbPassword: pick('appDbPassword', 'APP_DB_PASSWORD', cfg.APP_DB_PASSWORD, token),
    workerDbPassword: pick('workerDbPassword', 'WORKER_DB_PASSWORD', cfg.WORKER_DB_PASSWORD, token),
    generated,
  };
  if (generated.length > 0) {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await fs.writeFile(file, JSON.stringify(stored, null, 2), { mode: 0o600 });
  }
  return secrets;
}
