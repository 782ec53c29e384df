import fs from 'node:fs';
import { ENV_OVERRIDES } from '../../src/config/load';

interface ConfigDocScript {
  renderConfigDoc(schema: unknown, envOverrides: Record<string, string>): string;
  readSchema(): unknown;
  readEnvOverrides(): Record<string, string>;
  parseEnvOverrides(source: string): Record<string, string>;
  DOC_FILE: string;
}

const script = require('../../scripts/gen-config-doc.js') as ConfigDocScript;

describe('docs/config.md', () => {
  it('is what scripts/gen-config-doc.js generates from the configuration schema (run it after editing the schema or ENV_OVERRIDES)', () => {
    expect(fs.readFileSync(script.DOC_FILE, 'utf8')).toBe(script.renderConfigDoc(script.readSchema(), script.readEnvOverrides()));
  });

  it('names the same environment overrides as the loader uses', () => {
    expect(script.readEnvOverrides()).toEqual(ENV_OVERRIDES);
  });

  it('refuses an ENV_OVERRIDES line it cannot read instead of leaving the variable out', () => {
    const source = "export const ENV_OVERRIDES: Record<string, string> = {\n  STX_A: 'listen',\n  ...more,\n};\n";
    expect(() => script.parseEnvOverrides(source)).toThrow(/cannot read the ENV_OVERRIDES line "...more,"/);
  });

  it('refuses an override naming a key the schema does not declare', () => {
    expect(() => script.renderConfigDoc(script.readSchema(), { STX_GLANCE_PROXY_NOPE: 'rawcache.nope' })).toThrow(/'rawcache.nope'/);
  });
});
