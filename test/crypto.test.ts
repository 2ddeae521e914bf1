import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, it, expect } from 'vitest';
import {
  CredentialDecryptError,
  KeyringConfigError,
  decryptSecret,
  encryptSecret,
  generateKeySpec,
  needsReencrypt,
  parseKeyring,
} from '../src/crypto.js';

const K1 = randomBytes(32).toString('base64');
const K2 = randomBytes(32).toString('base64');
const AAD = 'org:7b0e6f0e-1c1a-4c55-9a43-8d1f0b6b2a11:sms:twilio';
const SECRET = 'twilio-auth-token-3f9c2a71b8d04e6f';

function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error('non-Error thrown', { cause: err });
  }
  throw new Error('expected a throw');
}

function expectDecryptError(fn: () => unknown, reason?: CredentialDecryptError['reason']): CredentialDecryptError {
  const err = catchError(fn);
  expect(err).toBeInstanceOf(CredentialDecryptError);
  const typed = err as CredentialDecryptError;
  if (reason) expect(typed.reason).toBe(reason);
  expect(typed.message).not.toContain(SECRET);
  expect(typed.message).not.toContain(K1);
  expect(typed.message).not.toContain(K2);
  return typed;
}

describe('parseKeyring', () => {
  it('makes the first entry active and accepts all for decryption', () => {
    const ring = parseKeyring(`k2:${K2},k1:${K1}`);
    expect(ring.activeKeyId).toBe('k2');
    expect(ring.keyIds).toEqual(['k2', 'k1']);
  });

  it('accepts surrounding whitespace and quotes as written in env files', () => {
    expect(parseKeyring(` "k2:${K2} , k1:${K1}" `).keyIds).toEqual(['k2', 'k1']);
  });

  it('accepts a bare base64 key as id k0', () => {
    const ring = parseKeyring(K1);
    expect(ring.activeKeyId).toBe('k0');
    expect(decryptSecret(ring, encryptSecret(ring, SECRET, AAD), AAD)).toBe(SECRET);
  });

  it('a bare key stays addressable as k0 after labelled keys are added', () => {
    const blob = encryptSecret(parseKeyring(K1), SECRET, AAD);
    expect(decryptSecret(parseKeyring(`k1:${K2},k0:${K1}`), blob, AAD)).toBe(SECRET);
  });

  it.each([
    ['empty', '', /empty/],
    ['blank', '   ', /empty/],
    ['empty entry', `k1:${K1},`, /entry 2 is empty/],
    ['short key', `k1:${randomBytes(16).toString('base64')}`, /must decode to 32 bytes, got 16/],
    ['long key', `k1:${randomBytes(48).toString('base64')}`, /must decode to 32 bytes, got 48/],
    ['bad base64', `k1:${K1.slice(0, 20)}!!${K1.slice(22)}`, /not valid base64/],
    ['duplicate id', `k1:${K1},k1:${K2}`, /duplicate key id/],
    ['bare key among entries', `k2:${K2},${K1}`, /must look like <id>:<base64 key>/],
    ['invalid id', `k.1:${K1}`, /invalid key id/],
    ['empty key', 'k1:', /not valid base64/],
  ])('rejects %s with a clear message', (_name, spec, message) => {
    const err = catchError(() => parseKeyring(spec));
    expect(err).toBeInstanceOf(KeyringConfigError);
    expect(err.message).toMatch(message);
  });

  it('never echoes key material in errors, even when the key sits where the id should be', () => {
    const short = randomBytes(16).toString('base64');
    const specs = [`k1:${short}`, `${K1}:k1`, `k1:${K1.replace(/[A-Za-z]/, '#')}`, `k1:${K1},k1:${K2}`, `k1=${K1}`];
    for (const spec of specs) {
      const err = catchError(() => parseKeyring(spec));
      for (const secret of [short, K1, K2, K1.replace(/[A-Za-z]/, '#'), K1.slice(0, 12), K2.slice(0, 12)]) {
        expect(err.message).not.toContain(secret);
      }
    }
  });

  it('does not expose keys when logged or serialised', () => {
    const ring = parseKeyring(`k2:${K2},k1:${K1}`);
    for (const text of [JSON.stringify(ring), inspect(ring, { showHidden: true, depth: 10 }), String(ring)]) {
      expect(text).not.toContain(K1);
      expect(text).not.toContain(K2);
      expect(text).not.toContain(Buffer.from(K1, 'base64').toString('hex'));
    }
  });

  it('refuses a look-alike keyring object not produced by parseKeyring', () => {
    expect(() => encryptSecret({ activeKeyId: 'k1', keyIds: ['k1'] }, SECRET, AAD)).toThrow(/parseKeyring/);
  });
});

