import fs from 'node:fs';
import path from 'node:path';
import Ajv from 'ajv';
import {
  findWritableRule,
  invalidValueMessage,
  isCanonicalValue,
  isReadOnlyProperty,
  propertyRules,
  readOnlyRules,
  storeRule,
  writableRules,
} from '../../src/images/rules';

describe('the property table', () => {
  it('names the four writable extension properties and the five server-owned ones', () => {
    expect(writableRules.map((rule) => rule.name)).toEqual([
      'cache_raw',
      'sw_wrs_auto_recovery',
      'hw_wrs_live_migration_timeout',
      'hw_wrs_live_migration_max_downtime',
    ]);
    expect(readOnlyRules.map((rule) => rule.name)).toEqual(['store', 'cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error']);
    expect(isReadOnlyProperty('cache_raw_url')).toBe(true);
    expect(isReadOnlyProperty('cache_raw')).toBe(false);
    expect(isReadOnlyProperty('status')).toBe(false);
  });

  it('is a JSON Schema any validator reads: every extension value is a string', () => {
    const table = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'schemas', 'stx-image-properties.json'), 'utf8')) as object;
    const validate = new Ajv({ strict: false }).compile(table);
    expect(validate({ cache_raw: 'True', hw_wrs_live_migration_timeout: '400', store: 'rbd, file', cache_raw_status: 'Cached' })).toBe(true);
    expect(validate({ cache_raw: true })).toBe(false);
    expect(validate({ hw_wrs_live_migration_timeout: '119' })).toBe(false);
  });

  it('validates the stored forms through the compiled table', () => {
    expect(isCanonicalValue('cache_raw', 'True')).toBe(true);
    expect(isCanonicalValue('cache_raw', 'true')).toBe(false);
    expect(isCanonicalValue('hw_wrs_live_migration_timeout', '0')).toBe(true);
    expect(isCanonicalValue('hw_wrs_live_migration_timeout', '120')).toBe(true);
    expect(isCanonicalValue('hw_wrs_live_migration_timeout', '119')).toBe(false);
    expect(isCanonicalValue('hw_wrs_live_migration_timeout', '800')).toBe(true);
    expect(isCanonicalValue('hw_wrs_live_migration_timeout', '801')).toBe(false);
    expect(isCanonicalValue('hw_wrs_live_migration_max_downtime', '100')).toBe(true);
    expect(isCanonicalValue('hw_wrs_live_migration_max_downtime', '99')).toBe(false);
    expect(isCanonicalValue('store', 'rbd')).toBe(false);
  });

  it("gives store the types and separator of StarlingX's value", () => {
    expect(storeRule.name).toBe('store');
    expect(storeRule.list).toEqual({ separator: ', ', values: ['file', 'rbd'] });
  });

  it('fills the value a client sent into the message', () => {
    const rule = findWritableRule('sw_wrs_auto_recovery');
    expect(rule && invalidValueMessage(rule, 'maybe')).toBe('sw_wrs_auto_recovery must be True or False, value: maybe');
  });

  it('cannot be changed by the code that reads it', () => {
    expect(Object.isFrozen(propertyRules)).toBe(true);
    expect(propertyRules.every((rule) => Object.isFrozen(rule))).toBe(true);
  });
});
