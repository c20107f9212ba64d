// strait lab echo client: drives the echo server (src/lab/echo-server.ts) from inside a
// namespace and prints one JSON summary (EchoSummary below) on stdout.
//
//   node src/lab/echo-client.ts tcp|udp|udp-connected|http --to ADDR:PORT
//        [--count N=1] [--size BYTES=16] [--timeout-ms T=2000] [--parallel P=1]
//        [--reuse] [--local ADDR] [--local-port PORT] [--interval-ms MS=0]
//        [--reconnect] [--cgroup DIR]
//
// ADDR:PORT is a.b.c.d:port or [v6]:port. Every address printed uses the same form.
// A "request" is:
//   tcp            a new connection that sends one line of BYTES bytes and waits for the reply
//                  (with --reuse: one connection, N lines in sequence)
//   udp            a new unconnected socket (new source port) that sends one datagram of BYTES
//                  bytes and waits for one reply; `from` is the reply's source (recvfrom), so a
//                  test can assert that replies come from VIP:port. ICMP errors are invisible to
//                  unconnected sockets: an unanswered request is a timeout.
//                  (with --reuse: one socket, N datagrams in sequence)
//   udp-connected  like udp, but the socket is connect()ed to --to: the kernel only delivers
//                  replies whose source is exactly --to, and an ICMP port unreachable shows as
//                  ECONNREFUSED.
//   http           GET / on a new connection (no keep-alive).
// --parallel runs up to P requests at once (ignored with --reuse). --local/--local-port bind
// the client side (a fixed --local-port with --count > 1 only makes sense with --reuse).
// --reconnect (udp-connected --reuse): behave like a DNS resolver whose socket failed — when a
// request fails with a socket error (ECONNABORTED, EDESTADDRREQ, ENOTCONN, ECONNREFUSED…; not
// a timeout), open and connect a new socket and send that request again, once; `reconnects`
// counts how often.
// --cgroup DIR moves this process into the cgroup v2 directory DIR (writes its pid to
// DIR/cgroup.procs) before it opens any socket, so cgroup socket programs attached there see
// its sockets (`ip netns exec` remounts /sys: from inside a namespace, name the directory
// through another process's root, /proc/PID/root/sys/fs/cgroup/…). An IPv4-mapped --to ([::ffff:a.b.c.d]:port) uses an IPv6 (dual-stack) socket.
// Exit code 0 whenever a summary was printed (the summary says what failed), 2 on bad usage.
//
// Run directly with type stripping: erasable TypeScript only, node: imports only.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import { pathToFileURL } from 'node:url';

export type EchoMode = 'tcp' | 'udp' | 'udp-connected' | 'http';

export interface EchoClientOptions {
  mode: EchoMode;
  host: string;
  port: number;
  count: number;
  size: number;
  timeoutMs: number;
  parallel: number;
  reuse: boolean;
  localAddress?: string;
  localPort?: number;
  intervalMs: number;
  /** udp-connected --reuse: reopen the socket after a socket error and retry the request once. */
  reconnect?: boolean;
  /** cgroup v2 directory to join before opening sockets. */
  cgroup?: string;
}

export interface EchoReply {
  /** Request number, 0-based. */
  i: number;
  /** Backend that answered (from the server's JSON). */
  pod: string;
  /** Client address:port as the backend saw it. */
  client: string;
  /** Where the reply came from as this client saw it (recvfrom for UDP, remote end for TCP/HTTP). */
  from: string;
  /** This client's own socket address for the request. */
  local: string;
  /** Bytes the server says it received (UDP: datagram length; TCP: line length). */
  bytes?: number;
  ms: number;
}

export interface EchoError {
  i: number;
  /** errno-style code: ECONNREFUSED, ETIMEDOUT (no reply within --timeout-ms), ECONNRESET, EBADREPLY… */
  code: string;
  message: string;
  ms: number;
}

export interface EchoSummary {
  mode: EchoMode;
  to: string;
  count: number;
  size: number;
  ok: number;
  failed: number;
  replies: EchoReply[];
  errors: EchoError[];
  /** Replies per pod name. */
  byPod: Record<string, number>;
  /** Error count per code. */
  byCode: Record<string, number>;
  /** Sockets reopened after a socket error (--reconnect). */
  reconnects: number;
  latencyMs: { min: number; p50: number; p99: number; max: number } | null;
  durationMs: number;
}

/** 'a.b.c.d', port → 'a.b.c.d:port'; v6 → '[v6]:port'; '::ffff:a.b.c.d' shown as a.b.c.d. */
export function hostPort(addr: string | undefined, port: number | undefined): string {
  let a = addr ?? '';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (m) a = m[1] as string;
  return net.isIPv6(a) ? `[${a}]:${port ?? 0}` : `${a}:${port ?? 0}`;
}

