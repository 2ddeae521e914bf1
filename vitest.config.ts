import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    // One module graph per worker instead of one per file: the SDKs (Twilio,
    // Telnyx, AWS) and the app are imported once per worker, not 60 times.
    // The files share no state through it: each makes its own database and
    // runtime, restores any env it sets, and uses no fake timers; counters in
    // the one metrics registry are only ever compared with earlier readings.
    isolate: false,
    // The files wait on sockets, timers, child processes and PostgreSQL for a
    // quarter of their time, so more of them run at once than there are cores
    // (vitest's default is cores - 1, one file at a time on two cores). On two
    // cores: 2 workers 81 s, 3 workers 63-66 s (three runs, all green), 4 no
    // faster (63 s) and with less headroom for the suites that time leases.
    maxWorkers: 3,
    testTimeout: 30_000,
    hookTimeout: 120_000,
  },
});
