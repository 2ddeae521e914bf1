import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    // The files wait on sockets, timers and PostgreSQL far more than they
    // compute, so more of them run at once than there are cores (vitest's
    // default is cores - 1, a single file at a time on two cores).
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 120_000,
  },
});
