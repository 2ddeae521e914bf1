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
