/**
 * The fake Twilio, Telnyx, SNS and relay servers from test/fakes, in their own
 * process so that benchmarks do not charge the fakes' CPU to the engine.
 * Controlled over IPC: { type: 'fault', provider, fault } and { type: 'counts' }.
 */
import { startFakeRelay } from '../test/fakes/fake-relay.js';
import { startFakeSns } from '../test/fakes/fake-sns.js';
import { startFakeTelnyx } from '../test/fakes/fake-telnyx.js';
import { startFakeTwilio } from '../test/fakes/fake-twilio.js';
import type { Fault } from '../test/fakes/faults.js';

type Provider = 'twilio' | 'telnyx' | 'sns' | 'relay';
type Command = { id: number; type: 'fault'; provider: Provider; fault: Fault | null } | { id: number; type: 'counts' };

const twilio = await startFakeTwilio();
const telnyx = await startFakeTelnyx();
const sns = await startFakeSns();
const relay = await startFakeRelay();
const fakes = { twilio, telnyx, sns, relay };
process.send!({ type: 'ready', twilioUrl: twilio.url, telnyxUrl: telnyx.url, snsUrl: sns.url, relayUrl: relay.url });

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
  }
});
process.on('disconnect', async () => {
  await Promise.all([twilio.close(), telnyx.close(), sns.close(), relay.close()]);
  process.exit(0);
});
