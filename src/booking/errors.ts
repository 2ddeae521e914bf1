/**
 * A tool-level failure the voice agent can say out loud. `code` is for logs and
 * for agents that branch on it; `message` is one short sentence for the caller.
 */
export class ToolError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ToolError';
  }
}
