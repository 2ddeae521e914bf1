import type { DateTime } from 'luxon';
import { isOpenAt, nextOpening } from '../booking/availability.js';
import type { OrgContext } from '../booking/org.js';
import { spokenClock } from '../booking/time.js';

/**
 * Where "can I talk to a person" goes: the clinic's front desk during opening
 * hours, otherwise a sentence the agent can say, offering to take a message
 * (the takeMessage tool).
 */
export type Handoff =
  { transfer: true; number: string; sentence: string } | { transfer: false; reason: 'closed' | 'no_number'; sentence: string };

export function frontDeskHandoff(org: OrgContext, now: DateTime): Handoff {
  if (!org.frontDeskPhone) {
    return {
      transfer: false,
      reason: 'no_number',
      sentence: "I'm not able to transfer calls for this clinic, but I can take a message for the front desk.",
    };
  }
  if (isOpenAt(org, now)) {
    return { transfer: true, number: org.frontDeskPhone, sentence: 'Connecting you to the front desk now.' };
  }
  const next = nextOpening(org, now);
  const local = now.setZone(org.timeZone);
  const when = next
    ? ` It opens again ${next.hasSame(local, 'day') ? '' : `${next.toFormat('cccc')} `}at ${spokenClock(next, org.locale)}.`
    : '';
  return {
    transfer: false,
    reason: 'closed',
    sentence: `The front desk is closed right now.${when} I can take a message for them.`,
  };
}
