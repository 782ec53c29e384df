import fs from 'node:fs';

interface DocScript {
  renderPropertiesDoc(table: unknown): string;
  readTable(): unknown;
  DOC_FILE: string;
}

const script = require('../../scripts/gen-properties-doc.js') as DocScript;

describe('docs/properties.md', () => {
  it('is what scripts/gen-properties-doc.js generates from the property table (run it after editing the table)', () => {
    expect(fs.readFileSync(script.DOC_FILE, 'utf8')).toBe(script.renderPropertiesDoc(script.readTable()));
  });
});
