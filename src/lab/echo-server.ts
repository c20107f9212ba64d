// strait lab echo server: a backend "pod" that names itself and the client it saw.
//
//   node src/lab/echo-server.ts --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--bind ADDR[,ADDR…]]
//   (or node dist/src/lab/echo-server.js …; the .ts file runs directly under Node ≥ 22.6 type stripping)
//
// Protocols (every reply is one JSON object; `client` is the peer address exactly as the
// server's socket saw it, IPv4-mapped IPv6 (::ffff:a.b.c.d) shown as plain a.b.c.d):
//   TCP   line protocol: for every '\n'-terminated line received on a connection reply with
//         {"pod","client","clientPort","local","localPort","bytes","echo"}\n
//         (bytes = line length without the newline, echo = the line). The server never speaks
//         first and keeps the connection open until the client closes it.
//   UDP   every datagram gets one reply datagram, sent from the same socket:
//         {"pod","client","clientPort","bytes","head"} — bytes = the received datagram's length
//         (so a fragmented 4000-byte datagram shows whether it arrived whole), head = its first
//         32 bytes as latin1 (lets a client match replies to requests).
//   HTTP  any GET → 200 application/json {"pod","client","clientPort","path"}.
//
// --bind defaults to "::" — one dual-stack socket per protocol (ipv6Only false) that also
// accepts IPv4. An IPv4 --bind address listens on IPv4 only. Port 0 picks a free port.
// Prints exactly one line "ready" on stdout once every listener is bound (the harness waits
// for it); errors go to stderr with exit code 1. SIGTERM/SIGINT close the listeners and exit 0.
//
// This file is run directly with type stripping: only erasable TypeScript syntax
// (no enums, namespaces, parameter properties), node: imports only, `import type` for types.

import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';

export interface EchoServerOptions {
  name: string;
  tcp?: number;
  udp?: number;
  http?: number;
  /** Addresses to listen on; default ['::'] (dual-stack). */
  bind?: string[];
}

export interface EchoServer {
  /** Bound ports per protocol (useful with port 0); one entry per bind address. */
  readonly ports: { tcp: number[]; udp: number[]; http: number[] };
  close(): Promise<void>;
}

export interface TcpEchoReply {
  pod: string;
  client: string;
  clientPort: number;
  local: string;
  localPort: number;
  bytes: number;
  echo: string;
}

export interface UdpEchoReply {
  pod: string;
  client: string;
  clientPort: number;
  bytes: number;
  head: string;
}

export interface HttpEchoReply {
  pod: string;
  client: string;
  clientPort: number;
  path: string;
}

/** '::ffff:198.18.0.2' → '198.18.0.2'; other addresses unchanged. */
export function plainAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? (m[1] as string) : addr;
}

function listenOpts(addr: string, port: number): net.ListenOptions {
  return net.isIPv6(addr) ? { host: addr, port, ipv6Only: false } : { host: addr, port };
}

function bindTcp(server: net.Server, addr: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenOpts(addr, port), () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function tcpServer(name: string, conns: Set<net.Socket>): net.Server {
  return net.createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    sock.setNoDelay(true);
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        const reply: TcpEchoReply = {
          pod: name,
          client: plainAddress(sock.remoteAddress),
          clientPort: sock.remotePort ?? 0,
          local: plainAddress(sock.localAddress),
          localPort: sock.localPort ?? 0,
          bytes: line.length,
          echo: line,
        };
        sock.write(JSON.stringify(reply) + '\n');
      }
    });
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
  });
}

function udpSocket(name: string, addr: string, port: number): Promise<dgram.Socket> {
  const v6 = net.isIPv6(addr);
  const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: false });
  sock.on('message', (msg, rinfo) => {
    const reply: UdpEchoReply = {
      pod: name,
      client: plainAddress(rinfo.address),
      clientPort: rinfo.port,
      bytes: msg.length,
      head: msg.subarray(0, 32).toString('latin1'),
    };
    sock.send(JSON.stringify(reply), rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: addr, port }, () => {
      sock.off('error', reject);
      sock.on('error', (err) => process.stderr.write(`echo-server: udp: ${err.message}\n`));
      resolve(sock);
    });
  });
}

