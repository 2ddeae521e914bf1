/**
 * A start-up failure we expected and can name (port taken, data directory held
 * by another instance, ...): reported as one line on stderr, without a stack.
 */
export class StartupError extends Error {
  override name = 'StartupError';
}
