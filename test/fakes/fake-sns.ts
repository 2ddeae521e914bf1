/**
 * A local stand-in for Amazon SNS's SMS publishing, speaking the awsQuery
 * protocol the real @aws-sdk/client-sns uses: `POST /` with a form-encoded
 * `Action=...&Version=2010-03-31` body, XML results and error bodies, the
 * `x-amzn-RequestId` header, and a SigV4 `Authorization` header whose presence
 * and access key id are checked (the signature itself is not recomputed).
 */
import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import { FaultSwitch, sendText, startTrackedServer, type Fault } from './faults.js';

export interface SnsAccount {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface FakeSnsMessage {
  messageId: string;
  accessKeyId: string;
  to: string;
  body: string;
  /** MessageAttributes by name (AWS.SNS.SMS.SMSType, AWS.SNS.SMS.SenderID, ...). */
  attributes: Record<string, string>;
  at: Date;
}

export interface FakeSnsRequest {
  action: string;
  authorization: string | undefined;
  accessKeyId: string | undefined;
  contentType: string | undefined;
}

export interface FakeSns {
  readonly url: string;
  readonly port: number;
  readonly messages: FakeSnsMessage[];
  /** Publish requests received, including rejected and faulted ones. */
  readonly requests: number;
  readonly log: FakeSnsRequest[];
  /** Numbers CheckIfPhoneNumberIsOptedOut reports as opted out (and Publish refuses with OptedOut). */
  readonly optedOut: Set<string>;
  setFault(f: Fault | null): Promise<void>;
  addAccount(a: SnsAccount): void;
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_SNS_ACCOUNT: SnsAccount = {
  accessKeyId: 'AKIAFAKESNS0000WXYZ',
  secretAccessKey: 'fake-sns-secret-access-key-0123456789abcd',
};

const NS = 'http://sns.amazonaws.com/doc/2010-03-31/';
const E164 = /^\+[1-9]\d{6,14}$/;

type SnsError = { status: number; type: 'Sender' | 'Receiver'; code: string; message: string };

// Numbers the fake refuses, in SNS's own words.
const MAGIC_TO: Record<string, SnsError> = {
  '+15005550001': {
    status: 400,
    type: 'Sender',
    code: 'InvalidParameter',
    message: 'Invalid parameter: PhoneNumber Reason: +15005550001 is not valid to publish to',
  },
};

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function sendXml(res: http.ServerResponse, status: number, xml: string, requestId: string): void {
  if (res.destroyed || res.headersSent) return;
  res.setHeader('x-amzn-RequestId', requestId);
  sendText(res, status, xml, 'text/xml');
}

function errorXml(e: SnsError, requestId: string): string {
  return (
    `<ErrorResponse xmlns="${NS}"><Error><Type>${e.type}</Type><Code>${xmlEscape(e.code)}</Code>` +
    `<Message>${xmlEscape(e.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`
  );
}

function resultXml(action: string, inner: string, requestId: string): string {
  return (
    `<${action}Response xmlns="${NS}"><${action}Result>${inner}</${action}Result>` +
    `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`
  );
}

/** `AWS4-HMAC-SHA256 Credential=AKID/date/region/sns/aws4_request, SignedHeaders=..., Signature=...` */
function sigV4KeyId(header: string | undefined): string | undefined {
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/\d{8}\/[a-z0-9-]+\/sns\/aws4_request, ?SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{64}$/.exec(
      header ?? '',
    );
  return m?.[1];
}

function attributesOf(form: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 1; form.has(`MessageAttributes.entry.${i}.Name`); i++) {
    const name = form.get(`MessageAttributes.entry.${i}.Name`)!;
    out[name] = form.get(`MessageAttributes.entry.${i}.Value.StringValue`) ?? '';
  }
  return out;
}

export async function startFakeSns(opts: { port?: number; accounts?: SnsAccount[] } = {}): Promise<FakeSns> {
  const keys = new Map((opts.accounts ?? [DEFAULT_SNS_ACCOUNT]).map((a) => [a.accessKeyId, a]));
  const faults = new FaultSwitch();
  const messages: FakeSnsMessage[] = [];
  const log: FakeSnsRequest[] = [];
  const optedOut = new Set<string>(['+15005550004']);
  let requests = 0;

  function publish(form: URLSearchParams, keyId: string): FakeSnsMessage | SnsError {
    const to = form.get('PhoneNumber') ?? '';
    const body = form.get('Message') ?? '';
    if (!to)
      return {
        status: 400,
        type: 'Sender',
        code: 'InvalidParameter',
        message: 'Invalid parameter: PhoneNumber or TopicArn or TargetArn Reason: no value for required parameter',
      };
    if (!body)
      return { status: 400, type: 'Sender', code: 'InvalidParameter', message: 'Invalid parameter: Message Reason: Empty message' };
    const magic = MAGIC_TO[to];
    if (magic) return magic;
    if (!E164.test(to))
      return {
        status: 400,
        type: 'Sender',
        code: 'InvalidParameter',
        message: `Invalid parameter: PhoneNumber Reason: ${to} is not valid to publish to`,
      };
    if (optedOut.has(to)) return { status: 400, type: 'Sender', code: 'OptedOut', message: 'Phone number is opted out' };
    return { messageId: randomUUID(), accessKeyId: keyId, to, body, attributes: attributesOf(form), at: new Date() };
  }

  function respond(res: http.ServerResponse, form: URLSearchParams, keyId: string | undefined, requestId: string): void {
    const action = form.get('Action') ?? '';
    if (!keyId) {
      sendXml(
        res,
        403,
        errorXml(
          { status: 403, type: 'Sender', code: 'MissingAuthenticationToken', message: 'Request is missing Authentication Token' },
          requestId,
        ),
        requestId,
      );
      return;
    }
    if (!keys.has(keyId)) {
      sendXml(
        res,
        403,
        errorXml(
          { status: 403, type: 'Sender', code: 'InvalidClientTokenId', message: 'The security token included in the request is invalid.' },
          requestId,
        ),
        requestId,
      );
      return;
    }
    if (form.get('Version') !== '2010-03-31') {
      sendXml(
        res,
        400,
        errorXml({ status: 400, type: 'Sender', code: 'InvalidAction', message: 'Unknown API version' }, requestId),
        requestId,
      );
      return;
    }
    if (action === 'Publish') {
      const m = publish(form, keyId);
      if ('code' in m) {
        sendXml(res, m.status, errorXml(m, requestId), requestId);
        return;
      }
      messages.push(m);
      sendXml(res, 200, resultXml('Publish', `<MessageId>${m.messageId}</MessageId>`, requestId), requestId);
      return;
    }
    if (action === 'CheckIfPhoneNumberIsOptedOut') {
      const phone = form.get('phoneNumber') ?? '';
      sendXml(res, 200, resultXml(action, `<isOptedOut>${optedOut.has(phone)}</isOptedOut>`, requestId), requestId);
      return;
    }
    sendXml(
      res,
      400,
      errorXml(
        { status: 400, type: 'Sender', code: 'InvalidAction', message: `The action ${action} is not valid for this endpoint.` },
        requestId,
      ),
      requestId,
    );
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    const requestId = randomUUID();
    const form = new URLSearchParams(raw);
    const action = form.get('Action') ?? '';
    const keyId = sigV4KeyId(req.headers.authorization);
    log.push({ action, authorization: req.headers.authorization, accessKeyId: keyId, contentType: req.headers['content-type'] });
    const isPublish = req.method === 'POST' && action === 'Publish';
    if (isPublish) requests += 1;
    if (req.method !== 'POST' || !(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      sendXml(
        res,
        400,
        errorXml({ status: 400, type: 'Sender', code: 'InvalidAction', message: 'awsQuery requests are form-encoded POSTs' }, requestId),
        requestId,
      );
      return;
    }
    const fault = faults.take(isPublish);
    if (fault) {
      switch (fault.kind) {
        case 'hang':
          if (isPublish && keyId && keys.has(keyId) && (fault.records ?? true)) {
            const m = publish(form, keyId);
            if (!('code' in m)) messages.push(m);
          }
          return;
        case 'slow':
          server.later(fault.ms, () => respond(res, form, keyId, requestId));
          return;
        case 'status':
          sendXml(
            res,
            fault.status,
            errorXml(
              {
                status: fault.status,
                type: fault.status >= 500 ? 'Receiver' : 'Sender',
                code: String(fault.code ?? 'InvalidParameter'),
                message: fault.message ?? 'Injected error',
              },
              requestId,
            ),
            requestId,
          );
          return;
        case 'http429':
          sendXml(res, 429, errorXml({ status: 429, type: 'Sender', code: 'Throttled', message: 'Rate exceeded' }, requestId), requestId);
          return;
        case 'http5xx':
          sendXml(
            res,
            fault.status ?? 500,
            errorXml({ status: fault.status ?? 500, type: 'Receiver', code: 'InternalError', message: 'Internal failure' }, requestId),
            requestId,
          );
          return;
        case 'down':
          break;
      }
    }
    respond(res, form, keyId, requestId);
  }

  const server = await startTrackedServer(handle, opts.port);

  return {
    url: server.url,
    port: server.port,
    messages,
    log,
    optedOut,
    get requests() {
      return requests;
    },
    async setFault(f) {
      faults.set(f);
      if (f?.kind === 'down') await server.stop();
      else if (!server.listening) await server.restart();
    },
    addAccount(a) {
      keys.set(a.accessKeyId, a);
    },
    stop: () => server.stop(),
    async restart() {
      if (faults.active?.kind === 'down') faults.set(null);
      await server.restart();
    },
    close: () => server.close(),
  };
}
