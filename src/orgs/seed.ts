import type { Sql } from 'postgres';
import type { Keyring } from '../crypto.js';
import type { Config } from '../config.js';
import { putSmsConfig } from '../sms/config.js';
import { createOrg, getOrg, type CreateOrgInput } from './orgs.js';
import { createClient, pinClient } from '../auth/clients.js';

/** Fixed so that scripts and docs can name the demo clinic. */
export const DEMO_ORG_ID = '5eed0000-0000-4000-8000-000000000001';

export const DEMO_CLINIC: CreateOrgInput = {
  id: DEMO_ORG_ID,
  name: 'Maple Street Family Clinic',
  timeZone: 'America/New_York',
  defaultRegion: 'US',
  slotIntervalMinutes: 15,
  spokenResults: true,
  storeTranscripts: false,
  locale: 'en-US',
  openingHours: {
    '1': [
      ['08:00', '12:00'],
      ['13:00', '17:00'],
    ],
    '2': [
      ['08:00', '12:00'],
      ['13:00', '17:00'],
    ],
    '3': [
      ['08:00', '12:00'],
      ['13:00', '17:00'],
    ],
    '4': [
      ['08:00', '12:00'],
      ['13:00', '19:00'],
    ],
    '5': [
      ['08:00', '12:00'],
      ['13:00', '16:00'],
    ],
    '6': [['09:00', '13:00']],
  },
  services: [
    { code: 'consultation', name: 'Consultation', durationMinutes: 30 },
    { code: 'checkup', name: 'Check-up', durationMinutes: 15 },
    { code: 'physical', name: 'Annual Physical', durationMinutes: 60 },
  ],
  practitioners: [
    { name: 'Dr. Priya Patel', services: null },
    { name: 'Dr. Marcus Chen', services: ['consultation', 'checkup'] },
  ],
};

export interface SeedResult {
  created: boolean;
  orgId: string;
  client?: { clientId: string; clientSecret: string; generated: boolean };
}

/**
 * Creates the demo clinic on an empty database and makes sure it has an OAuth
 * client. DEMO_CLIENT_ID / DEMO_CLIENT_SECRET pin that client (created, or its
 * secret reset to the pinned one) so scripts and CI need no first-run output.
 */
export async function seedDemo(
  sql: Sql,
  owner: Sql,
  keyring: Keyring,
  cfg: Config,
  pinned: { clientId?: string | undefined; clientSecret?: string | undefined },
): Promise<SeedResult | null> {
  const exists = (await getOrg(sql, DEMO_ORG_ID)) !== null;
  if (!exists) {
    const [{ n } = { n: 0 }] = await owner<{ n: number }[]>`SELECT count(*)::int AS n FROM orgs`;
    if (n > 0) return null; // not an empty database: never add a demo clinic to real data
    await createOrg(sql, keyring, DEMO_CLINIC);
    // The demo clinic texts through the sandbox: everything runs, nobody is texted.
    await putSmsConfig(
      sql,
      keyring,
      DEMO_ORG_ID,
      {
        enabled: true,
        rateLimitPerHour: 100,
        // The number texts tell patients to call: with it the demo also schedules reminders (24 h before).
        contactPhone: '+14155550100',
        providers: [{ kind: 'sandbox', senderNumbers: ['+15005550006'] }],
      },
      cfg.SMS_RATE_LIMIT_PER_HOUR,
    );
  }
  if (pinned.clientId && pinned.clientSecret) {
    const { clientId, clientSecret } = pinned;
    await pinClient(sql, DEMO_ORG_ID, clientId, clientSecret, 'demo', cfg.CLIENT_SECRET_SCRYPT_N);
    return { created: !exists, orgId: DEMO_ORG_ID, client: { clientId, clientSecret, generated: false } };
  }
  if (!exists) {
    const client = await createClient(sql, DEMO_ORG_ID, { name: 'demo', scryptN: cfg.CLIENT_SECRET_SCRYPT_N });
    if (client) return { created: true, orgId: DEMO_ORG_ID, client: { ...client, generated: true } };
  }
  return { created: false, orgId: DEMO_ORG_ID };
}