function httpServer(name: string): http.Server {
  return http.createServer((req, res) => {
    const reply: HttpEchoReply = {
      pod: name,
      client: plainAddress(req.socket.remoteAddress),
      clientPort: req.socket.remotePort ?? 0,
      path: req.url ?? '/',
    };
    const body = JSON.stringify(reply);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

export async function startEchoServer(opts: EchoServerOptions): Promise<EchoServer> {
  const binds = opts.bind && opts.bind.length > 0 ? opts.bind : ['::'];
  const tcpServers: net.Server[] = [];
  const httpServers: http.Server[] = [];
  const udpSockets: dgram.Socket[] = [];
  const ports = { tcp: [] as number[], udp: [] as number[], http: [] as number[] };
  // Open TCP connections, destroyed on close so that close never waits for idle peers.
  const conns = new Set<net.Socket>();
  const close = async (): Promise<void> => {
    for (const c of conns) c.destroy();
    const closeServer = (s: net.Server): Promise<void> =>
      new Promise((resolve) => {
        if (!s.listening) return resolve();
        s.close(() => resolve());
        if ('closeAllConnections' in s) (s as http.Server).closeAllConnections();
      });
    for (const s of udpSockets) {
      try {
        s.close();
      } catch {
        /* already closed */
      }
    }
    await Promise.all([...tcpServers, ...httpServers].map(closeServer));
  };
  try {
    for (const addr of binds) {
      if (opts.tcp !== undefined) {
        const s = tcpServer(opts.name, conns);
        tcpServers.push(s);
        ports.tcp.push(await bindTcp(s, addr, opts.tcp));
      }
      if (opts.udp !== undefined) {
        const s = await udpSocket(opts.name, addr, opts.udp);
        udpSockets.push(s);
        ports.udp.push(s.address().port);
      }
      if (opts.http !== undefined) {
        const s = httpServer(opts.name);
        s.keepAliveTimeout = 1000;
        httpServers.push(s);
        ports.http.push(await bindTcp(s, addr, opts.http));
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { ports, close };
}

function parsePort(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`${flag} needs a port number, got ${v ?? 'nothing'}`);
  }
  return n;
}

export function parseArgs(argv: string[]): EchoServerOptions {
  const opts: EchoServerOptions = { name: '' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case '--name':
        if (v === undefined) throw new Error('--name needs a value');
        opts.name = v;
        i++;
        break;
      case '--tcp':
        opts.tcp = parsePort(flag, v);
        i++;
        break;
      case '--udp':
        opts.udp = parsePort(flag, v);
        i++;
        break;
      case '--http':
        opts.http = parsePort(flag, v);
        i++;
        break;
      case '--bind':
        if (v === undefined) throw new Error('--bind needs an address');
        opts.bind = [...(opts.bind ?? []), ...v.split(',').filter((a) => a !== '')];
        i++;
        break;
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  }
  if (opts.name === '') throw new Error('--name is required');
  if (opts.tcp === undefined && opts.udp === undefined && opts.http === undefined) {
    throw new Error('at least one of --tcp, --udp, --http is required');
  }
  return opts;
}

async function main(): Promise<void> {
  let opts: EchoServerOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(
      `echo-server: ${(err as Error).message}\n` +
        'usage: echo-server --name NAME [--tcp PORT] [--udp PORT] [--http PORT] [--bind ADDR[,ADDR]]\n',
    );
    process.exit(2);
  }
  let server: EchoServer;
  try {
    server = await startEchoServer(opts);
  } catch (err) {
    process.stderr.write(`echo-server: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    const hard = setTimeout(() => process.exit(0), 2000);
    hard.unref();
    server.close().then(() => process.exit(0), () => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('ready\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
