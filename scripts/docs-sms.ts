/**
 * Writes the generated sections of docs/sms.md from the code, so the two cannot
 * drift: the error-code table (from the adapters' code tables) and the outbox
 * states and moves (from src/sms/outbox.ts). test/sms-docs.test.ts fails when
 * the file and the code disagree.
 *
 *   npm run docs:sms
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DELIVERY_MOVES, DELIVERY_STATES, RECEIPT_ACTIONS } from '../src/sms/delivery.js';
import { KEYWORD_LIST } from '../src/sms/inbound.js';
import { MOVES } from '../src/sms/outbox.js';
import { CODE_TABLES } from '../src/sms/providers/index.js';
import type { ErrorClass } from '../src/sms/types.js';

export const SMS_DOC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/sms.md');

const CLASS_ACTIONS: Record<ErrorClass, string> = {
  transient:
    "retry the same provider (p-retry: exponential backoff with jitter, 2 retries, 100 ms to 1 s so they fit the booking's response budget), then fail over",
  provider: 'fail over at once',
  recipient: 'stop: no retry, no failover. STOP also writes `sms_opt_outs`, so later messages to that phone are not attempted at all',
  ambiguous: 'reconcile first (below), never blindly resend elsewhere',
};
const ORDER: ErrorClass[] = ['transient', 'provider', 'recipient', 'ambiguous'];
const SOURCES: Record<string, string> = {
  twilio: 'Twilio',
  telnyx: 'Telnyx',
  sns: 'Amazon SNS',
  relay: 'relay (4xx `code`)',
  net: 'network (any SDK)',
};

function codesSection(): string {
  const lines = ['| class | engine does |', '|---|---|'];
  for (const c of ORDER) lines.push(`| ${c} | ${CLASS_ACTIONS[c]} |`);
  lines.push('', '| source | code | class | meaning |', '|---|---|---|---|');
  for (const [ns, table] of Object.entries(CODE_TABLES)) {
    const rows = Object.entries(table).sort(
      ([a, ra], [b, rb]) => ORDER.indexOf(ra.errorClass) - ORDER.indexOf(rb.errorClass) || a.localeCompare(b),
    );
    for (const [code, rule] of rows) {
      lines.push(`| ${SOURCES[ns] ?? ns} | ${code} | ${rule.errorClass}${rule.optOut ? ' (STOP)' : ''} | ${rule.meaning} |`);
    }
  }
  return lines.join('\n');
}

function movesSection(): string {
  const lines = ['| move | from | to | made by | when |', '|---|---|---|---|---|'];
  for (const m of MOVES) lines.push(`| ${m.move} | ${m.from ?? '(new row)'} | ${m.to ?? '(deleted)'} | ${m.by} | ${m.when} |`);
  return lines.join('\n');
}

function deliverySection(): string {
  const lines = ['| state | rank | meaning |', '|---|---|---|'];
  for (const s of DELIVERY_STATES) lines.push(`| ${s.state} | ${s.rank} | ${s.meaning} |`);
  lines.push('', '| from | to | made by |', '|---|---|---|');
  for (const m of DELIVERY_MOVES) lines.push(`| ${m.from ?? '(not accepted)'} | ${m.to} | ${m.by} |`);
  lines.push('', '| class of a final failure | what follows |', '|---|---|');
  for (const c of ['provider', 'recipient', 'transient'] as const) lines.push(`| ${c} | ${RECEIPT_ACTIONS[c]} |`);
  return lines.join('\n');
}

function keywordsSection(): string {
  const lines = ['| action | keywords |', '|---|---|'];
  for (const action of ['opt_out', 'opt_in', 'help'] as const) {
    lines.push(
      `| ${action} | ${KEYWORD_LIST.filter((k) => k.action === action)
        .map((k) => k.keyword)
        .join(', ')} |`,
    );
  }
  return lines.join('\n');
}

export type Section = { name: string; render: () => string };
export const SECTIONS: Section[] = [
  { name: 'outbox-moves', render: movesSection },
  { name: 'delivery-states', render: deliverySection },
  { name: 'keywords', render: keywordsSection },
  { name: 'error-codes', render: codesSection },
];

/** The document with every generated section replaced by what the code says now. */
export function renderSmsDoc(doc: string, sections: Section[] = SECTIONS): string {
  let out = doc;
  for (const s of sections) {
    const begin = `<!-- generated:${s.name} (npm run docs:sms; do not edit by hand) -->`;
    const end = `<!-- /generated:${s.name} -->`;
    const i = out.indexOf(begin);
    const j = out.indexOf(end);
    if (i < 0 || j < i) throw new Error(`docs/sms.md has no generated section ${s.name}`);
    out = `${out.slice(0, i + begin.length)}\n${s.render()}\n${out.slice(j)}`;
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const doc = await fs.readFile(SMS_DOC, 'utf8');
  const next = renderSmsDoc(doc);
  if (next !== doc) await fs.writeFile(SMS_DOC, next);
  process.stdout.write(next === doc ? 'docs/sms.md is up to date\n' : 'docs/sms.md updated\n');
}
