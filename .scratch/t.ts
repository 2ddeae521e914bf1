import pino from 'pino';
import { loggerOptions } from '../src/log.ts';
const log = pino(loggerOptions('info'), { write: (s: string) => process.stdout.write(s) });
const e: any = new Error('boom'); e.config = { headers: { Authorization: 'Basic abc' } }; e.authToken = 'tok';
log.info({ providers: [{ kind: 'twilio', authToken: 'SECRET1' }], a: { b: { c: { apiKey: 'SECRET2' } } }, err: e }, 'x');
log.error({ err: e }, 'y');
