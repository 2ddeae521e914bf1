import type { Sql } from 'postgres';

export type OpeningHours = Record<string, Array<[string, string]>>;

export interface Service {
  id: string;
  code: string;
  name: string;
  durationMinutes: number;
}

export interface Practitioner {
  id: string;
  name: string;
  serviceCodes: string[] | null;
}

/** A clinic as a tool call sees it; loaded once per request, under RLS. */
export interface OrgContext {
  id: string;
  name: string;
  timeZone: string;
  defaultRegion: string;
  openingHours: OpeningHours;
  slotIntervalMinutes: number;
  active: boolean;
  vapiSecretSha256: string | null;
  vapiHmacSecretEnc: string | null;
  services: Service[];
  practitioners: Practitioner[];
  clientActive: boolean;
  smsConfigured: boolean;
}

/** One round trip: scopes the statement to the org and returns null when RLS or absence hides it. */
export async function loadOrgContext(sql: Sql, orgId: string, clientId: string | null): Promise<OrgContext | null> {
  const [row] = await sql<{ ctx: OrgContext | null }[]>`SELECT org_context(${orgId}::uuid, ${clientId}) AS ctx`;
  return row?.ctx ?? null;
}

export const WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] as const;

/**
 * A clinic's settings, reused for a few seconds between tool calls. Only the
 * settings are cached: whether the org is active and the OAuth client unrevoked
 * is re-checked by the database inside every tool's own statement
 * (tenant_scope / book_appointment), so a deactivation takes effect at once.
 * Admin writes in this process evict the entry; other processes see settings
 * changes after the TTL.
 */
export class OrgContextCache {
  private readonly map = new Map<string, { ctx: OrgContext; at: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly max = 5_000,
  ) {}

  get(orgId: string): OrgContext | undefined {
    const hit = this.map.get(orgId);
    if (!hit) return undefined;
    if (Date.now() - hit.at >= this.ttlMs) {
      this.map.delete(orgId);
      return undefined;
    }
    return hit.ctx;
  }

  set(ctx: OrgContext): void {
    if (this.ttlMs <= 0) return;
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string);
    this.map.set(ctx.id, { ctx, at: Date.now() });
  }

  invalidate(orgId: string): void {
    this.map.delete(orgId);
  }
}
