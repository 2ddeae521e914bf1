/**
 * The fake Twilio and Telnyx servers from test/fakes, in their own process so
 * that benchmarks do not charge the fakes' CPU to the engine. Controlled over
 * IPC: { type: 'fault', provider, fault } and { type: 'counts' }.
 */
import { startFakeTelnyx } from '../test/fakes/fake-telnyx.js';
import { startFakeTwilio } from '../test/fakes/fake-twilio.js';
import type { Fault } from '../test/fakes/faults.js';

type Command =
  | { id: number; type: 'fault'; provider: 'twilio' | 'telnyx'; fault: Fault | null }
  | { id: number; type: 'counts' };

const twilio = await startFakeTwilio();
const telnyx = await startFakeTelnyx();
process.send!({ type: 'ready', twilioUrl: twilio.url, telnyxUrl: telnyx.url });

process.on('message', async (cmd: Command) => {
  if (cmd.type === 'fault') {
    await (cmd.provider === 'twilio' ? twilio : telnyx).setFault(cmd.fault);
    process.send!({ id: cmd.id, ok: true });
  } else if (cmd.type === 'counts') {
    process.send!({ id: cmd.id, twilio: twilio.messages.length, telnyx: telnyx.messages.length, twilioRequests: twilio.requests, telnyxRequests: telnyx.requests });
  }
});
process.on('disconnect', async () => {
  await Promise.all([twilio.close(), telnyx.close()]);
  process.exit(0);
});
