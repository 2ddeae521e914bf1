/**
 * The console's pages, rendered on the server. Every page is complete HTML
 * that works without script; the parts that change (the clinics table, a
 * clinic's status, the process list) are also served alone for htmx to swap in
 * place. Every value goes through the escaping `html` tag; phones are masked.
 */
import type { DeadLetter } from '../../sms/dead-letters.js';
import type { MessageView } from '../../sms/history.js';
import type { InboxItem } from '../../inbox/inbox.js';
import type { ProcessView } from '../../ops/processes.js';
import type { ClinicStatus, HourBucket, LinkStatus, StatusReport } from '../../sms/status.js';
import { deliveryChart, pct } from './chart.js';
import { html, type Html } from './html.js';

export interface PageContext {
  title: string;
  /** Present when signed in: the sign-out form and the nav need it. */
  csrf?: string;
  nav?: 'overview' | 'dead-letters' | 'server' | 'clinic';
  refreshSeconds: number;
  /** One line about the server for the header: ready / not ready, version. */
  server?: { ready: string; version: string };
}

const HTMX_CONFIG = JSON.stringify({
  includeIndicatorStyles: false,
  allowEval: false,
  allowScriptTags: false,
  selfRequestsOnly: true,
  historyCacheSize: 0,
  refreshOnHistoryMiss: true,
});

export function layout(ctx: PageContext, body: Html): Html {
  const link = (href: string, name: NonNullable<PageContext['nav']>, text: string) =>
    html`<a href="${href}"${ctx.nav === name ? html` aria-current="page"` : ''}>${text}</a>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${ctx.title} · clinic-voice-tools console</title>
<link rel="stylesheet" href="/ops/assets/console.css">
<script src="/ops/assets/htmx.min.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <span class="brand">clinic-voice-tools <span class="muted">console</span></span>
  ${
    ctx.csrf
      ? html`<nav aria-label="Console">${link('/ops', 'overview', 'Overview')} ${link('/ops/dead-letters', 'dead-letters', 'Dead letters')} ${link('/ops/server', 'server', 'Server')}</nav>
  ${ctx.server ? html`<span class="server-line">${ctx.server.ready} · v${ctx.server.version}</span>` : ''}
  <form method="post" action="/ops/logout" class="logout"><input type="hidden" name="csrf" value="${ctx.csrf}"><button type="submit" id="sign-out">Sign out</button></form>`
      : ''
  }
</header>
<main id="main" tabindex="-1">
${body}
</main>
</body>
</html>`;
}

export function loginPage(opts: { csrf: string; error?: string; throttledSeconds?: number }): Html {
  return html`<section class="login">
<h1>Sign in</h1>
<p>Paste the service's admin token (<code>ADMIN_TOKEN</code>). It is exchanged for a session cookie and is not kept in the browser.</p>
${opts.error ? html`<p class="notice bad" role="alert">${opts.error}</p>` : ''}
<form method="post" action="/ops/login">
  <input type="hidden" name="csrf" value="${opts.csrf}">
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus spellcheck="false">
  <button type="submit" id="sign-in">Sign in</button>
</form>
</section>`;
}

// ---------- formatting ----------

