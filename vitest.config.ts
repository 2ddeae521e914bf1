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
    // The files wait on sockets, timers and PostgreSQL far more than they
    // compute, so more of them run at once than there are cores (vitest's
    // default is cores - 1, a single file at a time on two cores).
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 120_000,
  },
});
