/**
 * Encryption at rest for per-clinic credentials (SMS providers, Vapi HMAC keys, and
 * any other secret a clinic gives us): AES-256-GCM.
 *
 * Keys come from one setting, e.g. CREDENTIALS_KEY="k2:<base64>,k1:<base64>":
 * the first entry encrypts, every entry decrypts. Rotation is therefore: prepend
 * a new key, deploy, re-encrypt rows for which `needsReencrypt` is true, then
 * drop the old key.
 *
 * Blob format: v1.<keyId>.<iv>.<ciphertext>.<tag>, base64url without padding.
 * The caller's AAD (e.g. "org:<uuid>:sms:twilio") and the blob header are both
 * authenticated, so a ciphertext copied to another org or relabelled with a
 * different key id fails to decrypt.
 *
 * No error produced here contains key material, plaintext or raw blob content.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';

const VERSION = 'v1';
const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
// Key ids appear inside the dot-separated blob and the AAD, so they must not
// contain '.' or '|'.
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const BASE64_KEY = /^[A-Za-z0-9+/_-]+={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
const BARE_KEY_ID = 'k0';

/**
 * Parsed keyring. Deliberately holds no key material itself (keys live in a
 * module-private WeakMap), so logging or serialising it cannot leak them.
 */
export interface Keyring {
  readonly activeKeyId: string;
  readonly keyIds: readonly string[];
}

const keyStore = new WeakMap<Keyring, ReadonlyMap<string, KeyObject>>();

export class KeyringConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyringConfigError';
  }
}

export type CredentialDecryptReason = 'malformed' | 'unsupported-version' | 'unknown-key' | 'auth-failed';

export class CredentialDecryptError extends Error {
  readonly reason: CredentialDecryptReason;
  /** Only set when the blob named a syntactically valid key id. */
  readonly keyId: string | undefined;

  constructor(reason: CredentialDecryptReason, message: string, keyId?: string) {
    super(message);
    this.name = 'CredentialDecryptError';
    this.reason = reason;
    this.keyId = keyId;
  }
}

/**
 * Parses `id:base64key[,id:base64key...]` (first entry active) or a single bare
 * base64 key, which gets the id "k0".
 */
