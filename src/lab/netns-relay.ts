// strait lab netns relay: byte-for-byte TCP forwarding between loopback listeners of two network
// namespaces, over Unix sockets (which live in the filesystem, not in a network namespace).
//
//   node src/lab/netns-relay.ts --forward LISTEN=TARGET [--forward LISTEN=TARGET …]
//   LISTEN, TARGET:  unix:/abs/path  or  tcp:127.A.B.C:PORT  (loopback only)
//
// The lab's kube-proxy twin nodes use a pair of them: kube-proxy runs inside a node's namespace,
// which has no route out of the lab, while kube-apiserver listens on the root namespace's
// loopback. One relay in the root namespace listens on a Unix socket and dials the apiserver; one
// inside the node's namespace listens on that namespace's 127.0.0.1:<apiserver port> and dials
// the Unix socket (and, the other way round, exposes kube-proxy's loopback metrics on a Unix
// socket). No address, route or link is added anywhere, and TCP is refused outside 127.0.0.0/8:
// the relay can only join two loopbacks.
//
// Prints "ready" once every listener is bound; SIGTERM/SIGINT close them (removing the socket
// files) and exit 0. Type-stripping friendly (node: imports only), like echo-server.ts.
import * as net from 'node:net';
import { rmSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';

export type RelayEndpoint = { readonly unix: string } | { readonly host: string; readonly port: number };

export interface Forward {
  readonly listen: RelayEndpoint;
  readonly target: RelayEndpoint;
}

/** Parses `unix:/path` or `tcp:127.x.y.z:PORT`; throws on anything else (other addresses included). */
export function parseEndpoint(s: string): RelayEndpoint {
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    if (!isAbsolute(path)) throw new Error(`${s}: a Unix socket path must be absolute`);
    if (Buffer.byteLength(path) > 107) throw new Error(`${s}: a Unix socket path has at most 107 bytes`);
    return { unix: path };
  }
  const m = /^tcp:(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(s);
  if (m) {
    const host = m[1] as string;
    const port = Number(m[2]);
    if (net.isIPv4(host) && host.startsWith('127.') && port >= 1 && port <= 65535) return { host, port };
  }
  throw new Error(`${s}: want unix:/abs/path or tcp:127.A.B.C:PORT (loopback only)`);
}

export function parseForward(s: string): Forward {
  const i = s.indexOf('=');
  if (i < 0) throw new Error(`--forward ${s}: want LISTEN=TARGET`);
  return { listen: parseEndpoint(s.slice(0, i)), target: parseEndpoint(s.slice(i + 1)) };
}

function describe(e: RelayEndpoint): string {
  return 'unix' in e ? `unix:${e.unix}` : `tcp:${e.host}:${e.port}`;
}

function dial(e: RelayEndpoint): net.Socket {
  return 'unix' in e ? net.connect({ path: e.unix, allowHalfOpen: true }) : net.connect({ port: e.port, host: e.host, allowHalfOpen: true });
}

/** Starts every forward; resolves with a close function once all listen. */
export async function startRelay(forwards: readonly Forward[]): Promise<() => Promise<void>> {
  const servers: net.Server[] = [];
  for (const f of forwards) {
    // Half-open on both sides: a peer's FIN is passed on (pipe ends the other socket) while the
    // answer still flows back; each socket closes once both of its directions are done.
    const server = net.createServer({ allowHalfOpen: true }, (client) => {
      const upstream = dial(f.target);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    if ('unix' in f.listen) rmSync(f.listen.unix, { force: true }); // a socket file a killed relay left
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`listen ${describe(f.listen)}: ${e.message}`)));
      if ('unix' in f.listen) server.listen(f.listen.unix, resolve);
      else server.listen(f.listen.port, f.listen.host, resolve);
    });
    servers.push(server);
  }
  return async () => {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    for (const f of forwards) if ('unix' in f.listen) rmSync(f.listen.unix, { force: true });
  };
}

async function main(argv: string[]): Promise<void> {
  const forwards: Forward[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--forward' && argv[i + 1] !== undefined) forwards.push(parseForward(argv[++i] as string));
    else throw new Error(`unknown argument ${argv[i]} (usage: netns-relay --forward LISTEN=TARGET …)`);
  }
  if (forwards.length === 0) throw new Error('usage: netns-relay --forward LISTEN=TARGET …');
  const close = await startRelay(forwards);
  const stop = (): void => {
    void close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('ready\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`netns-relay: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
