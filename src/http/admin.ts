import { Router, type Request } from 'express';
import { z } from 'zod';
import { createClient, listClients, revokeClient } from '../auth/clients.js';
import { isUuid } from '../booking/appointments.js';
import type { AppDeps } from '../deps.js';
import { notFound } from '../errors.js';
import { listCalls } from '../calls/calls.js';
import { listInbox } from '../inbox/inbox.js';
import { createOrg, createOrgSchema, getOrg, listOrgs, updateOrg, updateOrgSchema } from '../orgs/orgs.js';
import { listMessages } from '../sms/history.js';
import type { RouteRegistry } from './registry.js';

export const orgIdParam = (req: Request): string => {
  const id = String(req.params.id ?? '').toLowerCase();
  if (!isUuid(id)) throw notFound('org');
  return id;
};

const flag = z.enum(['true', 'false']).transform((v) => v === 'true');

/** Keyset pages: `limit` rows, newest first; `before` is the previous page's `next`. */
export const pageQuery = {
  limit: z.coerce.number().int().min(1).max(200).default(50),
  before: z.string().max(200).optional().describe("The previous page's `next` cursor."),
};
const listQuery = z.object({ ...pageQuery, unmask: flag.optional().describe('true shows full phone numbers (masked by default).') });

const clientName = z.object({
  name: z
    .string()
    .trim()
    .min(1)
    .max(100)
    .regex(/^[^\u0000-\u001f\u007f]*$/)
    .optional(),
});

/** Patient data in a response: never stored by a browser or proxy. */
const NO_STORE = { 'Cache-Control': 'no-store' };

const EXAMPLE_ORG = {
  name: 'Maple Street Family Clinic',
  timeZone: 'America/New_York',
  defaultRegion: 'US',
  slotIntervalMinutes: 15,
  openingHours: {
    monday: [
      ['08:00', '12:00'],
      ['13:00', '17:00'],
    ],
    tuesday: [['08:00', '17:00']],
    saturday: [['09:00', '13:00']],
  },
  services: [
    { code: 'consultation', name: 'Consultation', durationMinutes: 30 },
    { name: 'Check-up', durationMinutes: 15 },
  ],
  practitioners: [{ name: 'Dr. Priya Patel' }, { name: 'Dr. Marcus Chen', services: ['consultation'] }],
};
const EXAMPLE_ID = '5eed0000-0000-4000-8000-000000000001';

