import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max';
import { ToolError } from './errors.js';

/**
 * Normalises a patient phone to E.164 using the clinic's default region for
 * national formats ("(415) 555-2671" in a US clinic). The full metadata set is
 * used so that numbers which merely have the right length are still refused.
 */
export function toE164(input: string, defaultRegion: string): string {
  const trimmed = input.trim();
  if (trimmed.length > 0 && trimmed.length <= 40 && /^[+\d\s().\-/]+$/.test(trimmed)) {
    const parsed = parsePhoneNumberFromString(trimmed, defaultRegion as CountryCode);
    if (parsed?.isValid()) return parsed.number;
  }
  throw new ToolError('invalid_phone', "That phone number doesn't look right. Could you read it to me again, digit by digit?");
}

/** "ending in 2671", the way an agent should read a number back. */
export function spokenPhoneEnding(e164: string): string {
  return `ending in ${e164.slice(-4).split('').join(' ')}`;
}
