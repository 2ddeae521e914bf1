import type { DateTime } from 'luxon';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { ClientAuthenticator } from './auth/client-auth.js';
import type { TokenService } from './auth/tokens.js';
import type { OrgContextCache } from './booking/org.js';
import type { Config } from './config.js';
import type { Keyring } from './crypto.js';
import type { SmsModule } from './sms/module.js';

/** What the HTTP layer is given: built once by src/runtime.ts, read by every router. */
export interface AppDeps {
  cfg: Config;
  /** Request-path pool, connected as clinic_app (RLS enforced). */
  sql: Sql;
  /** The outbox worker's pool (clinic_worker): the one role that may read across clinics, for operator views. */
  workerSql: Sql;
  tokens: TokenService;
  clientAuth: ClientAuthenticator;
  keyring: Keyring;
  adminToken: string;
  sms: SmsModule;
  /** Clinic settings reused between tool calls (see OrgContextCache). */
  orgCache: OrgContextCache;
  log: Logger;
  now: () => DateTime;
  /** This process's row in ops_processes (the console's list of processes). */
  processId: string;
}
