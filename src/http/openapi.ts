import { Router } from 'express';
import { z } from 'zod';
import type { Access, RouteRegistry, RouteSpec } from './registry.js';

/**
 * OpenAPI 3.1 from the route registry: the same zod schemas that validate
 * each request describe it, so the document cannot drift from the server.
 */

const SECURITY: Record<Access, Array<Record<string, string[]>>> = {
  public: [],
  admin: [{ adminToken: [] }],
  clinic: [{ clinicToken: [] }],
  metrics: [{ metricsToken: [] }],
  provider: [],
  session: [{ opsSession: [] }],
};

const jsonSchema = (schema: z.ZodType) => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

const openApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function operation(spec: RouteSpec) {
  const params: Array<Record<string, unknown>> = [...spec.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({
    name: m[1],
    in: 'path',
    required: true,
    schema: { type: 'string' },
  }));
  if (spec.query) {
    const q = jsonSchema(spec.query) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
    for (const [name, schema] of Object.entries(q.properties ?? {})) {
      const { description, ...rest } = schema;
      params.push({
        name,
        in: 'query',
        required: q.required?.includes(name) ?? false,
        schema: rest,
        ...(description ? { description } : {}),
      });
    }
  }
  const op: Record<string, unknown> = {
    operationId: `${spec.method}${openApiPath(spec.path).replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags,
    security: spec.clinicIdentity === 'retell-signature' ? [{ retellSignature: [] }] : SECURITY[spec.access],
    'x-access': spec.access,
    ...(params.length ? { parameters: params } : {}),
    responses: Object.fromEntries(
      Object.entries(spec.responses).map(([status, r]) => [
        status,
        {
          description: r.description,
          ...(r.schema || r.example !== undefined
            ? {
                content: {
                  [r.contentType ?? 'application/json']: {
                    ...(r.schema ? { schema: jsonSchema(r.schema) } : {}),
                    ...(r.example !== undefined ? { example: r.example } : {}),
                  },
                },
              }
            : {}),
        },
      ]),
    ),
  };
  if (spec.body) {
    const types =
      spec.bodyType === 'raw'
        ? [spec.rawContentType ?? 'application/octet-stream']
        : spec.bodyType === 'form'
          ? ['application/x-www-form-urlencoded']
          : spec.bodyType === 'form-or-json'
            ? ['application/x-www-form-urlencoded', 'application/json']
            : ['application/json'];
    const schema = jsonSchema(spec.body);
    op.requestBody = {
      required: true,
      content: Object.fromEntries(
        types.map((t) => [t, { schema, ...(spec.example?.body !== undefined ? { example: spec.example.body } : {}) }]),
      ),
    };
  }
  return op;
}

export function openApiDocument(registry: RouteRegistry, version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const spec of registry.routes) {
    const p = openApiPath(spec.path);
    paths[p] = { ...paths[p], [spec.method]: operation(spec) };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'clinic-voice-tools',
      version,
      description: 'Tool server for voice AI receptionists at medical clinics: tool calls, clinic administration, SMS operations.',
    },
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
        clinicToken: {
          type: 'oauth2',
          description: "A clinic's OAuth client, exchanged at /oauth/token for a short-lived JWT.",
          flows: { clientCredentials: { tokenUrl: '/oauth/token', scopes: { 'tools:invoke': 'Call the voice tools' } } },
        },
        metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, when set' },
        retellSignature: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Retell-Signature',
          description: "`v=<unix ms>,d=<hex HMAC-SHA256(the clinic's Retell API key, rawBody + unix ms)>`, valid for five minutes.",
        },
        opsSession: { type: 'apiKey', in: 'cookie', name: 'ops_session', description: 'Operator console session' },
      },
    },
  };
}

export function openApiRouter(registry: RouteRegistry, version: string): Router {
  const router = Router();
  let doc: ReturnType<typeof openApiDocument> | undefined;
  registry.mount(
    router,
    {
      method: 'get',
      path: '/openapi.json',
      access: 'public',
      tags: ['operations'],
      summary: 'This description (OpenAPI 3.1)',
      responses: { 200: { description: 'The OpenAPI document.' } },
    },
    (_req, res) => {
      // Built on first request: every router has registered by then.
      doc ??= openApiDocument(registry, version);
      res.json(doc);
    },
  );
  return router;
}
