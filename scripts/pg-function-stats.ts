/**
 * Prints where PostgreSQL spent its time, per SQL function and per table, for a
 * database started with track_functions=all (bench:sms does so when
 * BENCH_PG_DIAG=1).   node --import tsx scripts/pg-function-stats.ts <owner url>
 */
import postgres from 'postgres';
const url = process.argv[2]!;
const sql = postgres(url, { max: 1, onnotice: () => {} });
const rows =
  await sql`SELECT funcname, calls, round(total_time::numeric,1) AS total_ms, round((self_time/NULLIF(calls, 0))::numeric,3) AS self_ms_per_call FROM pg_stat_user_functions ORDER BY total_time DESC LIMIT 12`;
console.table(rows);
const st =
  await sql`SELECT relname, seq_scan, seq_tup_read, idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname LIKE 'sms%' OR relname = 'appointments' ORDER BY seq_tup_read DESC`;
console.table(st);
await sql.end();
