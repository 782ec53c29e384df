import fs from 'node:fs';

interface ConfigTypesScript {
  renderConfigTypes(schema: unknown): string;
  readSchema(): unknown;
  TYPES_FILE: string;
}

const script = require('../../scripts/gen-config-types.js') as ConfigTypesScript;

describe('src/config/schema-types.ts', () => {
  it('is what scripts/gen-config-types.js generates from the configuration schema (run it after editing the schema)', () => {
    expect(fs.readFileSync(script.TYPES_FILE, 'utf8')).toBe(script.renderConfigTypes(script.readSchema()));
  });

  it('makes a key with a default, or a required one, always present, and any other optional', () => {
    const text = script.renderConfigTypes({
      type: 'object',
      required: ['needed'],
      properties: {
        defaulted: { type: 'integer', default: 1 },
        needed: { type: 'string' },
        maybe: { type: ['string', 'null'] },
        kind: { type: 'string', enum: ['file', 'rbd'], default: 'file' },
        pools: { type: ['array', 'null'], items: { type: 'string' }, default: null },
      },
    });
    expect(text).toContain('  defaulted: number;\n');
    expect(text).toContain('  needed: string;\n');
    expect(text).toContain('  maybe?: string | null;\n');
    expect(text).toContain('  kind: "file" | "rbd";\n');
    expect(text).toContain('  pools: string[] | null;\n');
  });

  it('refuses a schema form it does not understand instead of typing it loosely', () => {
    expect(() => script.renderConfigTypes({ type: 'object', properties: { a: { oneOf: [{ type: 'string' }] } } })).toThrow(/'oneOf' is not understood/);
  });
});