/** Operator API for clinics and their OAuth clients, behind ADMIN_TOKEN. */
export function adminRouter(deps: AppDeps, registry: RouteRegistry): Router {
  const router = Router();
  const tags = ['clinics'];

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/admin/orgs',
      access: 'admin',
      tags,
      summary: 'Create a clinic',
      description:
        'Opening hours are keyed by weekday name (`monday` … `sunday`) or ISO number (`1` = Monday … `7`), each a list of ' +
        '`["HH:mm","HH:mm"]` windows in clinic-local time; `"24:00"` closes at midnight. A service code is derived from its name ' +
        'when omitted. A practitioner offers every service unless `services` lists codes.',
      body: createOrgSchema,
      responses: {
        201: { description: 'The clinic, with ids of its services and practitioners.' },
        400: { description: 'invalid_request' },
        409: { description: 'org_exists' },
      },
      example: { body: EXAMPLE_ORG },
    },
    async (req, res, { body }) => {
      const org = await createOrg(deps.sql, deps.keyring, body);
      req.log.info({ orgId: org.id }, 'org created');
      res.status(201).json(org);
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs',
      access: 'admin',
      tags,
      summary: 'List clinics',
      query: z.object({ ...pageQuery, active: flag.optional() }),
      responses: { 200: { description: '`{items:[{id,name,timeZone,active,createdAt}], next}`' } },
      example: { query: { limit: '20' } },
    },
    async (_req, res, { query }) => {
      res.json(await listOrgs(deps.workerSql, query));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id',
      access: 'admin',
      tags,
      summary: 'Read a clinic',
      responses: { 200: { description: 'The clinic.' }, 404: { description: 'not_found' } },
      example: { params: { id: EXAMPLE_ID } },
    },
    async (req, res) => {
      const org = await getOrg(deps.sql, orgIdParam(req));
      if (!org) throw notFound('org');
      res.json(org);
    },
  );

  registry.mount(
    router,
    {
      method: 'patch',
      path: '/api/admin/orgs/:id',
      access: 'admin',
      tags,
      summary: 'Change a clinic',
      description:
        'Only the fields given change. `services` and `practitioners` replace the lists: a removed one is deactivated (past ' +
        "appointments keep pointing at it). `active: false` refuses the clinic's tokens at once. `vapiSecret` / `vapiHmacSecret` " +
        'set the optional Vapi layers; `null` clears them. Voice settings: `spokenResults` (default true) adds the sentence to say to each ' +
        'Vapi result; `frontDeskPhone` (E.164, `null`: none) is where a caller asking for a person is transferred during opening hours; ' +
        "`retellApiKey` (stored encrypted, never shown: `retellApiKeyConfigured`) verifies Retell's signatures, `null` refuses Retell; " +
        '`storeTranscripts` (default false) keeps transcripts in the call log. `locale` (`en-US`, the default, or `en-GB`) is how the ' +
        'voice tools speak times ("Thursday, March 4 at 3:00 PM" / "Thursday 4 March at 15:00") and the texts write them.',
      body: updateOrgSchema,
      responses: { 200: { description: 'The clinic.' }, 400: { description: 'invalid_request' }, 404: { description: 'not_found' } },
      example: {
        params: { id: EXAMPLE_ID },
        body: {
          openingHours: { friday: [['08:00', '16:00']] },
          active: true,
          spokenResults: true,
          frontDeskPhone: '+14155550100',
          retellApiKey: 'key_0123456789abcdef0123456789ab',
          storeTranscripts: false,
          locale: 'en-US',
        },
      },
    },
    async (req, res, { body }) => {
      const org = await updateOrg(deps.sql, deps.keyring, orgIdParam(req), body);
      if (!org) throw notFound('org');
      deps.orgCache.invalidate(org.id);
      res.json(org);
    },
  );

  registry.mount(
    router,
    {
      method: 'post',
      path: '/api/admin/orgs/:id/clients',
      access: 'admin',
      tags: ['auth'],
      summary: 'Create an OAuth client (the secret is shown once)',
      body: clientName,
      responses: { 201: { description: '`{clientId, clientSecret, name}`' }, 404: { description: 'not_found' } },
      example: { params: { id: EXAMPLE_ID }, body: { name: 'vapi-production' } },
    },
    async (req, res, { body }) => {
      const client = await createClient(deps.sql, orgIdParam(req), { name: body.name, scryptN: deps.cfg.CLIENT_SECRET_SCRYPT_N });
      if (!client) throw notFound('org');
      res.set(NO_STORE).status(201).json(client);
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/clients',
      access: 'admin',
      tags: ['auth'],
      summary: "List a clinic's OAuth clients (never their secrets)",
      responses: { 200: { description: '`{clients:[{clientId,name,createdAt,revokedAt}]}`' }, 404: { description: 'not_found' } },
      example: { params: { id: EXAMPLE_ID } },
    },
    async (req, res) => {
      const clients = await listClients(deps.sql, orgIdParam(req));
      if (!clients) throw notFound('org');
      res.json({ clients });
    },
  );

  registry.mount(
    router,
    {
      method: 'delete',
      path: '/api/admin/orgs/:id/clients/:clientId',
      access: 'admin',
      tags: ['auth'],
      summary: 'Revoke an OAuth client; tokens it already holds stop working at once',
      responses: { 204: { description: 'Revoked.' }, 404: { description: 'not_found' } },
      example: { params: { id: EXAMPLE_ID, clientId: 'cli_demo' } },
    },
    async (req, res) => {
      const orgId = orgIdParam(req);
      const clientId = String(req.params.clientId);
      const ok = await revokeClient(deps.sql, orgId, clientId);
      deps.orgCache.invalidate(orgId);
      deps.clientAuth.forget(clientId);
      if (!ok) throw notFound('client');
      res.status(204).end();
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/messages',
      access: 'admin',
      tags: ['sms'],
      summary: "A clinic's recent texts, exactly as the patient gets them, with state and every provider attempt",
      query: listQuery.extend({ status: z.enum(['pending', 'sending', 'sent', 'failed', 'cancelled']).optional() }),
      responses: {
        200: { description: '`{items:[{id, to, body, status, provider, attempts:[...]}], next}`; phones masked unless `unmask=true`.' },
      },
      example: { params: { id: EXAMPLE_ID }, query: { limit: '10' } },
    },
    async (req, res, { query }) => {
      const orgId = orgIdParam(req);
      if (!(await getOrg(deps.sql, orgId))) throw notFound('org');
      res.set(NO_STORE).json(await listMessages(deps.sql, orgId, query));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/inbox',
      access: 'admin',
      tags: ['clinics'],
      summary: "The clinic's inbox: SMS replies and messages left with the voice agent",
      query: listQuery,
      responses: {
        200: {
          description: '`{items:[{id, channel, kind, from, patientName, body, createdAt}], next}`; phones masked unless `unmask=true`.',
        },
      },
      example: { params: { id: EXAMPLE_ID } },
    },
    async (req, res, { query }) => {
      const orgId = orgIdParam(req);
      if (!(await getOrg(deps.sql, orgId))) throw notFound('org');
      res.set(NO_STORE).json(await listInbox(deps.sql, orgId, query));
    },
  );

  registry.mount(
    router,
    {
      method: 'get',
      path: '/api/admin/orgs/:id/calls',
      access: 'admin',
      tags: ['clinics'],
      summary: "The clinic's call log, from end-of-call reports",
      query: listQuery,
      responses: {
        200: {
          description:
            '`{items:[{id, platform, callId, from, startedAt, endedAt, durationSeconds, endedReason, toolsUsed, transcript, createdAt}], next}`; ' +
            'phones masked unless `unmask=true`; `transcript` is null unless the clinic keeps transcripts.',
        },
        404: { description: 'not_found' },
      },
      example: { params: { id: EXAMPLE_ID }, query: { limit: '20' } },
    },
    async (req, res, { query }) => {
      const orgId = orgIdParam(req);
      if (!(await getOrg(deps.sql, orgId))) throw notFound('org');
      res.set(NO_STORE).json(await listCalls(deps.sql, orgId, query));
    },
  );

  return router;
}
