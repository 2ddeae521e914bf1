/**
 * The fake Twilio, Telnyx, SNS and relay servers from test/fakes, in their own
 * process so that benchmarks do not charge the fakes' CPU to the engine.
 * Controlled over IPC: { type: 'fault', provider, fault }, { type: 'counts' },
 * { type: 'receipts', provider, plan, to? } (how status callbacks go),
 * { type: 'messages', provider } (to, id and acceptance time of each message)
 * and { type: 'callbacks', provider } (every callback and our server's answer).
 */
import { startFakeRelay } from '../test/fakes/fake-relay.js';
import { startFakeSns } from '../test/fakes/fake-sns.js';
import { startFakeTelnyx } from '../test/fakes/fake-telnyx.js';
import { startFakeTwilio } from '../test/fakes/fake-twilio.js';
import type { Fault } from '../test/fakes/faults.js';
import type { ReceiptPlan } from '../test/fakes/receipts.js';

type Provider = 'twilio' | 'telnyx' | 'sns' | 'relay';
type ReceiptProvider = 'twilio' | 'telnyx';
type Command =
  | { id: number; type: 'fault'; provider: Provider; fault: Fault | null }
  | { id: number; type: 'counts' }
  | { id: number; type: 'receipts'; provider: ReceiptProvider; plan: ReceiptPlan; to?: string }
  | { id: number; type: 'messages'; provider: ReceiptProvider }
  | { id: number; type: 'callbacks'; provider: ReceiptProvider };

const twilio = await startFakeTwilio();
const telnyx = await startFakeTelnyx();
const sns = await startFakeSns();
const relay = await startFakeRelay();
const fakes = { twilio, telnyx, sns, relay };
process.send!({
  type: 'ready',
  twilioUrl: twilio.url,
  telnyxUrl: telnyx.url,
  snsUrl: sns.url,
  relayUrl: relay.url,
  telnyxPublicKey: telnyx.publicKey,
});

process.on('message', async (cmd: Command) => {
  if (cmd.type === 'fault') {
    await fakes[cmd.provider].setFault(cmd.fault);
    process.send!({ id: cmd.id, ok: true });
  } else if (cmd.type === 'counts') {
    process.send!({
      id: cmd.id,
      twilio: twilio.messages.length,
      telnyx: telnyx.messages.length,
      sns: sns.messages.length,
      relay: relay.messages.length,
      twilioRequests: twilio.requests,
      telnyxRequests: telnyx.requests,
      relayRequests: relay.log.length,
    });
  } else if (cmd.type === 'receipts') {
    (cmd.provider === 'twilio' ? twilio : telnyx).setReceipts(cmd.plan, cmd.to);
    process.send!({ id: cmd.id, ok: true });
  } else if (cmd.type === 'messages') {
    const list =
      cmd.provider === 'twilio'
        ? twilio.messages.map((m) => ({ id: m.sid, to: m.to, at: m.dateCreated.getTime() }))
        : telnyx.messages.map((m) => ({ id: m.id, to: m.to, at: m.dateCreated.getTime() }));
    process.send!({ id: cmd.id, messages: list });
  } else if (cmd.type === 'callbacks') {
    process.send!({ id: cmd.id, callbacks: (cmd.provider === 'twilio' ? twilio : telnyx).callbacks });
  }
});
process.on('disconnect', async () => {
  await Promise.all([twilio.close(), telnyx.close(), sns.close(), relay.close()]);
  process.exit(0);
});