export function ago(seconds: number | null): string {
  if (seconds === null) return '–';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86_400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

const since = (iso: string | null, now: number) => (iso ? ago(Math.max(0, (now - Date.parse(iso)) / 1000)) : null);

/** A timestamp in UTC, to the second, with how long ago it was. */
function when(iso: string | null, now: number): Html {
  if (!iso) return html`<span class="muted">never</span>`;
  const t = iso.slice(0, 19).replace('T', ' ');
  return html`<time datetime="${iso}" title="${t} UTC">${since(iso, now)} ago</time>`;
}

const ms = (n: number | null) => (n === null ? '–' : `${n} ms`);

// ---------- provider links ----------

/** A link's state in one word, the colour only repeating it. */
function linkState(l: LinkStatus): { cls: string; word: string; detail: string } {
  if (l.credentials === 'undecryptable') return { cls: 'bad', word: 'CREDENTIALS BROKEN', detail: 'the credentials do not decrypt' };
  if (l.health.state === 'down')
    return { cls: 'bad', word: 'DOWN', detail: [l.health.errorClass, l.health.errorCode].filter(Boolean).join(' ') || 'probe failed' };
  if (l.breaker.shared === 'open') return { cls: 'bad', word: 'BREAKER OPEN', detail: 'skipped by every process' };
  if (l.breaker.here === 'open' && l.health.state === 'up')
    // After an outage this process's breaker stays open until its next message for the clinic, its trial send.
    return { cls: 'warn', word: 'RECOVERING', detail: "the account answers; this process's next message is a trial send" };
  if (l.breaker.here === 'open') return { cls: 'bad', word: 'BREAKER OPEN', detail: 'skipped by this process' };
  if (l.breaker.here === 'half-open') return { cls: 'warn', word: 'TRIAL', detail: 'one half-open trial send' };
  if (l.health.state === 'up') return { cls: 'ok', word: 'up', detail: `probe ${ms(l.health.latencyMs)}` };
  return { cls: 'none', word: 'unknown', detail: 'no fresh probe' };
}

function chainList(c: ClinicStatus): Html {
  if (!c.sms.configured) return html`<span class="muted">SMS not configured</span>`;
  return html`<ol class="chain">${c.providers.map((l) => {
    const s = linkState(l);
    const unused = l.position > 0 && !c.sms.failoverEnabled;
    return html`<li class="link ${s.cls}${unused ? ' unused' : ''}"><span class="dot" aria-hidden="true"></span><span class="kind">${l.kind}</span> <span class="state">${s.word}</span> <span class="muted">${s.detail}${unused ? ' · not used (failover off)' : ''}</span></li>`;
  })}</ol>`;
}

function failoverForm(c: ClinicStatus, csrf: string, back: string): Html {
  if (!c.sms.configured) return html`<span class="muted">–</span>`;
  if (c.providers.length < 2) return html`<span class="muted" title="A chain of one link has nothing to fail over to">one link</span>`;
  const on = c.sms.failoverEnabled;
  return html`<form method="post" action="/ops/clinics/${c.orgId}/failover" class="inline">
<input type="hidden" name="csrf" value="${csrf}"><input type="hidden" name="enabled" value="${on ? 'false' : 'true'}"><input type="hidden" name="back" value="${back}">
<span class="switch ${on ? 'on' : 'off'}">${on ? 'On' : 'Off'}</span>
<button type="submit" id="failover-${c.orgId}" aria-label="Turn failover ${on ? 'off' : 'on'} for ${c.name}">Turn ${on ? 'off' : 'on'}</button>
</form>`;
}

// ---------- overview ----------

export function summaryLine(r: StatusReport): Html {
  const t = r.totals;
  const down = t.linksDown;
  return html`<p class="summary" role="status" aria-live="polite">
<strong class="${down ? 'bad' : 'ok'}">${down ? `${down} provider ${down === 1 ? 'link' : 'links'} down` : 'All provider links up'}</strong>
· ${t.clinics} clinics · outbox ${t.outboxDepth}${t.oldestDueAgeSeconds !== null ? html`, oldest due waiting ${ago(t.oldestDueAgeSeconds)}` : ''}
· ${t.deadLetters} dead ${t.deadLetters === 1 ? 'letter' : 'letters'}
· last hour: ${t.accepted} accepted, ${t.delivered} delivered, ${t.undelivered} failed
</p>`;
}

export function clinicsTable(r: StatusReport, series: Map<string, HourBucket[]>, csrf: string, refreshSeconds: number): Html {
  const rows = r.clinics.map((c) => {
    const down = c.providers.some((l) => linkState(l).cls === 'bad');
    const h = c.lastHour;
    const failed = h.undelivered + h.deadLettered;
    return html`<tr class="${down ? 'alert' : ''}">
<th scope="row"><a href="/ops/clinics/${c.orgId}" id="clinic-${c.orgId}">${c.name}</a>${c.active ? '' : html` <span class="tag">inactive</span>`}${down ? html` <span class="tag bad">link down</span>` : ''}</th>
<td>${chainList(c)}</td>
<td>${failoverForm(c, csrf, '/ops')}</td>
<td class="num">${h.accepted}</td><td class="num">${h.delivered}</td><td class="num${failed ? ' bad' : ''}">${failed}</td>
<td class="nowrap">${deliveryChart(series.get(c.orgId), 24)}<span class="rate">${pct(h.deliveryRate)}</span></td>
<td class="num">${c.outbox.depth}${c.outbox.oldestDueAgeSeconds !== null ? html`<br><span class="muted">due ${ago(c.outbox.oldestDueAgeSeconds)}</span>` : ''}</td>
<td class="num">${c.deadLetters ? html`<a href="/ops/dead-letters?org=${c.orgId}" id="dl-${c.orgId}">${c.deadLetters}</a>` : '0'}</td>
<td class="num">${c.bookingsToday}</td>
</tr>`;
  });
  return html`<div id="clinics" hx-get="/ops" hx-trigger="every ${refreshSeconds}s" hx-select="#clinics" hx-swap="outerHTML">
${summaryLine(r)}
<table class="grid clinics">
<caption>Clinics, their provider chains and the last hour of confirmations (updated ${r.generatedAt.slice(11, 19)} UTC)</caption>
<thead><tr>
<th scope="col">Clinic</th><th scope="col">Provider chain</th><th scope="col">Failover</th>
<th scope="col" class="num">Accepted<br><span class="muted">last hour</span></th><th scope="col" class="num">Delivered</th><th scope="col" class="num">Failed</th>
<th scope="col">Delivery, 24 h</th><th scope="col" class="num">Outbox</th><th scope="col" class="num">Dead letters</th><th scope="col" class="num">Booked today</th>
</tr></thead>
<tbody>${rows.length ? rows : html`<tr><td colspan="10" class="muted">No clinics yet.</td></tr>`}</tbody>
</table>
</div>`;
}

export function overviewPage(
  r: StatusReport,
  series: Map<string, HourBucket[]>,
  csrf: string,
  refreshSeconds: number,
  notice?: Notice,
): Html {
  return html`<h1>Overview</h1>
${noticeBlock(notice)}
${clinicsTable(r, series, csrf, refreshSeconds)}
<p class="muted legend">A link is <span class="bad">DOWN</span> when a fresh probe of its account failed, <span class="bad">BREAKER OPEN</span> when the engine skips it; delivery rate is delivered ÷ (delivered + undelivered) among messages with a final receipt. The page refreshes every ${refreshSeconds} s.</p>`;
}

// ---------- notices ----------

export interface Notice {
  kind: 'ok' | 'bad';
  text: string;
}

function noticeBlock(n: Notice | undefined): Html {
  return n ? html`<p class="notice ${n.kind}" role="${n.kind === 'bad' ? 'alert' : 'status'}">${n.text}</p>` : html``;
}

// ---------- a clinic ----------

export interface ClinicPageData {
  status: ClinicStatus;
  lastSends: Map<string, string>;
  messages: MessageView[];
  inbox: InboxItem[];
  optOuts: Array<{ phone: string; source: string; optedOutAt: string }> | null;
}

export function clinicStatusBlock(d: ClinicPageData, refreshSeconds: number, now: number): Html {
  const c = d.status;
  const h = c.lastHour;
  const links = c.providers.map((l) => {
    const s = linkState(l);
    return html`<tr class="${s.cls === 'bad' ? 'alert' : ''}">
<td class="num">${l.position}</td>
<th scope="row">${l.kind} <span class="muted">${l.account ?? ''}</span>${l.position > 0 && !c.sms.failoverEnabled ? html` <span class="tag">not used: failover off</span>` : ''}</th>
<td><span class="link ${s.cls}"><span class="dot" aria-hidden="true"></span><span class="state">${s.word}</span></span> <span class="muted">${s.detail}</span><br><span class="muted">probed ${when(l.health.probedAt, now)}</span></td>
<td>shared: ${l.breaker.shared}<br>this process: ${l.breaker.here}</td>
<td>${l.credentials === 'ok' ? 'decrypts' : html`<strong class="bad">does not decrypt</strong>`}<br><span class="muted">last accepted send ${when(l.account ? (d.lastSends.get(l.account) ?? null) : null, now)}</span></td>
<td class="num">${l.accepted}</td><td class="num">${l.delivered}</td><td class="num">${l.undelivered}</td><td class="num">${l.refused}</td>
<td class="num">${ms(l.latencyMs.p50)} / ${ms(l.latencyMs.p99)}</td><td class="num">${l.failovers}</td><td class="num">${l.asyncFailovers}</td>
</tr>`;
  });
  return html`<div id="clinic-status" hx-get="/ops/clinics/${c.orgId}" hx-trigger="every ${refreshSeconds}s" hx-select="#clinic-status" hx-swap="outerHTML">
<dl class="facts">
<div><dt>SMS</dt><dd>${c.sms.configured ? (c.sms.enabled ? 'enabled' : 'switched off') : 'not configured'}</dd></div>
<div><dt>Failover</dt><dd>${c.sms.failoverEnabled ? 'on' : 'off'}</dd></div>
<div><dt>Last hour</dt><dd>${h.accepted} accepted, ${h.delivered} delivered, ${h.undelivered} undelivered, ${h.deadLettered} dead-lettered · delivery ${pct(h.deliveryRate)} · p50/p99 ${ms(h.latencyMs.p50)} / ${ms(h.latencyMs.p99)} · ${h.failovers} failovers, ${h.asyncFailovers} after acceptance</dd></div>
<div><dt>Outbox</dt><dd>${c.outbox.depth} waiting (${c.outbox.pending} pending, ${c.outbox.sending} sending)${c.outbox.oldestDueAgeSeconds !== null ? `, oldest due waiting ${ago(c.outbox.oldestDueAgeSeconds)}` : ''}</dd></div>
<div><dt>Dead letters</dt><dd>${c.deadLetters ? html`<a href="/ops/dead-letters?org=${c.orgId}">${c.deadLetters}</a>` : '0'}</dd></div>
<div><dt>Opt-outs</dt><dd>${c.optOuts}</dd></div>
<div><dt>Booked today</dt><dd>${c.bookingsToday} <span class="muted">(${c.timeZone})</span></dd></div>
</dl>
<table class="grid">
<caption>Provider chain, in the order the engine tries it</caption>
<thead><tr><th scope="col" class="num">#</th><th scope="col">Link</th><th scope="col">Health</th><th scope="col">Breaker</th><th scope="col">Credentials</th>
<th scope="col" class="num">Accepted</th><th scope="col" class="num">Delivered</th><th scope="col" class="num">Undelivered</th><th scope="col" class="num">Refused</th>
<th scope="col" class="num">p50 / p99</th><th scope="col" class="num">Failovers</th><th scope="col" class="num">Async failovers</th></tr></thead>
<tbody>${links.length ? links : html`<tr><td colspan="12" class="muted">No provider links.</td></tr>`}</tbody>
</table>
${messagesTable(d.messages, now)}
</div>`;
}

function messagesTable(messages: MessageView[], now: number): Html {
  const rows = messages.map((m) => {
    const state = m.deliveryState ? `${m.status}, ${m.deliveryState}` : m.status;
    const cls =
      m.status === 'failed' || m.deliveryState === 'undelivered' || m.deliveryState === 'failed'
        ? 'bad'
        : m.status === 'sent'
          ? 'ok'
          : 'none';
    return html`<tr>
<td>${when(m.createdAt, now)}</td>
<td class="phone">${m.to}</td>
<td><p class="body">${m.body}</p>${m.dryRun ? html`<span class="tag">dry run</span>` : ''}${m.provider === 'sandbox' ? html`<span class="tag">sandbox</span>` : ''}</td>
<td><span class="link ${cls}"><span class="dot" aria-hidden="true"></span><span class="state">${state}</span></span>${m.reason ? html`<br><span class="muted">${m.reason}</span>` : ''}</td>
<td>${m.provider ?? '–'}</td>
<td><ol class="attempts">${m.attempts.map(
      (a) =>
        html`<li>${a.provider} ${a.outcome}${a.errorClass ? html` <span class="muted">${a.errorClass}${a.errorCode ? ` ${a.errorCode}` : ''}</span>` : ''}${a.failedOver ? ' (failover)' : ''}${a.deliveryState ? html` → ${a.deliveryState}${a.deliveryCode ? ` ${a.deliveryCode}` : ''}` : ''}${a.latencyMs !== null ? html` <span class="muted">${a.latencyMs} ms</span>` : ''}</li>`,
    )}</ol></td>
</tr>`;
  });
  return html`<table class="grid messages">
<caption>Recent messages, exactly as the patient gets them (phones masked)</caption>
<thead><tr><th scope="col">Queued</th><th scope="col">To</th><th scope="col">Text</th><th scope="col">State</th><th scope="col">Provider</th><th scope="col">Attempts</th></tr></thead>
<tbody>${rows.length ? rows : html`<tr><td colspan="6" class="muted">No messages yet.</td></tr>`}</tbody>
</table>`;
}

export function clinicPage(d: ClinicPageData, csrf: string, refreshSeconds: number, notice?: Notice): Html {
  const c = d.status;
  const now = Date.now();
  return html`<p class="crumbs"><a href="/ops">Overview</a> › ${c.name}</p>
<h1>${c.name}${c.active ? '' : html` <span class="tag">inactive</span>`}</h1>
${noticeBlock(notice)}
<section class="switchbox" aria-labelledby="failover-h">
<h2 id="failover-h">Failover</h2>
<p>${
    c.providers.length < 2
      ? 'This clinic has one provider link: there is nothing to fail over to.'
      : c.sms.failoverEnabled
        ? 'On: when the primary fails, messages go out through the next link. Switching it off takes effect at once: only the primary is used.'
        : 'Off: only the primary link sends; its messages fail or wait on it alone. Switching it on takes effect at once.'
  }</p>
${failoverForm(c, csrf, `/ops/clinics/${c.orgId}`)}
</section>
<section aria-labelledby="status-h">
<h2 id="status-h">Status</h2>
${clinicStatusBlock(d, refreshSeconds, now)}
</section>
<section aria-labelledby="optouts-h">
<h2 id="optouts-h">Opt-outs</h2>
${
  d.optOuts === null
    ? html`<p class="muted">${c.optOuts} phones have opted out.</p>`
    : d.optOuts.length
      ? html`<table class="grid"><thead><tr><th scope="col">Phone</th><th scope="col">Source</th><th scope="col">Since</th></tr></thead><tbody>${d.optOuts.map(
          (o) => html`<tr><td class="phone">${o.phone}</td><td>${o.source}</td><td>${when(o.optedOutAt, now)}</td></tr>`,
        )}</tbody></table>`
      : html`<p class="muted">Nobody has opted out.</p>`
}
</section>
<section aria-labelledby="inbox-h">
<h2 id="inbox-h">Inbox</h2>
${
  d.inbox.length
    ? html`<table class="grid"><thead><tr><th scope="col">Received</th><th scope="col">Channel</th><th scope="col">From</th><th scope="col">Name</th><th scope="col">Message</th></tr></thead><tbody>${d.inbox.map(
        (m) =>
          html`<tr><td>${when(m.createdAt, now)}</td><td>${m.channel} <span class="muted">${m.kind}</span></td><td class="phone">${m.from ?? '–'}</td><td>${m.patientName ?? '–'}</td><td><p class="body">${m.body}</p></td></tr>`,
      )}</tbody></table>`
    : html`<p class="muted">The inbox is empty.</p>`
}
</section>`;
}

// ---------- dead letters ----------

export interface DeadLetterFilters {
  org?: string | undefined;
  reason?: string | undefined;
  age?: string | undefined;
}

export const AGE_FILTERS: Record<string, { label: string; newer?: number; older?: number }> = {
  '': { label: 'any age' },
  '1h': { label: 'last hour', newer: 3600 },
  '24h': { label: 'last 24 hours', newer: 86_400 },
  '7d': { label: 'last 7 days', newer: 7 * 86_400 },
  older: { label: 'older than 7 days', older: 7 * 86_400 },
};

export const DEAD_LETTER_REASONS = ['retries_exhausted', 'invalid_recipient', 'opted_out', 'rate_limited', 'expired', 'not_configured'];

export function deadLettersPage(opts: {
  items: Array<DeadLetter & { clinic: string; deliveryState?: string | null }>;
  clinics: Array<{ id: string; name: string }>;
  filters: DeadLetterFilters;
  truncated: boolean;
  csrf: string;
  notice?: Notice | undefined;
}): Html {
  const now = Date.now();
  const f = opts.filters;
  const option = (value: string, label: string, selected: boolean) =>
    html`<option value="${value}"${selected ? html` selected` : ''}>${label}</option>`;
  const rows = opts.items.map(
    (d) => html`<tr id="dead-${d.id}">
<td>${when(d.failedAt, now)}</td>
<td><a href="/ops/clinics/${d.orgId}">${d.clinic}</a></td>
<td class="phone">${d.to}</td>
<td><p class="body">${d.body}</p></td>
<td>${d.reason ?? '–'}${d.errorClass ? html`<br><span class="muted">${d.errorClass}${d.errorCode ? ` ${d.errorCode}` : ''}</span>` : ''}${d.error ? html`<br><span class="muted small">${d.error}</span>` : ''}</td>
<td>${d.provider ?? '–'}<br><span class="muted">${d.runs} runs, ${d.providerAttempts} attempts${d.deliveryState ? `, ${d.deliveryState}` : ''}</span></td>
<td class="actions">
<details><summary id="retry-open-${d.id}">Retry…</summary>
<form method="post" action="/ops/dead-letters/${d.id}/retry"><input type="hidden" name="csrf" value="${opts.csrf}">
<p>Send it again now, rate limit bypassed? It is refused if the patient already has this confirmation.</p>
<button type="submit" id="retry-${d.id}">Yes, retry</button></form></details>
<details><summary id="delete-open-${d.id}">Delete…</summary>
<form method="post" action="/ops/dead-letters/${d.id}/delete"><input type="hidden" name="csrf" value="${opts.csrf}">
<p>Delete this dead letter for good?</p>
<button type="submit" class="danger" id="delete-${d.id}">Yes, delete</button></form></details>
</td>
</tr>`,
  );
  return html`<h1>Dead letters</h1>
${noticeBlock(opts.notice)}
<form method="get" action="/ops/dead-letters" class="filters">
<label for="f-org">Clinic</label>
<select id="f-org" name="org">${option('', 'all clinics', !f.org)}${opts.clinics.map((c) => option(c.id, c.name, f.org === c.id))}</select>
<label for="f-reason">Reason</label>
<select id="f-reason" name="reason">${option('', 'any reason', !f.reason)}${DEAD_LETTER_REASONS.map((r) => option(r, r, f.reason === r))}</select>
<label for="f-age">Failed</label>
<select id="f-age" name="age">${Object.entries(AGE_FILTERS).map(([k, v]) => option(k, v.label, (f.age ?? '') === k))}</select>
<button type="submit" id="filter">Filter</button>
</form>
<table class="grid dead">
<caption>${opts.items.length} dead ${opts.items.length === 1 ? 'letter' : 'letters'}${opts.truncated ? ' (the newest; narrow the filters to see older ones)' : ''}, newest failure first. Phones masked.</caption>
<thead><tr><th scope="col">Failed</th><th scope="col">Clinic</th><th scope="col">To</th><th scope="col">Text</th><th scope="col">Why</th><th scope="col">Provider</th><th scope="col">Actions</th></tr></thead>
<tbody>${rows.length ? rows : html`<tr><td colspan="7" class="muted">No dead letters match.</td></tr>`}</tbody>
</table>`;
}

// ---------- the server ----------

export interface ServerFacts {
  ready: { state: 'ready' | 'migrations_pending' | 'unreachable'; text: string };
  migrations: { files: number; latest: string; applied: boolean | null };
  version: string;
  node: string;
  startedAt: string;
  uptimeSeconds: number;
  thisProcess: string;
  processes: ProcessView[];
  heartbeatSeconds: number;
}

export function serverBlock(s: ServerFacts, refreshSeconds: number): Html {
  const now = Date.now();
  return html`<div id="server" hx-get="/ops/server" hx-trigger="every ${refreshSeconds}s" hx-select="#server" hx-swap="outerHTML">
<dl class="facts">
<div><dt>Readiness (<code>/readyz</code>)</dt><dd><span class="link ${s.ready.state === 'ready' ? 'ok' : 'bad'}"><span class="dot" aria-hidden="true"></span><span class="state">${s.ready.text}</span></span></dd></div>
<div><dt>Migrations</dt><dd>${s.migrations.applied === null ? 'unknown (database unreachable)' : s.migrations.applied ? 'all applied' : html`<strong class="bad">pending</strong>`} · ${s.migrations.files} files, latest ${s.migrations.latest}</dd></div>
<div><dt>Version</dt><dd>${s.version} <span class="muted">(Node.js ${s.node})</span></dd></div>
<div><dt>This process</dt><dd>up ${ago(s.uptimeSeconds)} <span class="muted">since ${s.startedAt.slice(0, 19).replace('T', ' ')} UTC</span></dd></div>
</dl>
<table class="grid">
<caption>Processes on this database, from their heartbeats (every ${s.heartbeatSeconds} s; three missed beats: gone)</caption>
<thead><tr><th scope="col">Process</th><th scope="col">State</th><th scope="col">Outbox worker</th><th scope="col">Health probes</th><th scope="col">Version</th><th scope="col">Up since</th><th scope="col">Last heartbeat</th></tr></thead>
<tbody>${s.processes.map(
    (p) => html`<tr class="${p.gone ? 'alert' : ''}">
<th scope="row">${p.host} <span class="muted">pid ${p.pid}</span>${p.id === s.thisProcess ? html` <span class="tag">this one</span>` : ''}</th>
<td><span class="link ${p.gone ? 'bad' : 'ok'}"><span class="dot" aria-hidden="true"></span><span class="state">${p.gone ? 'GONE' : 'running'}</span></span></td>
<td>${p.workerEnabled ? html`runs <span class="muted">${p.workerId ?? ''}</span>` : 'off'}</td>
<td>${p.healthProbing ? 'probes' : 'reads only'}</td>
<td>${p.version}</td>
<td>${when(p.startedAt, now)}</td>
<td>${when(p.lastSeenAt, now)}</td>
</tr>`,
  )}</tbody>
</table>
</div>`;
}

export function serverPage(s: ServerFacts, refreshSeconds: number): Html {
  return html`<h1>Server</h1>${serverBlock(s, refreshSeconds)}`;
}

export function errorPage(status: number, message: string): Html {
  return html`<h1>${status === 401 ? 'Not signed in' : status === 403 ? 'Refused' : status === 404 ? 'Not found' : 'Something went wrong'}</h1>
<p class="notice bad" role="alert">${message}</p>
<p><a href="/ops">Back to the overview</a></p>`;
}
