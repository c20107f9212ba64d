import { defineConfig } from 'vitest/config';

// Test files that touch the kernel name everything they create uniquely per
// file, so files may run in parallel; forks (not threads) keep each file's
// FFI handles and network-namespace switches in a process of its own.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
