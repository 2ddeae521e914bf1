/**
 * The overview's small delivery-rate chart: one bar per hour, drawn as inline
 * SVG on the server (no chart library, no script). Colours come from classes
 * in the stylesheet, and the chart's label says in words what the bars show.
 */
import type { HourBucket } from '../../sms/status.js';
import { html, trusted, type Html } from './html.js';

const W = 4;
const GAP = 1;
const H = 22;

export const rateClass = (rate: number | null) => (rate === null ? 'none' : rate >= 0.95 ? 'ok' : rate >= 0.8 ? 'warn' : 'bad');

export function pct(rate: number | null): string {
  if (rate === null) return '–';
  const p = rate * 100;
  return `${p >= 99.95 || p === 0 ? p.toFixed(0) : p.toFixed(1)} %`;
}

export function deliveryChart(series: HourBucket[] | undefined, hours: number): Html {
  const buckets = series ?? [];
  let delivered = 0;
  let final = 0;
  let accepted = 0;
  let low = 0;
  const bars: string[] = [];
  buckets.forEach((b, i) => {
    const x = i * (W + GAP);
    delivered += b.delivered;
    final += b.delivered + b.undelivered;
    accepted += b.accepted;
    if (b.accepted === 0) return;
    if (b.rate === null) {
      // Accepted, no final receipt (yet, or ever for providers without receipts): a stub, not a rate.
      bars.push(`<rect class="bar none" x="${x}" y="${H - 2}" width="${W}" height="2"/>`);
      return;
    }
    if (b.rate < 0.8) low += 1;
    const h = Math.max(2, Math.round(b.rate * H));
    bars.push(`<rect class="bar ${rateClass(b.rate)}" x="${x}" y="${H - h}" width="${W}" height="${h}"/>`);
  });
  const overall = final > 0 ? delivered / final : null;
  const label =
    accepted === 0
      ? `No messages in the last ${hours} hours`
      : overall === null
        ? `${accepted} accepted in the last ${hours} hours, no delivery receipts`
        : `Delivery rate by hour, last ${hours} hours: ${pct(overall)} overall` +
          (low ? `, ${low} ${low === 1 ? 'hour' : 'hours'} below 80 %` : '');
  const width = hours * (W + GAP) - GAP;
  return html`<svg class="chart" viewBox="0 0 ${width} ${H}" width="${width}" height="${H}" role="img" aria-label="${label}"><title>${label}</title><line class="base" x1="0" y1="${H - 0.5}" x2="${width}" y2="${H - 0.5}"/>${trusted(bars.join(''))}</svg>`;
}
