/**
 * Amazon SNS adapter (SMS by phone number) over @aws-sdk/client-sns. The SDK is
 * loaded with a dynamic import when the first SNS link is built, so a server
 * with no SNS clinic never pays for it at start-up.
 *
 * SNS has no per-message delivery webhook and no lookup by message, so an SNS
 * acceptance is final for us (`receipts: 'none'`), and an ambiguous attempt
 * cannot be reconciled: it waits, like Twilio's when its lookup is down.
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { CheckIfPhoneNumberIsOptedOutCommandOutput, PublishCommandOutput, SNSClient } from '@aws-sdk/client-sns';
import { abortedBeforeSend, classifyHttp, classifyNetwork, isObject, probeHost } from '../classify.js';
import {
  ProviderSendError,
  SDK_TIMEOUT_MARGIN_MS,
  type CodeTable,
  type SendAccepted,
  type SendRequest,
  type SmsProvider,
} from '../types.js';

/**
 * SNS's error codes (the awsQuery `<Code>`, which the SDK puts in the
 * exception's `name`). `InvalidParameter` names the parameter in its message;
 * when that parameter is the phone number the recipient is at fault, which the
 * adapter records as its own key `InvalidParameter:PhoneNumber`.
 */
export const SNS_CODES: CodeTable = {
  Throttled: { errorClass: 'transient', meaning: 'publish rate for the account exceeded' },
  Throttling: { errorClass: 'transient', meaning: 'request rate exceeded (generic AWS throttle)' },
  InternalError: { errorClass: 'transient', meaning: 'SNS internal error' },
  ServiceUnavailable: { errorClass: 'transient', meaning: 'SNS unavailable' },

  AuthorizationError: { errorClass: 'provider', meaning: 'the credentials may not publish (IAM policy)' },
  InvalidClientTokenId: { errorClass: 'provider', meaning: 'unknown access key id' },
  SignatureDoesNotMatch: { errorClass: 'provider', meaning: 'wrong secret access key' },
  InvalidParameter: { errorClass: 'provider', meaning: 'a parameter other than the phone number was refused (sender id, attributes)' },
  ParameterValueInvalid: { errorClass: 'provider', meaning: 'an attribute value was refused (sender id, origination number)' },

  'InvalidParameter:PhoneNumber': { errorClass: 'recipient', meaning: 'the phone number cannot be published to' },
  // A compliance block, like Twilio's 21610: never fail over around it.
  OptedOut: { errorClass: 'recipient', optOut: true, meaning: 'recipient opted out of SMS from this account' },
};

type SnsSdk = typeof import('@aws-sdk/client-sns');
let sdk: Promise<SnsSdk> | undefined;

/** The SDK module, imported on first use only. */
export function loadSnsSdk(): Promise<SnsSdk> {
  sdk ??= import('@aws-sdk/client-sns');
  return sdk;
}

/** Whether this process has started loading the SDK (tests prove a server without SNS clinics never does). */
export function snsSdkRequested(): boolean {
  return sdk !== undefined;
}

export function classifySnsError(err: unknown): ProviderSendError {
  if (err instanceof ProviderSendError) return err;
  const meta = isObject(err) && isObject(err.$metadata) ? err.$metadata : undefined;
  if (isObject(err) && meta && typeof meta.httpStatusCode === 'number') {
    const message = typeof err.message === 'string' && err.message ? err.message : 'request failed';
    const name = typeof err.name === 'string' ? err.name : undefined;
    // Modelled exceptions are named e.g. InvalidParameterException; the wire code is kept in `Code`.
    const code = typeof err.Code === 'string' ? err.Code : name;
    const keyed = code === 'InvalidParameter' && /\bPhoneNumber\b/i.test(message) ? 'InvalidParameter:PhoneNumber' : code;
    return classifyHttp('sns', SNS_CODES, meta.httpStatusCode, keyed, message, err);
  }
  return classifyNetwork('sns', err);
}

export interface SnsProviderOptions {
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  senderId?: string | undefined;
  /** e.g. `http://127.0.0.1:PORT`; otherwise the SDK's own resolution (which honours AWS_ENDPOINT_URL_SNS). */
  endpoint?: string | undefined;
  timeoutMs: number;
  sdkTimeoutMarginMs?: number;
  /** Ask SNS whether the number opted out before publishing (cached per number). Default true. */
  checkOptOut?: boolean;
  optOutCacheMs?: number;
}

const SDK_MISSING = 'SDK_UNAVAILABLE';

