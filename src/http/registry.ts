import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { z } from 'zod';
import { AppError } from '../errors.js';

/**
 * Every HTTP route is declared once, here, with who may call it and the zod
 * schemas of its input. Mounting through the registry is what attaches the
 * access check, the body parser and the validation, so a new route cannot
 * forget its authentication; the same declarations generate /openapi.json, so
 * the description cannot drift from what the server enforces. A test walks
 * Express's own route table and refuses any route that did not come through
 * here.
 */

/**
 * - public: health probes, the token endpoint, the API description.
 * - admin: the operator's ADMIN_TOKEN.
 * - clinic: a clinic's credentials (a token, or a platform signature under the clinic's key),
 *   through the one three-layer check (clinicGuard in src/http/auth.ts).
 * - metrics: METRICS_TOKEN when set.
 * - provider: a provider's or platform's signed webhook, verified by the route's own first handler.
 * - session: the operator console's session cookie.
 */
export type Access = 'public' | 'admin' | 'clinic' | 'metrics' | 'provider' | 'session';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
  contentType?: string;
  example?: unknown;
}

export interface RouteSpec<Q extends z.ZodType = z.ZodType, B extends z.ZodType = z.ZodType> {
  method: Method;
  /** Express path syntax (`/api/admin/orgs/:id`). */
  path: string;
  access: Access;
  summary: string;
  description?: string;
  tags: string[];
  /** Query parameters, validated before the handler runs (400 invalid_request). */
  query?: Q;
  /** Request body. `json` bodies keep their raw bytes for signature checks. */
  body?: B;
  /**
   * `raw`: the bytes only (req.rawBody), whatever the content type, for
   * provider webhooks that must verify a signature before anything reads the
   * body; `rawContentType` is what the provider sends, for the API description.
   */
  bodyType?: 'json' | 'form' | 'form-or-json' | 'any-json' | 'raw';
  rawContentType?: string;
  /**
   * The handler validates the body itself (lenient platform envelopes whose
   * refusals have their own codes); the schema then only describes it.
   */
  bodyValidatedByHandler?: boolean;
  responses: Record<number, ResponseSpec>;
  /** A worked example request for the docs; checked by the suite against the schema and the server. */
  example?: { params?: Record<string, string>; query?: Record<string, string>; body?: unknown };
  /**
   * clinic routes only: the orgs the request names (body metadata, arguments),
   * each of which must be the token's org (layer 2).
   */
  orgsNamed?: (req: Request, res: Response) => unknown[];
  /**
   * clinic routes only: 'in-statement' when every database statement the
   * handler runs re-verifies the org and client itself (tool calls run
   * tenant_scope); otherwise the check runs before the handler, uncached.
   */
  tenantCheck?: TenantCheck | ((req: Request, res: Response) => TenantCheck);
  /**
   * clinic routes only: what identifies the clinic at layer 1. 'bearer' (the
   * default): a JWT, checked before the body is read. 'retell-signature': the
   * clinic named by the path's `:orgId`, proven by X-Retell-Signature under
   * that clinic's Retell API key over the raw body (so after it is read).
   * Layers 2 and 3 are the same for both.
   */
  clinicIdentity?: ClinicIdentity;
  /**
   * clinic routes only: apply the clinic's optional Vapi layers (x-vapi-secret,
   * Vapi HMAC). Default: on for bearer routes, off for signature routes; a
   * route another platform calls with a Bearer token turns them off.
   */
  vapiLayers?: boolean;
}

export type TenantCheck = 'upfront' | 'in-statement';
export type ClinicIdentity = 'bearer' | 'retell-signature';

export interface Input<Q extends z.ZodType, B extends z.ZodType> {
  query: z.infer<Q>;
  body: z.infer<B>;
  params: Record<string, string>;
}

export type Handler<Q extends z.ZodType, B extends z.ZodType> = (
  req: Request,
  res: Response,
  input: Input<Q, B>,
) => Promise<unknown> | unknown;

/** The guard chain for an access kind; `beforeBody` runs before the body is read. */
export interface Guard {
  beforeBody: RequestHandler[];
  afterBody: RequestHandler[];
}

export type GuardFactory = (spec: RouteSpec) => Guard;

/** Marks a handler as the registry's own, so the route-table test can tell registered routes apart. */
export const REGISTERED = Symbol('registered-route');

declare module 'express-serve-static-core' {
  interface Request {
    rawBody?: Buffer;
  }
}

export function invalidRequest(issues: z.core.$ZodIssue[]): AppError {
  const detail = issues
    .slice(0, 5)
    .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
    .join('; ');
  return new AppError(400, 'invalid_request', detail);
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value ?? {});
  if (!parsed.success) throw invalidRequest(parsed.error.issues);
  return parsed.data;
}

export class RouteRegistry {
  readonly routes: RouteSpec[] = [];

  constructor(
    private readonly guards: Record<Access, GuardFactory>,
    private readonly bodyLimit: number,
  ) {}

  mount<Q extends z.ZodType, B extends z.ZodType>(router: Router, spec: RouteSpec<Q, B>, handler: Handler<Q, B>): void {
    if (this.routes.some((r) => r.method === spec.method && r.path === spec.path)) {
      throw new Error(`route declared twice: ${spec.method.toUpperCase()} ${spec.path}`);
    }
    this.routes.push(spec as unknown as RouteSpec);
    const guard = this.guards[spec.access](spec as unknown as RouteSpec);
    const run: RequestHandler = async (req, res) => {
      const input: Input<Q, B> = {
        query: (spec.query ? parseWith(spec.query, req.query) : {}) as z.infer<Q>,
        body: (spec.body && !spec.bodyValidatedByHandler ? parseWith(spec.body, req.body) : req.body) as z.infer<B>,
        params: req.params as Record<string, string>,
      };
      await handler(req, res, input);
    };
    (run as unknown as Record<symbol, unknown>)[REGISTERED] = spec;
    router[spec.method](spec.path, ...guard.beforeBody, ...this.parsers(spec), ...guard.afterBody, run);
  }

  private parsers(spec: RouteSpec): RequestHandler[] {
    if (!spec.body && spec.method === 'get') return [];
    const limit = this.bodyLimit;
    const keepRaw = (req: unknown, _res: unknown, buf: Buffer) => {
      (req as Request).rawBody = buf;
    };
    const form = express.urlencoded({ extended: false, limit, parameterLimit: 100, verify: keepRaw });
    if (spec.bodyType === 'raw') return [express.raw({ limit, type: () => true, verify: keepRaw })];
    if (spec.bodyType === 'form') return [form];
    if (spec.bodyType === 'form-or-json') return [form, express.json({ limit, verify: keepRaw })];
    // Platforms do not always send a JSON content type; their envelope is parsed whatever it says.
    if (spec.bodyType === 'any-json') return [express.json({ limit, type: () => true, verify: keepRaw })];
    return [express.json({ limit, verify: keepRaw })];
  }
}
