import { createHash, randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { AppError } from '../errors.js';
import { withOperator, withOrg, type Tx } from '../db/pool.js';
import { beforeCursor, cursorUs, decodeCursor, page } from '../db/keyset.js';
import { DEFAULT_LOCALE, LOCALES, isValidZone, type Locale } from '../booking/time.js';
import { WEEKDAYS } from '../booking/org.js';
import { encryptSecret, type Keyring } from '../crypto.js';

/** Clinic administration: what operators create and edit through /api/admin. */

const HHMM = /^([01]\d|2[0-3]):[0-5]\d$|^24:00$/;
const windowSchema = z
  .tuple([z.string().regex(HHMM), z.string().regex(HHMM)])
  .refine(([o, c]) => o < c && o !== '24:00', { message: 'each window must open before it closes' });
const daySchema = z.array(windowSchema).max(6);
const dayKeys = [...WEEKDAYS, '1', '2', '3', '4', '5', '6', '7'] as const;

export const openingHoursSchema = z
  .partialRecord(z.enum(dayKeys), daySchema)
  .transform((hours) => {
    const out: Record<string, Array<[string, string]>> = {};
    for (const [k, v] of Object.entries(hours)) {
      const iso = /^\d$/.test(k) ? k : String(WEEKDAYS.indexOf(k as (typeof WEEKDAYS)[number]) + 1);
      out[iso] = [...(out[iso] ?? []), ...v].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    }
    return out;
  })
  .refine((h) => Object.values(h).every((ws) => ws.every((w, i) => i === 0 || ws[i - 1]![1] <= w[0])), {
    message: 'opening windows of one day must not overlap',
  });

/** Human-readable names: Postgres text cannot hold NUL, and control characters are never intended. */
const name200 = z
  .string()
  .trim()
  .min(1)
  .max(200)
  .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), { message: 'must not contain control characters' });

const serviceSchema = z.object({
  code: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,63}$/)
    .optional(),
  name: name200,
  durationMinutes: z.number().int().min(5).max(480),
});

const practitionerSchema = z.object({
  name: name200,
  services: z.array(z.string().max(64)).max(100).nullable().optional(),
});

const orgFields = {
  name: name200,
  timeZone: z.string().max(64).refine(isValidZone, { message: 'must be an IANA time zone such as America/New_York' }),
  defaultRegion: z.string().regex(/^[A-Z]{2}$/),
  openingHours: openingHoursSchema,
  slotIntervalMinutes: z.number().int().min(5).max(120),
  active: z.boolean(),
  services: z.array(serviceSchema).min(1).max(50),
  practitioners: z.array(practitionerSchema).min(1).max(200),
  /** Optional per-org Vapi layers; null clears them. */
  vapiSecret: z.string().min(16).max(500).nullable(),
  vapiHmacSecret: z.string().min(16).max(500).nullable(),
  /** Vapi results also carry the sentence to say at once; false lets the model phrase them. */
  spokenResults: z.boolean(),
  /** Where "can I speak to someone" is transferred during opening hours; null: nowhere (the agent offers to take a message). */
  frontDeskPhone: z
    .string()
    .regex(/^\+[1-9]\d{6,14}$/, { message: 'must be an E.164 number such as +14155550100' })
    .nullable(),
  /** The Retell API key that signs this clinic's Retell requests; null clears it (Retell is then refused). */
  retellApiKey: z
    .string()
    .min(8)
    .max(500)
    .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), { message: 'must not contain control characters' })
    .nullable(),
  /** Keep call transcripts from end-of-call reports in the call log. */
  storeTranscripts: z.boolean(),
  /** How the voice tools speak times and the texts write them: en-US "3:00 PM", en-GB "15:00". */
  locale: z.enum(LOCALES as [Locale, ...Locale[]]),
};