export function createSnsProvider(opts: SnsProviderOptions): SmsProvider {
  const backstop = opts.timeoutMs + (opts.sdkTimeoutMarginMs ?? SDK_TIMEOUT_MARGIN_MS);
  const client: Promise<SNSClient> = loadSnsSdk().then(
    (m) =>
      new m.SNSClient({
        region: opts.region,
        credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
        // The SDK would otherwise re-POST a Publish after a throttle or 5xx; the engine owns retries.
        maxAttempts: 1,
        requestHandler: { requestTimeout: backstop, connectionTimeout: backstop, throwOnRequestTimeout: true },
        ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      }),
  );
  // Awaited by every send; a failed import is reported there, not as an unhandled rejection.
  client.catch(() => {});
  const commands = loadSnsSdk();
  commands.catch(() => {});
  // Opted-out answers change rarely and SNS blocks the send anyway; the cache only saves round trips.
  const optedOut = new LRUCache<string, boolean>({ max: 10_000, ttl: opts.optOutCacheMs ?? 10 * 60_000 });
  const fingerprint = createHash('sha256').update(opts.accessKeyId).digest('hex').slice(0, 8);

  async function ready(): Promise<{ c: SNSClient; m: SnsSdk }> {
    try {
      return { c: await client, m: await commands };
    } catch (err) {
      // Nothing was sent: another provider can take the message.
      throw new ProviderSendError({
        message: 'sns: @aws-sdk/client-sns could not be loaded',
        errorClass: 'provider',
        provider: 'sns',
        code: SDK_MISSING,
        cause: err,
      });
    }
  }

  async function isOptedOut(c: SNSClient, m: SnsSdk, phone: string, signal: AbortSignal | undefined): Promise<boolean> {
    const known = optedOut.get(phone);
    if (known !== undefined) return known;
    let out: CheckIfPhoneNumberIsOptedOutCommandOutput;
    try {
      out = await c.send(new m.CheckIfPhoneNumberIsOptedOutCommand({ phoneNumber: phone }), { abortSignal: signal });
    } catch {
      // An aborted check means the attempt's time is up: nothing was published.
      if (signal?.aborted) throw abortedBeforeSend('sns', signal);
      // The check is advisory; Publish itself still refuses an opted-out number.
      return false;
    }
    const answer = out.isOptedOut === true;
    optedOut.set(phone, answer);
    return answer;
  }

  return {
    kind: 'sns',
    accountKey: `sns:${opts.region}:${fingerprint}`,
    capabilities: { receipts: 'none', idempotentSend: false, ownSender: true },
    codes: SNS_CODES,
    classify: classifySnsError,

    async send(req: SendRequest): Promise<SendAccepted> {
      if (req.signal?.aborted) throw abortedBeforeSend('sns', req.signal);
      const { c, m } = await ready();
      if ((opts.checkOptOut ?? true) && (await isOptedOut(c, m, req.to, req.signal))) {
        throw new ProviderSendError({
          message: 'sns: the number is opted out at SNS (CheckIfPhoneNumberIsOptedOut)',
          errorClass: 'recipient',
          provider: 'sns',
          code: 'OptedOut',
          optOut: true,
        });
      }
      if (req.signal?.aborted) throw abortedBeforeSend('sns', req.signal);
      let res: PublishCommandOutput;
      try {
        res = await c.send(
          new m.PublishCommand({
            PhoneNumber: req.to,
            Message: req.body,
            MessageAttributes: {
              'AWS.SNS.SMS.SMSType': { DataType: 'String', StringValue: 'Transactional' },
              ...(opts.senderId ? { 'AWS.SNS.SMS.SenderID': { DataType: 'String', StringValue: opts.senderId } } : {}),
              ...(req.from ? { 'AWS.MM.SMS.OriginationNumber': { DataType: 'String', StringValue: req.from } } : {}),
            },
          }),
          { abortSignal: req.signal },
        );
      } catch (err) {
        throw classifySnsError(err);
      }
      if (!res.MessageId) {
        throw new ProviderSendError({
          message: 'sns: 2xx response without a MessageId',
          errorClass: 'ambiguous',
          provider: 'sns',
          code: 'NO_MESSAGE_ID',
        });
      }
      return { providerMessageId: `sns:${res.MessageId}`, status: 'accepted' };
    },

    probe: () => probeHost(opts.endpoint ?? `https://sns.${opts.region}.amazonaws.com`),
  };
}
