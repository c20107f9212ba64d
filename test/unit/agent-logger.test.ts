// Structured logs: JSON lines for collectors, readable text on a terminal.
import { describe, expect, it } from 'vitest';
import { createLogger, parseLogFormat, parseLogLevel, type LoggerOptions } from '../../src/agent/logger.js';

const T = Date.UTC(2026, 0, 2, 3, 4, 5, 678);

function capture(options: LoggerOptions & { tty?: boolean } = {}): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const sink = { write: (l: string) => lines.push(l), isTTY: options.tty ?? false };
  return { lines, log: createLogger({ clock: { now: () => T }, sink, ...options }) };
}

class MapError extends Error {
  override readonly name = 'MapError';
  constructor(
    readonly map: string,
    readonly errno: number,
  ) {
    super(`update ${map} failed`);
  }
}

describe('JSON format', () => {
  it('writes one object per line: time, level, msg, then the fields', () => {
    const { lines, log } = capture({ format: 'json' });
    log.info('sync', { services: 12, backends: 40, durationMs: 3.25 });
    expect(lines).toEqual(['{"time":"2026-01-02T03:04:05.678Z","level":"info","msg":"sync","services":12,"backends":40,"durationMs":3.25}\n']);
  });

  it('writes errors with their name, message and context, and the object they concern', () => {
    const { lines, log } = capture({ format: 'json' });
    log.error('apply failed', { object: 'Service shop/web', error: new MapError('services4', 7) });
    expect(JSON.parse(lines[0] ?? '')).toEqual({
      time: '2026-01-02T03:04:05.678Z',
      level: 'error',
      msg: 'apply failed',
      object: 'Service shop/web',
      error: { name: 'MapError', message: 'update services4 failed', map: 'services4', errno: 7 },
    });
  });

  it.each([
    ['a bigint', 1n << 70n, '1180591620717411303424'],
    ['a Map', new Map([['a', 1]]), { a: 1 }],
    ['a Set', new Set(['x']), ['x']],
    ['a Date', new Date(T), '2026-01-02T03:04:05.678Z'],
    ['bytes', new Uint8Array([1, 255]), '01ff'],
    ['Infinity', Infinity, 'Infinity'],
    ['an error cause', new Error('outer', { cause: new Error('inner') }), { name: 'Error', message: 'outer', cause: { name: 'Error', message: 'inner' } }],
  ])('makes %s JSON-safe', (_name, value, want) => {
    const { lines, log } = capture({ format: 'json' });
    log.info('x', { value });
    expect((JSON.parse(lines[0] ?? '') as Record<string, unknown>)['value']).toEqual(want);
  });

  it('cuts cycles and drops undefined fields', () => {
    const { lines, log } = capture({ format: 'json' });
    const a: Record<string, unknown> = { n: 1 };
    a['self'] = a;
    log.info('x', { a, gone: undefined });
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ a: { n: 1, self: '[circular]' } });
    expect(lines[0]).not.toContain('gone');
  });

  it('keeps a field named like a reserved key apart', () => {
    const { lines, log } = capture({ format: 'json' });
    log.info('real', { msg: 'field', level: 'x' });
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ msg: 'real', level: 'info', 'fields.msg': 'field', 'fields.level': 'x' });
  });
});

describe('text format', () => {
  it('writes time, level, message and key=value pairs, quoting where needed', () => {
    const { lines, log } = capture({ format: 'text', color: false });
    log.warn('manifest invalid', { file: '/etc/strait/a b.yaml', field: 'spec.ports', line: 8, ok: false, ref: { kind: 'Service' } });
    expect(lines).toEqual(['2026-01-02T03:04:05.678Z WARN  manifest invalid file="/etc/strait/a b.yaml" field=spec.ports line=8 ok=false ref={"kind":"Service"}\n']);
  });

  it('colours the level when asked', () => {
    const { lines, log } = capture({ format: 'text', color: true });
    log.error('boom');
    expect(lines[0]).toContain('\x1b[31mERROR\x1b[0m');
  });
});

describe('format choice', () => {
  it.each([
    { tty: true, format: undefined, want: 'text' },
    { tty: false, format: undefined, want: 'json' },
    { tty: true, format: 'json' as const, want: 'json' },
    { tty: false, format: 'text' as const, want: 'text' },
    { tty: true, format: 'auto' as const, want: 'text' },
  ])('tty $tty, --log-format $format → $want', ({ tty, format, want }) => {
    const { lines, log } = capture({ tty, color: false, ...(format ? { format } : {}) });
    log.info('hello');
    expect(lines[0]?.startsWith('{') ? 'json' : 'text').toBe(want);
  });
});

describe('levels and children', () => {
  it('drops lines below the level', () => {
    const { lines, log } = capture({ format: 'json', level: 'warn' });
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['c', 'd']);
    expect(log.enabled('info')).toBe(false);
    expect(log.enabled('error')).toBe(true);
  });

  it('adds a child\'s fields to every line, the line\'s own fields winning', () => {
    const { lines, log } = capture({ format: 'json', fields: { node: 'node-a' } });
    const child = log.child({ component: 'manifests', dir: '/x' });
    child.info('loaded', { dir: '/y' });
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ node: 'node-a', component: 'manifests', dir: '/y' });
  });
});

describe('flag parsing', () => {
  it.each([
    ['json', true],
    ['text', true],
    ['auto', true],
    ['yaml', false],
  ])('--log-format %s', (text, ok) => {
    expect(parseLogFormat(text).ok).toBe(ok);
  });

  it.each([
    ['debug', true],
    ['INFO', true],
    ['trace', false],
  ])('--log-level %s', (text, ok) => {
    expect(parseLogLevel(text).ok).toBe(ok);
  });
});
