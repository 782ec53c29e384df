import fs from 'node:fs';
import path from 'node:path';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'glance');

/** A captured Glance body, byte for byte (see test/fixtures/glance/README.md). */
export function fixtureText(name: string): string {
  return fs.readFileSync(path.join(FIXTURES, name), 'utf8');
}

export function fixtureJson(name: string): Record<string, unknown> {
  return JSON.parse(fixtureText(name)) as Record<string, unknown>;
}
