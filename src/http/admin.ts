import express, { Router, type Request } from 'express';
import { z } from 'zod';
import type { AppDeps } from '../app.js';
import { isUuid } from '../booking/appointments.js';
import {
  createClient,
  createOrg,
  createOrgSchema,
  DomainError,
  getOrg,
  listClients,
  revokeClient,
  updateOrg,
  updateOrgSchema,
} from '../orgs/orgs.js';
import { requireAdmin } from './auth.js';
import { HttpError } from './errors.js';

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const parsed = schema.safeParse(body ?? {});
  if (!parsed.success) {
    const detail = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
      .join('; ');
    throw new HttpError(400, 'invalid_request', detail);
  }
  return parsed.data;
}

export const orgIdParam = (req: Request): string => {
  const id = String(req.params.id ?? '').toLowerCase();
  if (!isUuid(id)) throw new HttpError(404, 'not_found', 'No such org.');
  return id;
};

/** Maps domain refusals to HTTP; anything else propagates to the error handler. */
export const domain = async <T>(fn: () => Promise<T>): Promise<T> => {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof DomainError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
};

/** Operator API for clinics and their OAuth clients, behind ADMIN_TOKEN. */
export function adminRouter(deps: AppDeps): Router {
  const router = Router();
  router.use('/api/admin', requireAdmin(deps), express.json({ limit: deps.cfg.BODY_LIMIT_BYTES }));

  router.post('/api/admin/orgs', async (req, res) => {
    const input = parseBody(createOrgSchema, req.body);
    const org = await domain(() => createOrg(deps.sql, deps.keyring, input));
    req.log.info({ orgId: org.id }, 'org created');
    res.status(201).json(org);
  });

  router.get('/api/admin/orgs/:id', async (req, res) => {
    const org = await getOrg(deps.sql, orgIdParam(req));
    if (!org) throw new HttpError(404, 'not_found', 'No such org.');
    res.json(org);
  });

  router.patch('/api/admin/orgs/:id', async (req, res) => {
    const input = parseBody(updateOrgSchema, req.body);
    const org = await domain(() => updateOrg(deps.sql, deps.keyring, orgIdParam(req), input));
    if (!org) throw new HttpError(404, 'not_found', 'No such org.');
    deps.orgCache.invalidate(org.id);
    res.json(org);
  });

  router.post('/api/admin/orgs/:id/clients', async (req, res) => {
    const { name } = parseBody(
      z.object({ name: z.string().trim().min(1).max(100).regex(/^[^\u0000-\u001f\u007f]*$/).optional() }),
      req.body,
    );
    const client = await domain(() => createClient(deps.sql, orgIdParam(req), { name }));
    if (!client) throw new HttpError(404, 'not_found', 'No such org.');
    res.set('Cache-Control', 'no-store').status(201).json(client);
  });

  router.get('/api/admin/orgs/:id/clients', async (req, res) => {
    const clients = await listClients(deps.sql, orgIdParam(req));
    if (!clients) throw new HttpError(404, 'not_found', 'No such org.');
    res.json({ clients });
  });

  router.delete('/api/admin/orgs/:id/clients/:clientId', async (req, res) => {
    const ok = await revokeClient(deps.sql, orgIdParam(req), String(req.params.clientId));
    deps.orgCache.invalidate(orgIdParam(req));
    if (!ok) throw new HttpError(404, 'not_found', 'No such client.');
    res.status(204).end();
  });

  return router;
}