export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m || net.isIP(m[1] as string) === 0) throw new Error(`--to wants ADDR:PORT or [ADDR]:PORT, got ${s}`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`bad port in ${s}`);
  return { host: m[1] as string, port };
}

class RequestError extends Error {
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

function errCode(err: unknown): string {
  const e = err as { code?: unknown };
  return typeof e?.code === 'string' ? e.code : 'EUNKNOWN';
}

function payload(i: number, size: number): Buffer {
  const head = Buffer.from(`#${i} `, 'latin1');
  const buf = Buffer.alloc(Math.max(size, 0), 'x');
  head.copy(buf, 0, 0, Math.min(head.length, buf.length));
  return buf;
}

interface ServerReply {
  pod: string;
  client: string;
  clientPort: number;
  bytes?: number;
}

function parseReply(text: string): ServerReply {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new RequestError('EBADREPLY', `reply is not JSON: ${text.slice(0, 80)}`);
  }
  const r = v as Partial<ServerReply>;
  if (typeof r.pod !== 'string' || typeof r.client !== 'string') {
    throw new RequestError('EBADREPLY', `reply lacks pod/client: ${text.slice(0, 80)}`);
  }
  return { pod: r.pod, client: r.client, clientPort: Number(r.clientPort ?? 0), bytes: r.bytes };
}

type Result = Omit<EchoReply, 'i' | 'ms'>;

function withTimeout<T>(ms: number, run: (done: (err: Error | null, v?: T) => void) => () => void): Promise<T> {
  return new Promise((resolve, reject) => {
    let finished = false;
    let cleanup: () => void = () => {};
    const timer = setTimeout(() => done(new RequestError('ETIMEDOUT', `no reply within ${ms} ms`)), ms);
    function done(err: Error | null, v?: T): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      cleanup();
      if (err) reject(err);
      else resolve(v as T);
    }
    cleanup = run(done);
  });
}

// ---- TCP -------------------------------------------------------------------------------------

interface TcpConn {
  sock: net.Socket;
  nextLine(timeoutMs: number): Promise<string>;
}

function tcpConnect(o: EchoClientOptions): Promise<TcpConn> {
  return withTimeout<TcpConn>(o.timeoutMs, (done) => {
    const sock = net.connect({
      host: o.host,
      port: o.port,
      localAddress: o.localAddress,
      localPort: o.localPort,
    });
    sock.setNoDelay(true);
    sock.setEncoding('latin1');
    let buf = '';
    const lines: string[] = [];
    let waiter: ((err: Error | null, line?: string) => void) | null = null;
    let failure: Error | null = null;
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (waiter && lines.length > 0) {
        const w = waiter;
        waiter = null;
        w(null, lines.shift());
      }
    });
    const fail = (err: Error): void => {
      failure ??= err;
      if (waiter) {
        const w = waiter;
        waiter = null;
        w(failure);
      }
    };
    sock.on('error', fail);
    sock.on('end', () => fail(new RequestError('ECONNRESET', 'connection closed by peer')));
    const conn: TcpConn = {
      sock,
      nextLine: (timeoutMs) =>
        withTimeout<string>(timeoutMs, (d) => {
          if (lines.length > 0) d(null, lines.shift());
          else if (failure) d(failure);
          else waiter = d;
          return () => {
            waiter = null;
          };
        }),
    };
    let connected = false;
    const onErr = (err: Error): void => done(err);
    sock.once('error', onErr);
    sock.once('connect', () => {
      connected = true;
      done(null, conn);
    });
    return () => {
      sock.off('error', onErr);
      if (!connected) sock.destroy();
    };
  });
}

async function tcpExchange(conn: TcpConn, i: number, o: EchoClientOptions): Promise<Result> {
  const line = payload(i, o.size).toString('latin1').replace(/\n/g, 'x');
  conn.sock.write(line + '\n');
  const r = parseReply(await conn.nextLine(o.timeoutMs));
  return {
    pod: r.pod,
    client: hostPort(r.client, r.clientPort),
    from: hostPort(conn.sock.remoteAddress, conn.sock.remotePort),
    local: hostPort(conn.sock.localAddress, conn.sock.localPort),
    bytes: r.bytes,
  };
}

// ---- UDP -------------------------------------------------------------------------------------

interface UdpSock {
  sock: dgram.Socket;
  exchange(i: number): Promise<Result>;
  close(): void;
}

