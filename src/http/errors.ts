import type { ErrorRequestHandler } from 'express';
import { AppError } from '../errors.js';

interface BodyParserError extends Error {
  type?: string;
  status?: number;
}

/**
 * Last stop for every error. Body-parser failures become clear 4xx answers;
 * anything unexpected is logged with the request id and answered with a generic
 * 500 that leaks nothing.
 */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  if (res.headersSent) return;
  if (err instanceof AppError) {
    res.set(err.headers).status(err.status).json({ error: err.code, message: err.message });
    return;
  }
  const bp = err as BodyParserError;
  switch (bp.type) {
    case 'entity.parse.failed':
      res.status(400).json({ error: 'invalid_json', message: 'The request body is not valid JSON.' });
      return;
    case 'entity.too.large':
      res.status(413).json({ error: 'body_too_large', message: 'The request body is too large.' });
      return;
    case 'encoding.unsupported':
    case 'charset.unsupported':
      res.status(415).json({ error: 'unsupported_encoding', message: 'Unsupported content encoding or charset.' });
      return;
    case 'request.aborted':
      return;
    default:
      break;
  }
  if (typeof bp.status === 'number' && bp.status >= 400 && bp.status < 500) {
    res.status(bp.status).json({ error: 'bad_request', message: 'The request could not be read.' });
    return;
  }
  req.log?.error({ err }, 'unhandled error');
  res.status(500).json({ error: 'internal_error', message: 'Something went wrong on our side.' });
};