export const createOrgSchema = z.object({
  id: z.uuid().optional(),
  name: orgFields.name,
  timeZone: orgFields.timeZone,
  defaultRegion: orgFields.defaultRegion.default('US'),
  openingHours: orgFields.openingHours,
  slotIntervalMinutes: orgFields.slotIntervalMinutes.default(15),
  services: orgFields.services,
  practitioners: orgFields.practitioners,
  vapiSecret: orgFields.vapiSecret.optional(),
  vapiHmacSecret: orgFields.vapiHmacSecret.optional(),
  spokenResults: orgFields.spokenResults.default(true),
  frontDeskPhone: orgFields.frontDeskPhone.optional(),
  retellApiKey: orgFields.retellApiKey.optional(),
  storeTranscripts: orgFields.storeTranscripts.default(false),
  locale: orgFields.locale.default(DEFAULT_LOCALE),
});
export type CreateOrgInput = z.infer<typeof createOrgSchema>;

export const updateOrgSchema = z
  .object({
    name: orgFields.name,
    timeZone: orgFields.timeZone,
    defaultRegion: orgFields.defaultRegion,
    openingHours: orgFields.openingHours,
    slotIntervalMinutes: orgFields.slotIntervalMinutes,
    active: orgFields.active,
    services: orgFields.services,
    practitioners: orgFields.practitioners,
    vapiSecret: orgFields.vapiSecret,
    vapiHmacSecret: orgFields.vapiHmacSecret,
    spokenResults: orgFields.spokenResults,
    frontDeskPhone: orgFields.frontDeskPhone,
    retellApiKey: orgFields.retellApiKey,
    storeTranscripts: orgFields.storeTranscripts,
    locale: orgFields.locale,
  })
  .partial()
  .strict();
export type UpdateOrgInput = z.infer<typeof updateOrgSchema>;

const codeFor = (s: { code?: string | undefined; name: string }) =>
  s.code ??
  (s.name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64) ||
    'service');

export interface OrgView {
  id: string;
  name: string;
  timeZone: string;
  defaultRegion: string;
  openingHours: Record<string, Array<[string, string]>>;
  slotIntervalMinutes: number;
  active: boolean;
  vapiSecretConfigured: boolean;
  vapiHmacConfigured: boolean;
  spokenResults: boolean;
  frontDeskPhone: string | null;
  retellApiKeyConfigured: boolean;
  storeTranscripts: boolean;
  locale: Locale;
  services: Array<{ id: string; code: string; name: string; durationMinutes: number; active: boolean }>;
  practitioners: Array<{ id: string; name: string; services: string[] | null; active: boolean }>;
  createdAt: string;
  updatedAt: string;
}

async function assertPgZone(tx: Tx, zone: string) {
  const [row] = await tx<{ ok: boolean }[]>`SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = ${zone}) AS ok`;
  if (!row?.ok) throw new AppError(400, 'invalid_time_zone', `The database does not know the time zone ${zone}.`);
}