async function udpOpen(o: EchoClientOptions, connected: boolean): Promise<UdpSock> {
  const v6 = net.isIPv6(o.host);
  const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4' });
  let waiter: ((err: Error | null, v?: Result) => void) | null = null;
  let pendingErr: Error | null = null;
  sock.on('message', (msg, rinfo) => {
    if (!waiter) return; // late reply to a request that already timed out
    const w = waiter;
    waiter = null;
    try {
      const r = parseReply(msg.toString('latin1'));
      const a = sock.address();
      w(null, {
        pod: r.pod,
        client: hostPort(r.client, r.clientPort),
        from: hostPort(rinfo.address, rinfo.port),
        local: hostPort(a.address, a.port),
        bytes: r.bytes,
      });
    } catch (err) {
      w(err as Error);
    }
  });
  // Connected UDP sockets report ICMP errors (port unreachable → ECONNREFUSED) as 'error'.
  sock.on('error', (err) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(err);
    } else pendingErr = err;
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: o.localAddress, port: o.localPort ?? 0 }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  if (connected) {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      // Node passes a failed connect() (e.g. ECONNREFUSED from a cgroup program) to the
      // callback as its argument, although its type says it takes none.
      const done = (err?: Error): void => {
        sock.off('error', reject);
        if (err) reject(err);
        else resolve();
      };
      sock.connect(o.port, o.host, done as () => void);
    });
  }
  return {
    sock,
    close: () => {
      try {
        sock.close();
      } catch {
        /* closed */
      }
    },
    exchange: (i) =>
      withTimeout<Result>(o.timeoutMs, (done) => {
        if (pendingErr) {
          const e = pendingErr;
          pendingErr = null;
          done(e);
          return () => {};
        }
        waiter = done;
        const data = payload(i, o.size);
        const sent = (err: Error | null): void => {
          if (err) done(err);
        };
        if (connected) sock.send(data, sent);
        else sock.send(data, o.port, o.host, sent);
        return () => {
          if (waiter === done) waiter = null;
        };
      }),
  };
}

// ---- HTTP ------------------------------------------------------------------------------------

function httpGet(o: EchoClientOptions): Promise<Result> {
  return withTimeout<Result>(o.timeoutMs, (done) => {
    const req = http.request({
      host: o.host,
      port: o.port,
      path: '/',
      method: 'GET',
      agent: false,
      localAddress: o.localAddress,
      headers: { connection: 'close' },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => done(err));
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new RequestError('EHTTP', `HTTP ${res.statusCode}`);
          const r = parseReply(Buffer.concat(chunks).toString('utf8'));
          const s = res.socket;
          done(null, {
            pod: r.pod,
            client: hostPort(r.client, r.clientPort),
            from: hostPort(s?.remoteAddress ?? o.host, s?.remotePort ?? o.port),
            local: hostPort(s?.localAddress, s?.localPort),
          });
        } catch (err) {
          done(err as Error);
        }
      });
    });
    req.on('error', (err) => done(err));
    req.end();
    return () => req.destroy();
  });
}

// ---- driver ----------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Errors after which a resolver-like client (--reconnect) opens a new socket. */
const SOCKET_ERRORS = new Set(['ECONNABORTED', 'EDESTADDRREQ', 'ENOTCONN', 'ECONNREFUSED', 'EPIPE', 'ECONNRESET']);

/** Moves this process into a cgroup v2 directory (before it opens sockets). */
export function joinCgroup(dir: string): void {
  fs.writeFileSync(`${dir}/cgroup.procs`, String(process.pid));
}

