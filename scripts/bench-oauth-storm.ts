/**
 * The guessing storm of bench-oauth.ts, in a process of its own: STORM_GUESSERS
 * wrong-credential token requests in flight at all times, from 20 addresses,
 * half for unknown client ids and half wrong secrets for STORM_VICTIMS. On
 * SIGTERM it prints how the guesses were answered.
 */
const base = process.env.STORM_BASE!;
const guessers = Number(process.env.STORM_GUESSERS ?? 400);
const victims = (process.env.STORM_VICTIMS ?? '').split(',').filter(Boolean);
const statuses = new Map<number, number>();
let stop = false;

async function guesser(n: number) {
  for (let i = 0; !stop; i++) {
    const id = i % 2 || victims.length === 0 ? `cli_guess_${n}_${i}` : victims[(n + i) % victims.length]!;
    const status = await fetch(`${base}/oauth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Forwarded-For': `203.0.113.${n % 20}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: id, client_secret: `cs_wrong_${i}` }),
    })
      .then(async (r) => (await r.arrayBuffer(), r.status))
      .catch(() => 0);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
}

const all = Array.from({ length: guessers }, (_, n) => guesser(n));
process.on('SIGTERM', async () => {
  stop = true;
  await Promise.all(all);
  const total = [...statuses.values()].reduce((a, b) => a + b, 0);
  process.stdout.write(`${total} (${[...statuses].map(([s, k]) => `${s}: ${k}`).join(', ')})\n`);
  process.exit(0);
});
