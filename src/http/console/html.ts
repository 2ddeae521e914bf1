/**
 * HTML for the console, as tagged template literals: every interpolated value
 * is escaped unless it is already Html (made by this tag), so a clinic name, a
 * message body or a provider's error text can never become markup.
 *
 *   html`<td>${clinic.name}</td>`          // escaped
 *   html`<ul>${items.map((i) => html`<li>${i}</li>`)}</ul>`
 */

export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

type Part = Html | string | number | boolean | null | undefined | readonly Part[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

function render(p: Part): string {
  if (p === null || p === undefined || p === false) return '';
  if (p instanceof Html) return p.value;
  if (Array.isArray(p)) return p.map(render).join('');
  return escapeHtml(String(p));
}

export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new Html(out);
}

/** Markup built elsewhere and known to be safe (the SVG chart's numbers). Never for input. */
export const trusted = (s: string) => new Html(s);
