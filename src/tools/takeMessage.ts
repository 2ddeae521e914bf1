import { z } from 'zod';
import { withTenant } from '../db/pool.js';
import { addInboxMessage } from '../inbox/inbox.js';
import { optionalText, orgArg, parseArgs, patientPhoneOf, requiredText } from './args.js';
import type { Tool, ToolContext } from './types.js';

const schema = z.object({
  ...orgArg,
  patientName: requiredText(200),
  patientPhone: optionalText(40),
  message: requiredText(1000),
});

const NAMES = {
  patientName: "the caller's name",
  patientPhone: 'a phone number to call back',
  message: 'the message',
};

/**
 * Leaves a message for the front desk (when nobody can take the call), in the
 * clinic's inbox beside SMS replies. A platform retry of the same invocation
 * stores nothing new: the invocation id is the inbox row's dedupe key.
 */
export const takeMessage: Tool<typeof schema> = {
  name: 'takeMessage',
  schema,
  async run(ctx: ToolContext, raw) {
    const args = parseArgs(schema, raw, NAMES);
    const { org, call } = ctx;
    const phone = patientPhoneOf(ctx, args.patientPhone, "What's the best number for the front desk to call you back on?");
    const id = await withTenant(ctx.sql, ctx.tenant, (tx) =>
      addInboxMessage(tx, {
        orgId: org.id,
        channel: 'voice',
        kind: 'voice_message',
        body: args.message,
        fromPhone: phone,
        patientName: args.patientName,
        callId: call.callId,
        provider: call.invocationId ? call.platform : null,
        providerMessageId: call.invocationId ?? null,
      }),
    );
    ctx.log.info({ inboxMessageId: id, replayed: id === null }, 'message taken');
    return {
      success: true,
      alreadyTaken: id === null,
      message: `I've passed your message to the front desk. They'll call you back at the number ending in ${phone.slice(-4)}.`,
    };
  },
};