describe('encryptSecret / decryptSecret', () => {
  const ring = parseKeyring(`k1:${K1}`);

  it('round-trips, including empty and non-ASCII secrets', () => {
    for (const plaintext of [SECRET, '', 'pässwörd 🔑 秘密', 'x'.repeat(10_000)]) {
      expect(decryptSecret(ring, encryptSecret(ring, plaintext, AAD), AAD)).toBe(plaintext);
    }
  });

  it('produces v1.<keyId>.<iv>.<ciphertext>.<tag> with a 12-byte IV and 16-byte tag', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    const parts = blob.split('.');
    expect(parts).toHaveLength(5);
    expect(parts[0]).toBe('v1');
    expect(parts[1]).toBe('k1');
    expect(Buffer.from(parts[2] ?? '', 'base64url')).toHaveLength(12);
    expect(Buffer.from(parts[3] ?? '', 'base64url')).toHaveLength(Buffer.byteLength(SECRET));
    expect(Buffer.from(parts[4] ?? '', 'base64url')).toHaveLength(16);
    expect(blob).toMatch(/^[A-Za-z0-9_.-]+$/);
    expect(blob).not.toContain(SECRET);
  });

  it('uses a different IV (and so ciphertext) every time', () => {
    const blobs = Array.from({ length: 50 }, () => encryptSecret(ring, SECRET, AAD));
    expect(new Set(blobs.map((b) => b.split('.')[2])).size).toBe(50);
    expect(new Set(blobs.map((b) => b.split('.')[3])).size).toBe(50);
  });

  it('fails with CredentialDecryptError when any single character is changed', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    for (let i = 0; i < blob.length; i++) {
      for (const replacement of ['A', 'B', '.', '-']) {
        if (blob[i] === replacement) continue;
        const tampered = blob.slice(0, i) + replacement + blob.slice(i + 1);
        expectDecryptError(() => decryptSecret(ring, tampered, AAD));
      }
    }
  });

  it('rejects an edit to the unused low bits of the last tag character, which decodes to the same bytes', () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const blob = encryptSecret(ring, SECRET, AAD);
    const last = alphabet.indexOf(blob.slice(-1));
    // A 16-byte tag is 22 characters; the last one carries 2 data bits and 4 unused ones.
    const sibling = alphabet[last ^ 0b0001] ?? '';
    const tampered = blob.slice(0, -1) + sibling;
    expect(Buffer.from(tampered.split('.')[4] ?? '', 'base64url')).toEqual(Buffer.from(blob.split('.')[4] ?? '', 'base64url'));
    expectDecryptError(() => decryptSecret(ring, tampered, AAD), 'malformed');
  });

  it('detects flipped bits in the IV, ciphertext and tag as authentication failures', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    for (const index of [2, 3, 4]) {
      const parts = blob.split('.');
      const bytes = Buffer.from(parts[index] ?? '', 'base64url');
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
      parts[index] = bytes.toString('base64url');
      expectDecryptError(() => decryptSecret(ring, parts.join('.'), AAD), 'auth-failed');
    }
  });

  it('rejects truncated, extended or structurally broken blobs', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    const [v, kid, iv, ct, tag] = blob.split('.') as [string, string, string, string, string];
    const shortTag = Buffer.from(tag, 'base64url').subarray(0, 12).toString('base64url');
    const cases: Array<[string, CredentialDecryptError['reason']]> = [
      [blob.slice(0, -1), 'malformed'],
      [`${blob}A`, 'malformed'],
      [`${blob}.`, 'malformed'],
      [[v, kid, iv, ct, shortTag].join('.'), 'malformed'],
      [[v, kid, iv, ct, tag + '='].join('.'), 'malformed'],
      [[v, kid, iv, ct].join('.'), 'malformed'],
      [['v2', kid, iv, ct, tag].join('.'), 'unsupported-version'],
      ['', 'malformed'],
      [SECRET, 'malformed'],
    ];
    for (const [tampered, reason] of cases) expectDecryptError(() => decryptSecret(ring, tampered, AAD), reason);
  });

  it('fails with the wrong AAD, e.g. a ciphertext copied to another org', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    const otherOrg = 'org:00000000-0000-4000-8000-000000000000:sms:twilio';
    expectDecryptError(() => decryptSecret(ring, blob, otherOrg), 'auth-failed');
    expectDecryptError(() => decryptSecret(ring, blob, AAD.replace('twilio', 'telnyx')), 'auth-failed');
    expectDecryptError(() => decryptSecret(ring, blob, ''), 'auth-failed');
  });

  it('fails with a different key under the same id', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    expectDecryptError(() => decryptSecret(parseKeyring(`k1:${K2}`), blob, AAD), 'auth-failed');
  });

  it('binds the key id: relabelling a blob to another id holding the same key fails', () => {
    const blob = encryptSecret(ring, SECRET, AAD);
    const both = parseKeyring(`k1:${K1},k9:${K1}`);
    expectDecryptError(() => decryptSecret(both, blob.replace('v1.k1.', 'v1.k9.'), AAD), 'auth-failed');
  });
});

