// Output for the CLI: aligned tables for people, JSON for scripts (-o json).

export type OutputFormat = 'table' | 'json';

export function parseOutputFormat(value: string | undefined): OutputFormat {
  if (value === undefined || value === 'table' || value === 'wide') return 'table';
  if (value === 'json') return 'json';
  throw new Error(`-o: unknown output format ${JSON.stringify(value)} (want table or json)`);
}

/** JSON with bigints as numbers when safe, strings otherwise. */
export function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) => (typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v),
    2,
  );
}

/** Left-aligned columns separated by two spaces, a header row in capitals. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n');
}

/** 'a.b.c.d', port → 'a.b.c.d:port'; IPv6 in brackets. */
export function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

export function protoName(proto: number): string {
  switch (proto) {
    case 6:
      return 'TCP';
    case 17:
      return 'UDP';
    case 132:
      return 'SCTP';
    case 1:
      return 'ICMP';
    case 58:
      return 'ICMPv6';
    default:
      return String(proto);
  }
}

/** Names of the bits set in `value`, from a table of {name: bit}. */
export function flagNames(value: number, names: Readonly<Record<string, number>>): string[] {
  return Object.entries(names)
    .filter(([, bit]) => (value & bit) !== 0)
    .map(([name]) => name);
}