export function parseKeyring(spec: string): Keyring {
  if (typeof spec !== 'string') throw new KeyringConfigError('credentials key spec must be a string');
  let text = spec.trim();
  // Some env-file loaders keep surrounding quotes verbatim.
  const quoted = /^(["'])(.*)\1$/s.exec(text);
  if (quoted) text = (quoted[2] ?? '').trim();
  if (text === '') throw new KeyringConfigError('credentials key spec is empty');

  const entries = text.split(',').map((entry) => entry.trim());
  const keys = new Map<string, KeyObject>();
  entries.forEach((entry, index) => {
    const where = `credentials key entry ${index + 1}`;
    if (entry === '') throw new KeyringConfigError(`${where} is empty`);
    const colon = entry.indexOf(':');
    let id: string;
    let encoded: string;
    if (colon === -1) {
      if (entries.length !== 1) throw new KeyringConfigError(`${where} must look like <id>:<base64 key>`);
      id = BARE_KEY_ID;
      encoded = entry;
    } else {
      id = entry.slice(0, colon).trim();
      encoded = entry.slice(colon + 1).trim();
      // An invalid id is never echoed: a mangled entry may have key text there.
      if (!KEY_ID.test(id)) {
        throw new KeyringConfigError(`${where} has an invalid key id (use 1-32 of A-Z a-z 0-9 _ -)`);
      }
    }
    const label = `${where} (id "${id}")`;
    if (!BASE64_KEY.test(encoded)) throw new KeyringConfigError(`${label}: key is not valid base64`);
    const raw = Buffer.from(encoded, 'base64');
    if (raw.length !== KEY_BYTES) {
      raw.fill(0);
      throw new KeyringConfigError(`${label}: key must decode to ${KEY_BYTES} bytes, got ${raw.length}`);
    }
    if (keys.has(id)) throw new KeyringConfigError(`${label}: duplicate key id`);
    keys.set(id, createSecretKey(raw));
    raw.fill(0);
  });

  const keyIds = Object.freeze([...keys.keys()]);
  const activeKeyId = keyIds[0];
  if (activeKeyId === undefined) throw new KeyringConfigError('credentials key spec is empty');
  const keyring: Keyring = Object.freeze({ activeKeyId, keyIds });
  keyStore.set(keyring, keys);
  return keyring;
}

function keysOf(keyring: Keyring): ReadonlyMap<string, KeyObject> {
  const keys = keyStore.get(keyring);
  if (!keys) throw new TypeError('keyring must come from parseKeyring()');
  return keys;
}

function headerAad(keyId: string, aad: string): Buffer {
  return Buffer.from(`${VERSION}|${keyId}|${aad}`, 'utf8');
}

/** Encrypts under the active key with a fresh random IV. */
export function encryptSecret(keyring: Keyring, plaintext: string, aad: string): string {
  const key = keysOf(keyring).get(keyring.activeKeyId);
  if (!key) throw new TypeError('keyring has no active key');
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(headerAad(keyring.activeKeyId, aad));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return [VERSION, keyring.activeKeyId, b64url(iv), b64url(ciphertext), b64url(tag)].join('.');
}

/** Decrypts a blob from `encryptSecret`; any failure is a CredentialDecryptError. */
export function decryptSecret(keyring: Keyring, blob: string, aad: string): string {
  const keys = keysOf(keyring);
  const parsed = parseBlob(blob);
  const key = keys.get(parsed.keyId);
  if (!key) {
    throw new CredentialDecryptError(
      'unknown-key',
      `credential was encrypted with key "${parsed.keyId}", which is not in the configured keyring`,
      parsed.keyId,
    );
  }
  try {
    // authTagLength pins the tag at 16 bytes; otherwise GCM would also accept a
    // truncated tag, which is far easier to forge.
    const decipher = createDecipheriv(ALGORITHM, key, parsed.iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(headerAad(parsed.keyId, aad));
    decipher.setAuthTag(parsed.tag);
    return Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]).toString('utf8');
  } catch {
    throw new CredentialDecryptError(
      'auth-failed',
      'credential failed authentication: wrong key, wrong context (AAD) or tampered data',
      parsed.keyId,
    );
  }
}

/**
 * True when the blob is not under the active key (or is an older format). Only
 * the header is inspected; authenticity is checked by `decryptSecret`.
 */
export function needsReencrypt(keyring: Keyring, blob: string): boolean {
  keysOf(keyring);
  try {
    return parseBlob(blob).keyId !== keyring.activeKeyId;
  } catch (err) {
    if (err instanceof CredentialDecryptError && err.reason === 'unsupported-version') return true;
    throw err;
  }
}

/** A fresh keyring entry for CREDENTIALS_KEY, e.g. "k1:<44 base64 chars>". */
export function generateKeySpec(keyId = 'k1'): string {
  if (!KEY_ID.test(keyId)) throw new KeyringConfigError('invalid key id (use 1-32 of A-Z a-z 0-9 _ -)');
  return `${keyId}:${randomBytes(KEY_BYTES).toString('base64')}`;
}

interface ParsedBlob {
  keyId: string;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

function parseBlob(blob: string): ParsedBlob {
  if (typeof blob !== 'string') throw malformed();
  const parts = blob.split('.');
  if (parts.length !== 5) throw malformed();
  const [version, keyId, ivText, ciphertextText, tagText] = parts as [string, string, string, string, string];
  if (version !== VERSION) {
    throw new CredentialDecryptError('unsupported-version', 'credential blob has an unsupported format version');
  }
  if (!KEY_ID.test(keyId)) throw malformed();
  const iv = fromB64url(ivText);
  const ciphertext = fromB64url(ciphertextText);
  const tag = fromB64url(tagText);
  if (!iv || iv.length !== IV_BYTES || !ciphertext || !tag || tag.length !== TAG_BYTES) throw malformed();
  return { keyId, iv, ciphertext, tag };
}

function malformed(): CredentialDecryptError {
  return new CredentialDecryptError('malformed', 'credential blob is malformed');
}

function b64url(bytes: Buffer): string {
  return bytes.toString('base64url');
}

/**
 * Strict decoding: Node ignores stray characters and the unused low bits of the
 * last character, so two different strings could decode to the same bytes.
 * Requiring the canonical encoding makes every edit to the blob detectable.
 */
function fromB64url(text: string): Buffer | null {
  if (!BASE64URL.test(text)) return null;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : null;
}
