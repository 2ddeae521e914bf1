/**
 * The registry of running service processes (ops_processes, sql/012_console.sql):
 * each runtime writes a heartbeat every OPS_HEARTBEAT_MS, so the console can
 * say which processes exist, what each runs (outbox worker, health probes) and
 * which ones stopped answering. A clean stop removes the row; a crash leaves it
 * to go stale, and a row silent for a day is dropped by anyone's heartbeat.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';

export interface ProcessInfo {
  workerEnabled: boolean;
  healthProbing: boolean;
  workerId: string | null;
  monitorId: string | null;
  version: string;
  startedAt: Date;
}

export class ProcessHeartbeat {
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly workerSql: Sql,
    private readonly info: ProcessInfo,
    private readonly everyMs: number,
    private readonly log: Logger,
  ) {}

  /** Writes the first beat before returning, so a console asked right after start-up lists this process. */
  async start(): Promise<void> {
    await this.beat();
    this.schedule();
  }

  private schedule() {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.beating = this.beat().finally(() => this.schedule());
    }, this.everyMs);
    // Never what keeps a process alive.
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    const i = this.info;
    try {
      await this.workerSql`
        INSERT INTO ops_processes (id, host, pid, version, started_at, worker_enabled, health_probing, worker_id, monitor_id)
        VALUES (${this.id}, ${hostname().slice(0, 255)}, ${process.pid}, ${i.version.slice(0, 50)}, ${i.startedAt},
                ${i.workerEnabled}, ${i.healthProbing}, ${i.workerId}, ${i.monitorId})
        ON CONFLICT (id) DO UPDATE
          SET last_seen_at = now(), version = EXCLUDED.version, worker_enabled = EXCLUDED.worker_enabled,
              health_probing = EXCLUDED.health_probing, worker_id = EXCLUDED.worker_id, monitor_id = EXCLUDED.monitor_id`;
      await this.workerSql`DELETE FROM ops_processes WHERE last_seen_at < now() - interval '1 day'`;
    } catch (err) {
      this.log.warn({ err }, 'could not write the process heartbeat');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.beating;
    await this.workerSql`DELETE FROM ops_processes WHERE id = ${this.id}`.catch(() => {});
  }
}

export interface ProcessView {
  id: string;
  host: string;
  pid: number;
  version: string;
  startedAt: string;
  lastSeenAt: string;
  /** Seconds since its last heartbeat. */
  silentSeconds: number;
  /** No heartbeat for three beats: it died or hangs. */
  gone: boolean;
  workerEnabled: boolean;
  healthProbing: boolean;
  workerId: string | null;
  monitorId: string | null;
}

/** Every process that wrote a heartbeat in the last day, live ones first. */
export async function listProcesses(workerSql: Sql, heartbeatMs: number): Promise<ProcessView[]> {
  const rows = await workerSql<
    Array<{
      id: string;
      host: string;
      pid: number;
      version: string;
      started_at: Date;
      last_seen_at: Date;
      silent: number;
      worker_enabled: boolean;
      health_probing: boolean;
      worker_id: string | null;
      monitor_id: string | null;
    }>
  >`
    SELECT id, host, pid, version, started_at, last_seen_at, EXTRACT(EPOCH FROM now() - last_seen_at)::float8 AS silent,
           worker_enabled, health_probing, worker_id, monitor_id
      FROM ops_processes
     ORDER BY last_seen_at DESC, started_at`;
  const goneAfter = (3 * heartbeatMs) / 1000;
  return rows
    .map((r) => ({
      id: r.id,
      host: r.host,
      pid: r.pid,
      version: r.version,
      startedAt: r.started_at.toISOString(),
      lastSeenAt: r.last_seen_at.toISOString(),
      silentSeconds: Math.max(0, Math.round(r.silent)),
      gone: r.silent > goneAfter,
      workerEnabled: r.worker_enabled,
      healthProbing: r.health_probing,
      workerId: r.worker_id,
      monitorId: r.monitor_id,
    }))
    .sort((a, b) => Number(a.gone) - Number(b.gone));
}
