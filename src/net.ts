import net from 'node:net';

/**
 * A TCP port that was free on 127.0.0.1 a moment ago: the OS picks one, we
 * close it and hand it out. Whoever binds it next can still lose a race, so
 * callers that bind it themselves retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
