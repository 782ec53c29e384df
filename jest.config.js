/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  // Real services start once per suite; suites run one at a time on a 2-core machine.
  maxWorkers: 1,
  // In the project, not in the temp dir: scripts/test.sh gives each run a temp dir of its own and
  // checks that it ends empty.
  cacheDirectory: '<rootDir>/node_modules/.cache/jest',
  testTimeout: 60000,
  reporters: ['default', '<rootDir>/test/harness/summary-reporter.js'],
};
