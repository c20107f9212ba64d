// Structured logs: one JSON object per line by default (for log collectors),
// readable "time LEVEL message key=value" lines when the output is a terminal.
//   log.info('sync', { services: 12, backends: 40, durationMs: 3.1 });
//   log.error('manifest invalid', { file, object: 'Service default/web', field: 'metadata.name', error });
// Error values in fields are written with their name, message and own context
// fields (BpfError's op and errno, …), so every error names what it concerns.
import type { Clock } from './clock.js';

/** Log lines carry wall time (unlike systemClock, which is monotonic). */
const WALL_CLOCK: Pick<Clock, 'now'> = { now: () => Date.now() };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';
export type LogFields = Readonly<Record<string, unknown>>;

export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
const RANK: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line (e.g. { component: 'manifests' }). */
  child(fields: LogFields): Logger;
  /** Whether a line of this level would be written (skip building costly fields). */
  enabled(level: LogLevel): boolean;
}

/** Where lines go: process.stdout, a file stream, or a test's collector. */
export interface LogSink {
  write(line: string): unknown;
  readonly isTTY?: boolean;
}

export interface LoggerOptions {
  /** 'auto' (default): text when the sink is a TTY, JSON otherwise. */
  readonly format?: LogFormat | 'auto';
  /** Least level written; default 'info'. */
  readonly level?: LogLevel;
  /** Default process.stdout. */
  readonly sink?: LogSink;
  /** Colour levels in text format; default: the sink is a TTY and NO_COLOR is unset. */
  readonly color?: boolean;
  /** Default: wall time (Date.now). */
  readonly clock?: Pick<Clock, 'now'>;
  /** Fields on every line. */
  readonly fields?: LogFields;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const sink = options.sink ?? process.stdout;
  const tty = sink.isTTY === true;
  const format: LogFormat = options.format === undefined || options.format === 'auto' ? (tty ? 'text' : 'json') : options.format;
  const color = options.color ?? (tty && process.env['NO_COLOR'] === undefined);
  const config: Config = {
    sink,
    format,
    color,
    minRank: RANK[options.level ?? 'info'],
    clock: options.clock ?? WALL_CLOCK,
  };
  return new StructuredLogger(config, options.fields ?? {});
}

/** A logger that writes nothing. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
  enabled() {
    return false;
  },
};

/** Parses --log-format; an unknown value is an error value naming the choices. */
export function parseLogFormat(text: string): { ok: true; value: LogFormat | 'auto' } | { ok: false; error: string } {
  if (text === 'json' || text === 'text' || text === 'auto') return { ok: true, value: text };
  return { ok: false, error: `unknown log format ${JSON.stringify(text)}: want json, text or auto` };
}

/** Parses --log-level. */
export function parseLogLevel(text: string): { ok: true; value: LogLevel } | { ok: false; error: string } {
  const lower = text.toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(lower)) return { ok: true, value: lower as LogLevel };
  return { ok: false, error: `unknown log level ${JSON.stringify(text)}: want ${LOG_LEVELS.join(', ')}` };
}

interface Config {
  readonly sink: LogSink;
  readonly format: LogFormat;
  readonly color: boolean;
  readonly minRank: number;
  readonly clock: Pick<Clock, 'now'>;
}

const RESERVED: ReadonlySet<string> = new Set(['time', 'level', 'msg']);

class StructuredLogger implements Logger {
  readonly #config: Config;
  readonly #fields: LogFields;

  constructor(config: Config, fields: LogFields) {
    this.#config = config;
    this.#fields = fields;
  }

  debug(msg: string, fields?: LogFields): void {
    this.#log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.#log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.#log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.#log('error', msg, fields);
  }

  child(fields: LogFields): Logger {
    return new StructuredLogger(this.#config, { ...this.#fields, ...fields });
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.#config.minRank;
  }

  #log(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    if (!this.enabled(level)) return;
    const time = new Date(this.#config.clock.now()).toISOString();
    const all: Record<string, unknown> = {};
    for (const source of [this.#fields, fields ?? {}]) {
      for (const [key, value] of Object.entries(source)) {
        if (value === undefined) continue;
        all[RESERVED.has(key) ? `fields.${key}` : key] = toLoggable(value, new WeakSet());
      }
    }
    const line =
      this.#config.format === 'json'
        ? JSON.stringify({ time, level, msg, ...all })
        : textLine(time, level, msg, all, this.#config.color);
    this.#config.sink.write(line + '\n');
  }
}

const LEVEL_TEXT: Readonly<Record<LogLevel, string>> = { debug: 'DEBUG', info: 'INFO ', warn: 'WARN ', error: 'ERROR' };
const LEVEL_COLOR: Readonly<Record<LogLevel, string>> = { debug: '\x1b[2m', info: '\x1b[36m', warn: '\x1b[33m', error: '\x1b[31m' };

function textLine(time: string, level: LogLevel, msg: string, fields: Record<string, unknown>, color: boolean): string {
  const levelText = color ? `${LEVEL_COLOR[level]}${LEVEL_TEXT[level]}\x1b[0m` : LEVEL_TEXT[level];
  const parts = [time, levelText, msg];
  for (const [key, value] of Object.entries(fields)) parts.push(`${key}=${textValue(value)}`);
  return parts.join(' ');
}

/** logfmt-style: bare when unambiguous, JSON-quoted otherwise. */
function textValue(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=\\\x00-\x1f\x7f]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value);
}

/**
 * A JSON-safe copy: Errors as { name, message, ...own fields, cause }, bigint as
 * a string, Map as an object, Set as an array, Date as ISO text, cycles cut.
 */
function toLoggable(value: unknown, seen: WeakSet<object>): unknown {
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'function':
    case 'symbol':
      return undefined;
    case 'object': {
      if (value === null) return null;
      if (seen.has(value)) return '[circular]';
      seen.add(value);
      try {
        if (value instanceof Error) return errorFields(value, seen);
        if (value instanceof Date) return value.toISOString();
        if (value instanceof Map) {
          const out: Record<string, unknown> = {};
          for (const [k, v] of value) out[String(k)] = toLoggable(v, seen);
          return out;
        }
        if (value instanceof Set) return [...value].map((v) => toLoggable(v, seen));
        if (Array.isArray(value)) return value.map((v) => toLoggable(v, seen) ?? null);
        if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex');
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(value)) {
          const loggable = toLoggable(v, seen);
          if (loggable !== undefined) out[k] = loggable;
        }
        return out;
      } finally {
        seen.delete(value);
      }
    }
    default:
      return value;
  }
}

function errorFields(error: Error, seen: WeakSet<object>): Record<string, unknown> {
  const out: Record<string, unknown> = { name: error.name, message: error.message };
  for (const [k, v] of Object.entries(error)) {
    if (k === 'name' || k === 'message' || k === 'stack') continue;
    const loggable = toLoggable(v, seen);
    if (loggable !== undefined) out[k] = loggable;
  }
  if (error.cause !== undefined) out['cause'] = toLoggable(error.cause, seen);
  return out;
}
