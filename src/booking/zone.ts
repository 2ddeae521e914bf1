import { IANAZone, Zone, type ZoneOffsetFormat, type ZoneOffsetOptions } from 'luxon';

/**
 * An IANA zone whose UTC offsets are read from a table of that zone's
 * transitions instead of being computed through Intl for every instant.
 *
 * luxon's IANAZone asks Intl.DateTimeFormat#formatToParts for the offset each
 * time a DateTime is built or moved, and a booking builds a dozen: it was the
 * largest single CPU cost of a tool call. The table is built once per zone and
 * UTC year by sampling the real offsets (IANAZone's, so the answers are the
 * same by construction) every 12 hours and bisecting each change to the
 * millisecond; no zone changes its offset twice within 12 hours. Names and
 * formatting still come from IANAZone.
 */
interface YearTable {
  /** Instants (ms) at which a new offset starts, ascending; starts[0] is before the year. */
  starts: number[];
  /** Offset in minutes from starts[i] on. */
  offsets: number[];
}

const STEP_MS = 12 * 3_600_000;

class TransitionZone extends Zone {
  private readonly years = new Map<number, YearTable>();

  constructor(private readonly iana: IANAZone) {
    super();
  }

  override get type(): string {
    return 'iana';
  }

  override get name(): string {
    return this.iana.name;
  }

  override get isUniversal(): boolean {
    return false;
  }

  override get isValid(): boolean {
    return this.iana.isValid;
  }

  override offsetName(ts: number, opts: ZoneOffsetOptions): string | null {
    return this.iana.offsetName(ts, opts);
  }

  override formatOffset(ts: number, format: ZoneOffsetFormat): string {
    return this.iana.formatOffset(ts, format);
  }

  override equals(other: Zone): boolean {
    return other.type === 'iana' && other.name === this.name;
  }

  override offset(ts: number): number {
    if (!Number.isFinite(ts) || !this.iana.isValid) return this.iana.offset(ts);
    const year = new Date(ts).getUTCFullYear();
    let table = this.years.get(year);
    if (!table) {
      table = this.build(year);
      this.years.set(year, table);
    }
    // Few entries (two a year where DST is kept): a scan from the end is enough.
    for (let i = table.starts.length - 1; i >= 0; i--) {
      if (ts >= table.starts[i]!) return table.offsets[i]!;
    }
    return this.iana.offset(ts);
  }

  private build(year: number): YearTable {
    const from = Date.UTC(year, 0, 1) - STEP_MS;
    const to = Date.UTC(year + 1, 0, 1) + STEP_MS;
    const starts = [from];
    const offsets = [this.iana.offset(from)];
    let prevTs = from;
    let prev = offsets[0]!;
    for (let ts = from + STEP_MS; ts <= to; ts += STEP_MS) {
      const cur = this.iana.offset(ts);
      if (cur !== prev) {
        // The change lies in (prevTs, ts]: bisect to the first millisecond of the new offset.
        let lo = prevTs;
        let hi = ts;
        while (hi - lo > 1) {
          const mid = lo + Math.floor((hi - lo) / 2);
          if (this.iana.offset(mid) === prev) lo = mid;
          else hi = mid;
        }
        starts.push(hi);
        offsets.push(cur);
        prev = cur;
      }
      prevTs = ts;
    }
    return { starts, offsets };
  }
}

const zones = new Map<string, Zone>();

/**
 * The luxon zone to use for a clinic's IANA zone name. Invalid names give
 * luxon's own invalid IANAZone, so every validity check behaves as before.
 */
export function clinicZone(name: string): Zone {
  let z = zones.get(name);
  if (!z) {
    const iana = IANAZone.create(name);
    z = iana.isValid ? new TransitionZone(iana) : iana;
    // Clinics are few; the bound only keeps a stream of bad names from growing it.
    if (zones.size > 1000) zones.clear();
    zones.set(name, z);
  }
  return z;
}
