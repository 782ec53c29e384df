import { applyEditsToBytes } from '../../src/http/image-api';
import { applyEdits, type TextEdit } from '../../src/images/glance-json';

describe('edits applied to the body bytes', () => {
  test.each([
    ['ASCII only', '{"cache_raw": "true", "name": "x"}'],
    ['two- and three-byte characters before the edit', '{"name": "é漢字", "cache_raw": "true"}'],
    ['astral characters (two UTF-16 units) before and after', '{"name": "😀😀", "cache_raw": "yes", "d": "𝄞"}'],
  ])('give the same bytes as editing the text, with %s', (_, text) => {
    const start = text.indexOf('"true"') >= 0 ? text.indexOf('"true"') : text.indexOf('"yes"');
    const end = text.indexOf('"', start + 1) + 1;
    const edits: TextEdit[] = [
      { start, end, text: '"True"' },
      { start: 0, end: 1, text: '{ ' },
    ];
    const pieces = applyEditsToBytes(Buffer.from(text, 'utf8'), edits);
    expect(Buffer.concat(pieces).toString('utf8')).toBe(applyEdits(text, edits));
  });

  test('an edit at the very end of the body', () => {
    const text = '["é", 1]';
    const edits: TextEdit[] = [{ start: text.length - 1, end: text.length, text: ']\n' }];
    expect(Buffer.concat(applyEditsToBytes(Buffer.from(text, 'utf8'), edits)).toString('utf8')).toBe('["é", 1]\n');
  });
});