async function upsertCatalogue(
  tx: Tx,
  orgId: string,
  services: CreateOrgInput['services'] | undefined,
  practitioners: CreateOrgInput['practitioners'] | undefined,
) {
  // Rows are deactivated, never deleted: past appointments still point at them.
  if (services) {
    const codes = services.map(codeFor);
    if (new Set(codes).size !== codes.length) throw new AppError(400, 'duplicate_service', 'Service codes must be unique.');
    for (const [i, s] of services.entries()) {
      await tx`
        INSERT INTO services (org_id, code, name, duration_minutes, active)
        VALUES (${orgId}, ${codes[i]!}, ${s.name}, ${s.durationMinutes}, true)
        ON CONFLICT (org_id, code) DO UPDATE
          SET name = EXCLUDED.name, duration_minutes = EXCLUDED.duration_minutes, active = true`;
    }
    await tx`UPDATE services SET active = false WHERE NOT (code = ANY(${codes}))`;
  }
  if (practitioners) {
    const names = practitioners.map((p) => p.name);
    if (new Set(names.map((n) => n.toLowerCase())).size !== names.length) {
      throw new AppError(400, 'duplicate_practitioner', 'Practitioner names must be unique.');
    }
    const [{ codes } = { codes: [] as string[] }] = await tx<{ codes: string[] }[]>`
      SELECT COALESCE(array_agg(code), '{}') AS codes FROM services WHERE active`;
    for (const p of practitioners) {
      const offered = p.services ?? null;
      const unknown = offered?.filter((c) => !codes.includes(c)) ?? [];
      if (unknown.length) {
        throw new AppError(400, 'unknown_service', `Practitioner ${p.name} names unknown services: ${unknown.join(', ')}.`);
      }
      await tx`
        INSERT INTO practitioners (org_id, name, service_codes, active)
        VALUES (${orgId}, ${p.name}, ${offered}, true)
        ON CONFLICT (org_id, name) DO UPDATE SET service_codes = EXCLUDED.service_codes, active = true`;
    }
    await tx`UPDATE practitioners SET active = false WHERE NOT (name = ANY(${names}))`;
  }
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The AAD that binds an encrypted Retell key to its clinic. */
export const retellKeyAad = (orgId: string) => `org:${orgId}:retell-api-key`;

export async function createOrg(sql: Sql, keyring: Keyring, input: CreateOrgInput): Promise<OrgView> {
  const id = input.id ?? randomUUID();
  await withOrg(sql, id, async (tx) => {
    await assertPgZone(tx, input.timeZone);
    const inserted = await tx`
      INSERT INTO orgs (id, name, time_zone, default_region, opening_hours, slot_interval_minutes,
                        vapi_secret_sha256, vapi_hmac_secret_enc, spoken_results, front_desk_phone,
                        retell_api_key_enc, store_transcripts, locale)
      VALUES (${id}, ${input.name}, ${input.timeZone}, ${input.defaultRegion}, ${tx.json(input.openingHours)},
              ${input.slotIntervalMinutes},
              ${input.vapiSecret ? sha256(input.vapiSecret) : null},
              ${input.vapiHmacSecret ? encryptSecret(keyring, input.vapiHmacSecret, `org:${id}:vapi-hmac`) : null},
              ${input.spokenResults}, ${input.frontDeskPhone ?? null},
              ${input.retellApiKey ? encryptSecret(keyring, input.retellApiKey, retellKeyAad(id)) : null},
              ${input.storeTranscripts}, ${input.locale})
      ON CONFLICT (id) DO NOTHING`;
    if (inserted.count === 0) throw new AppError(409, 'org_exists', 'An org with that id already exists.');
    await upsertCatalogue(tx, id, input.services, input.practitioners);
  });
  const view = await getOrg(sql, id);
  if (!view) throw new Error('created org not readable');
  return view;
}

export async function updateOrg(sql: Sql, keyring: Keyring, id: string, input: UpdateOrgInput): Promise<OrgView | null> {
  const found = await withOrg(sql, id, async (tx) => {
    const [row] = await tx`SELECT id FROM orgs WHERE id = ${id} FOR UPDATE`;
    if (!row) return false;
    if (input.timeZone) await assertPgZone(tx, input.timeZone);
    const secretHash = input.vapiSecret === undefined ? undefined : input.vapiSecret === null ? null : sha256(input.vapiSecret);
    const hmacEnc =
      input.vapiHmacSecret === undefined
        ? undefined
        : input.vapiHmacSecret === null
          ? null
          : encryptSecret(keyring, input.vapiHmacSecret, `org:${id}:vapi-hmac`);
    const retellEnc =
      input.retellApiKey === undefined
        ? undefined
        : input.retellApiKey === null
          ? null
          : encryptSecret(keyring, input.retellApiKey, retellKeyAad(id));
    await tx`
      UPDATE orgs SET
        name = COALESCE(${input.name ?? null}, name),
        time_zone = COALESCE(${input.timeZone ?? null}, time_zone),
        default_region = COALESCE(${input.defaultRegion ?? null}, default_region),
        opening_hours = COALESCE(${input.openingHours ? tx.json(input.openingHours) : null}::jsonb, opening_hours),
        slot_interval_minutes = COALESCE(${input.slotIntervalMinutes ?? null}::int, slot_interval_minutes),
        active = COALESCE(${input.active ?? null}::boolean, active),
        vapi_secret_sha256 = CASE WHEN ${secretHash !== undefined} THEN ${secretHash ?? null} ELSE vapi_secret_sha256 END,
        vapi_hmac_secret_enc = CASE WHEN ${hmacEnc !== undefined} THEN ${hmacEnc ?? null} ELSE vapi_hmac_secret_enc END,
        spoken_results = COALESCE(${input.spokenResults ?? null}::boolean, spoken_results),
        front_desk_phone = CASE WHEN ${input.frontDeskPhone !== undefined} THEN ${input.frontDeskPhone ?? null} ELSE front_desk_phone END,
        retell_api_key_enc = CASE WHEN ${retellEnc !== undefined} THEN ${retellEnc ?? null} ELSE retell_api_key_enc END,
        store_transcripts = COALESCE(${input.storeTranscripts ?? null}::boolean, store_transcripts),
        locale = COALESCE(${input.locale ?? null}, locale),
        updated_at = now()
      WHERE id = ${id}`;
    await upsertCatalogue(tx, id, input.services, input.practitioners);
    return true;
  });
  return found ? getOrg(sql, id) : null;
}

export async function getOrg(sql: Sql, id: string): Promise<OrgView | null> {
  return withOrg(sql, id, async (tx) => {
    const [o] = await tx`SELECT * FROM orgs WHERE id = ${id}`;
    if (!o) return null;
    const services = await tx`SELECT id, code, name, duration_minutes, active FROM services ORDER BY code`;
    const practitioners = await tx`SELECT id, name, service_codes, active FROM practitioners ORDER BY name`;
    return {
      id: o.id,
      name: o.name,
      timeZone: o.time_zone,
      defaultRegion: o.default_region,
      openingHours: o.opening_hours,
      slotIntervalMinutes: o.slot_interval_minutes,
      active: o.active,
      vapiSecretConfigured: o.vapi_secret_sha256 !== null,
      vapiHmacConfigured: o.vapi_hmac_secret_enc !== null,
      spokenResults: o.spoken_results,
      frontDeskPhone: o.front_desk_phone,
      retellApiKeyConfigured: o.retell_api_key_enc !== null,
      storeTranscripts: o.store_transcripts,
      locale: o.locale,
      services: services.map((s) => ({
        id: s.id,
        code: s.code,
        name: s.name,
        durationMinutes: s.duration_minutes,
        active: s.active,
      })),
      practitioners: practitioners.map((p) => ({ id: p.id, name: p.name, services: p.service_codes, active: p.active })),
      createdAt: new Date(o.created_at).toISOString(),
      updatedAt: new Date(o.updated_at).toISOString(),
    };
  });
}

export interface OrgSummary {
  id: string;
  name: string;
  timeZone: string;
  active: boolean;
  createdAt: string;
}

/**
 * Every clinic, newest first, keyset-paginated. Read through the worker role
 * in operator scope, the only one whose policy lets it see across clinics.
 */
export async function listOrgs(
  workerSql: Sql,
  q: { limit: number; before?: string | undefined; active?: boolean | undefined },
): Promise<{ items: OrgSummary[]; next: string | null }> {
  const cursor = decodeCursor(q.before);
  const rows = await withOperator(
    workerSql,
    (tx) => tx<{ id: string; name: string; time_zone: string; active: boolean; created_at: Date; cursor_us: string }[]>`
    SELECT id, name, time_zone, active, created_at, ${cursorUs(tx, 'created_at')} AS cursor_us
      FROM orgs
     WHERE true ${q.active === undefined ? tx`` : tx`AND active = ${q.active}`}
           ${beforeCursor(tx, 'created_at', 'id', cursor)}
     ORDER BY created_at DESC, id DESC
     LIMIT ${q.limit + 1}`,
  );
  const { items, next } = page(rows, q.limit);
  return {
    next,
    items: items.map((r) => ({ id: r.id, name: r.name, timeZone: r.time_zone, active: r.active, createdAt: r.created_at.toISOString() })),
  };
}