describe('key rotation', () => {
  it('decrypts old blobs after a new key is prepended and flags them for re-encryption', () => {
    const oldRing = parseKeyring(`k1:${K1}`);
    const oldBlob = encryptSecret(oldRing, SECRET, AAD);
    expect(needsReencrypt(oldRing, oldBlob)).toBe(false);

    const rotated = parseKeyring(`k2:${K2},k1:${K1}`);
    expect(decryptSecret(rotated, oldBlob, AAD)).toBe(SECRET);
    expect(needsReencrypt(rotated, oldBlob)).toBe(true);

    const newBlob = encryptSecret(rotated, decryptSecret(rotated, oldBlob, AAD), AAD);
    expect(newBlob.startsWith('v1.k2.')).toBe(true);
    expect(needsReencrypt(rotated, newBlob)).toBe(false);
    expect(decryptSecret(parseKeyring(`k2:${K2}`), newBlob, AAD)).toBe(SECRET);
  });

  it('fails with unknown-key once the old key is removed, naming only the key id', () => {
    const oldBlob = encryptSecret(parseKeyring(`k1:${K1}`), SECRET, AAD);
    const err = expectDecryptError(() => decryptSecret(parseKeyring(`k2:${K2}`), oldBlob, AAD), 'unknown-key');
    expect(err.keyId).toBe('k1');
    expect(err.message).toContain('"k1"');
  });

  it('needsReencrypt treats other versions as stale and rejects garbage', () => {
    const ring = parseKeyring(`k2:${K2}`);
    expect(needsReencrypt(ring, 'v0.k2.AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA')).toBe(true);
    expectDecryptError(() => needsReencrypt(ring, 'not-a-blob'), 'malformed');
  });
});

describe('generateKeySpec', () => {
  it('produces a parseable spec with a fresh 32-byte key each time', () => {
    const a = generateKeySpec();
    const b = generateKeySpec('k7');
    expect(a).toMatch(/^k1:[A-Za-z0-9+/]{43}=$/);
    expect(b.startsWith('k7:')).toBe(true);
    expect(a.slice(3)).not.toBe(b.slice(3));
    const ring = parseKeyring(`${b},${a}`);
    expect(ring.keyIds).toEqual(['k7', 'k1']);
    expect(decryptSecret(ring, encryptSecret(ring, SECRET, AAD), AAD)).toBe(SECRET);
  });

  it('rejects ids that would break the blob format', () => {
    expect(() => generateKeySpec('k.1')).toThrow(KeyringConfigError);
  });
});
