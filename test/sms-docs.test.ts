import fs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { SMS_DOC, renderSmsDoc } from '../scripts/docs-sms.js';
import { CODE_TABLE } from '../src/sms/providers/index.js';

describe('docs/sms.md', () => {
  it('shows exactly what the code says (run `npm run docs:sms` after changing a code table or the outbox moves)', async () => {
    const doc = await fs.readFile(SMS_DOC, 'utf8');
    expect(renderSmsDoc(doc)).toBe(doc);
  });

  it('the generated code table lists every code of every adapter', async () => {
    const doc = await fs.readFile(SMS_DOC, 'utf8');
    for (const [key, rule] of Object.entries(CODE_TABLE)) {
      const code = key.slice(key.indexOf(':') + 1);
      expect(doc, key).toMatch(new RegExp(`\\| ${code} \\| ${rule.errorClass}`));
    }
  });

  it('refuses a document without the generated section', () => {
    expect(() => renderSmsDoc('# nothing here\n')).toThrow(/no generated section/);
  });
});
