// Opening and closing HTTP listeners, with failures as values: a port already
// in use is an outcome the caller reports, not an exception.
//
// A listener may live in another network namespace than the agent (the lab's
// agents run in the root namespace for nodes that are namespaces): the native
// shim creates and binds the socket inside that namespace and Node serves the
// fd from here — a socket keeps the namespace it was created in.
import { createServer, type RequestListener, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { constants as osConstants } from 'node:os';

/** Where to listen: host "" = every address (IPv6 and IPv4 when the host has IPv6). */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface ListenError {
  /** "127.0.0.1:10249" as asked. */
  readonly address: string;
  /** errno code: "EADDRINUSE", "EACCES", "EADDRNOTAVAIL", … */
  readonly code: string;
  readonly message: string;
}

/** A listening server and the address it got (the real port when 0 was asked). */
export interface OpenListener {
  readonly server: Server;
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/** "127.0.0.1:10249", "[::1]:0", "0.0.0.0:10256", ":10256" (every address). */
export function parseListenAddress(text: string): { ok: true; value: ListenAddress } | { ok: false; error: string } {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (m === null) return { ok: false, error: `listen address ${JSON.stringify(text)} is not host:port ([v6]:port for IPv6)` };
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (port > 65535) return { ok: false, error: `listen address ${JSON.stringify(text)}: port ${port} out of range` };
  if (host !== '' && isIP(host) === 0) return { ok: false, error: `listen address ${JSON.stringify(text)}: ${JSON.stringify(host)} is not an IP address` };
  if (m[1] !== undefined && isIP(host) !== 6) return { ok: false, error: `listen address ${JSON.stringify(text)}: brackets hold an IPv6 address` };
  return { ok: true, value: { host, port } };
}

export function formatListenAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export interface ListenOptions {
  /**
   * Listen inside this network namespace (a path such as /proc/PID/ns/net or
   * /run/netns/X, or a name under /run/netns) instead of the agent's own.
   */
  readonly netns?: string | undefined;
}

/** A netns name or path → its path (names live under /run/netns, as `ip netns`). */
export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

function errnoCode(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** A bound, listening socket inside `netns` (native shim); the fd, or the failure. */
async function listenSocketIn(netns: string, address: ListenAddress): Promise<{ ok: true; fd: number } | { ok: false; error: ListenError }> {
  const where = `${formatListenAddress(address)} in netns ${netns}`;
  let fd: number;
  try {
    const { loadNative } = await import('../bpf/native.js');
    fd = loadNative().strait_listen_tcp(netnsPath(netns), address.host, address.port, 511);
  } catch (e: unknown) {
    return { ok: false, error: { address: where, code: 'ENATIVE', message: `cannot listen in netns ${netns}: ${e instanceof Error ? e.message : String(e)}` } };
  }
  if (fd < 0) {
    const code = errnoCode(-fd);
    return { ok: false, error: { address: where, code, message: `listen ${where}: ${code}` } };
  }
  return { ok: true, fd };
}

/** Starts an HTTP server on `address`; resolves once it listens, or with the error. */
export async function listenHttp(
  address: ListenAddress,
  handler: RequestListener,
  /** Errors of the server once it listens (they are rare: accept failures). */
  onServerError: (error: unknown) => void = () => {},
  options: ListenOptions = {},
): Promise<{ ok: true; value: OpenListener } | { ok: false; error: ListenError }> {
  let fd: number | undefined;
  if (options.netns !== undefined && options.netns !== '') {
    const opened = await listenSocketIn(options.netns, address);
    if (!opened.ok) return opened;
    fd = opened.fd;
  }
  const server = createServer(handler);
  // Health checkers and scrapers keep connections open; do not let one hold a close.
  server.keepAliveTimeout = 5000;
  return new Promise((resolve) => {
    const onError = (e: unknown): void => {
      server.close();
      const code = typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' ? (e as { code: string }).code : 'UNKNOWN';
      resolve({
        ok: false,
        error: { address: formatListenAddress(address), code, message: e instanceof Error ? e.message : String(e) },
      });
    };
    server.once('error', onError);
    const where = fd !== undefined ? { fd } : { host: address.host === '' ? undefined : address.host, port: address.port };
    server.listen(where, () => {
      server.off('error', onError);
      server.on('error', onServerError);
      const bound = server.address() as AddressInfo;
      resolve({
        ok: true,
        value: { server, address: { host: address.host === '' ? '' : bound.address, port: bound.port }, close: () => closeServer(server) },
      });
    });
  });
}

/** Stops accepting and drops open connections (idle keep-alives included). */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