export async function runEchoClient(o: EchoClientOptions): Promise<EchoSummary> {
  let reconnects = 0;
  const replies: EchoReply[] = [];
  const errors: EchoError[] = [];
  const t0 = performance.now();
  const record = async (i: number, fn: () => Promise<Result>): Promise<void> => {
    const s = performance.now();
    try {
      const r = await fn();
      replies.push({ i, ...r, ms: round(performance.now() - s) });
    } catch (err) {
      errors.push({ i, code: errCode(err), message: (err as Error).message, ms: round(performance.now() - s) });
    }
  };

  if (o.reuse && o.mode !== 'http') {
    if (o.mode === 'tcp') {
      let conn: TcpConn | null = null;
      await record(0, async () => {
        conn = await tcpConnect(o);
        return tcpExchange(conn, 0, o);
      });
      for (let i = 1; i < o.count; i++) {
        if (o.intervalMs > 0) await sleep(o.intervalMs);
        const c = conn as TcpConn | null;
        if (c === null) {
          errors.push({ i, code: 'ENOTCONN', message: 'first connection failed', ms: 0 });
          continue;
        }
        await record(i, () => tcpExchange(c, i, o));
      }
      (conn as TcpConn | null)?.sock.destroy();
    } else {
      const connected = o.mode === 'udp-connected';
      let u: UdpSock | null = null;
      try {
        u = await udpOpen(o, connected);
      } catch (err) {
        errors.push({ i: 0, code: errCode(err), message: (err as Error).message, ms: 0 });
      }
      if (u) {
        let s = u;
        for (let i = 0; i < o.count; i++) {
          if (i > 0 && o.intervalMs > 0) await sleep(o.intervalMs);
          await record(i, async () => {
            try {
              return await s.exchange(i);
            } catch (err) {
              if (!o.reconnect || !connected || !SOCKET_ERRORS.has(errCode(err))) throw err;
              s.close();
              s = await udpOpen(o, connected);
              reconnects++;
              return s.exchange(i);
            }
          });
        }
        s.close();
      }
    }
  } else {
    const one = async (i: number): Promise<Result> => {
      switch (o.mode) {
        case 'tcp': {
          const c = await tcpConnect(o);
          try {
            return await tcpExchange(c, i, o);
          } finally {
            c.sock.destroy();
          }
        }
        case 'udp':
        case 'udp-connected': {
          const u = await udpOpen(o, o.mode === 'udp-connected');
          try {
            return await u.exchange(i);
          } finally {
            u.close();
          }
        }
        case 'http':
          return httpGet(o);
      }
    };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < o.count) {
        const i = next++;
        if (i > 0 && o.intervalMs > 0) await sleep(o.intervalMs);
        await record(i, () => one(i));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.parallel, o.count)) }, worker));
  }

  replies.sort((a, b) => a.i - b.i);
  errors.sort((a, b) => a.i - b.i);
  const byPod: Record<string, number> = {};
  for (const r of replies) byPod[r.pod] = (byPod[r.pod] ?? 0) + 1;
  const byCode: Record<string, number> = {};
  for (const e of errors) byCode[e.code] = (byCode[e.code] ?? 0) + 1;
  const lat = replies.map((r) => r.ms).sort((a, b) => a - b);
  const pick = (q: number): number => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] as number;
  return {
    mode: o.mode,
    to: hostPort(o.host, o.port),
    count: o.count,
    size: o.size,
    ok: replies.length,
    failed: errors.length,
    replies,
    errors,
    byPod,
    byCode,
    reconnects,
    latencyMs: lat.length === 0 ? null : { min: lat[0] as number, p50: pick(0.5), p99: pick(0.99), max: lat[lat.length - 1] as number },
    durationMs: round(performance.now() - t0),
  };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

export function parseArgs(argv: string[]): EchoClientOptions {
  const mode = argv[0];
  if (mode !== 'tcp' && mode !== 'udp' && mode !== 'udp-connected' && mode !== 'http') {
    throw new Error(`first argument must be tcp, udp, udp-connected or http, got ${mode ?? 'nothing'}`);
  }
  let to: { host: string; port: number } | null = null;
  const o: EchoClientOptions = {
    mode,
    host: '',
    port: 0,
    count: 1,
    size: 16,
    timeoutMs: 2000,
    parallel: 1,
    reuse: false,
    intervalMs: 0,
  };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer ≥ ${min}`);
    return n;
  };
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i];
    const v = argv[i + 1];
    switch (flag) {
      case '--to':
        to = parseHostPort(v ?? '');
        i++;
        break;
      case '--count':
        o.count = int(flag, v, 1);
        i++;
        break;
      case '--size':
        o.size = int(flag, v, 0);
        i++;
        break;
      case '--timeout-ms':
        o.timeoutMs = int(flag, v, 1);
        i++;
        break;
      case '--parallel':
        o.parallel = int(flag, v, 1);
        i++;
        break;
      case '--interval-ms':
        o.intervalMs = int(flag, v, 0);
        i++;
        break;
      case '--local':
        if (v === undefined || net.isIP(v) === 0) throw new Error('--local needs an IP address');
        o.localAddress = v;
        i++;
        break;
      case '--local-port':
        o.localPort = int(flag, v, 1);
        i++;
        break;
      case '--reuse':
        o.reuse = true;
        break;
      case '--reconnect':
        o.reconnect = true;
        break;
      case '--cgroup':
        if (v === undefined || v === '') throw new Error('--cgroup needs a directory');
        o.cgroup = v;
        i++;
        break;
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!to) throw new Error('--to ADDR:PORT is required');
  o.host = to.host;
  o.port = to.port;
  return o;
}

async function main(): Promise<void> {
  let o: EchoClientOptions;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(
      `echo-client: ${(err as Error).message}\n` +
        'usage: echo-client tcp|udp|udp-connected|http --to ADDR:PORT [--count N] [--size BYTES]\n' +
        '       [--timeout-ms T] [--parallel P] [--reuse] [--local ADDR] [--local-port PORT] [--interval-ms MS]\n' +
        '       [--reconnect] [--cgroup DIR]\n',
    );
    process.exit(2);
  }
  if (o.cgroup !== undefined) joinCgroup(o.cgroup);
  const summary = await runEchoClient(o);
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(0));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
