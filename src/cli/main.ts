#!/usr/bin/env node
// strait — the command line: the node agent and the read-only views of the
// pinned maps (which work with the agent stopped).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DEFAULT_BPF_ROOT, Dataplane } from '../bpf/dataplane.js';
import { DEFAULT_STATE_DIR, readStatusFile, statusFilePath } from '../agent/status-file.js';
import { parseOutputFormat, table, toJson, type OutputFormat } from './format.js';
import { backendsList, ctList, lbList, statusView, type PinnedMaps } from './inspect.js';

const USAGE = `strait — an eBPF Service dataplane that replaces kube-proxy

Usage:
  strait agent [flags]        run the node agent (strait agent --help)
  strait lb list [flags]      Services: frontends, backends, states, flags, skipped Services
  strait ct list [flags]      connection-tracking entries
  strait backends [flags]     backends and the Services that use them
  strait status [flags]       maps, attachments, datapath counters, last sync
  strait lab up|down|status|demo   the local lab: real control plane, namespace nodes (strait lab --help)

Read flags (lb list, ct list, backends, status):
  --bpf-root DIR     pinned maps to read (default ${DEFAULT_BPF_ROOT})
  --state-dir DIR    where the agent writes its status file (default ${DEFAULT_STATE_DIR})
  -o, --output FMT   table (default) or json
  ct list only:  --family 4|6, --all (include expired entries)
`;

const READ_OPTIONS = {
  'bpf-root': { type: 'string', default: DEFAULT_BPF_ROOT },
  'state-dir': { type: 'string', default: DEFAULT_STATE_DIR },
  output: { type: 'string', short: 'o' },
  family: { type: 'string' },
  all: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} satisfies ParseArgsConfig['options'];

interface ReadFlags {
  bpfRoot: string;
  stateDir: string;
  output: OutputFormat;
  family: 4 | 6 | undefined;
  all: boolean;
  help: boolean;
}

function readFlags(args: string[]): ReadFlags {
  const { values } = parseArgs({ args, options: READ_OPTIONS, strict: true, allowPositionals: false });
  const family = values.family === undefined ? undefined : Number(values.family);
  if (family !== undefined && family !== 4 && family !== 6) throw new Error(`--family: want 4 or 6, got ${values.family}`);
  return {
    bpfRoot: values['bpf-root'],
    stateDir: values['state-dir'],
    output: parseOutputFormat(values.output),
    family,
    all: values.all,
    help: values.help,
  };
}

function withMaps<T>(bpfRoot: string, fn: (maps: PinnedMaps) => T): T {
  const maps = Dataplane.openPinned(bpfRoot);
  try {
    return fn(maps);
  } finally {
    for (const m of Object.values(maps)) m?.close();
  }
}

function print(format: OutputFormat, data: unknown, render: () => string): void {
  process.stdout.write(`${format === 'json' ? toJson(data) : render()}\n`);
}

function cmdLbList(f: ReadFlags): void {
  const status = readStatusFile(statusFilePath(f.bpfRoot, f.stateDir));
  const view = withMaps(f.bpfRoot, (maps) => lbList(maps, status));
  print(f.output, view, () => {
    const rows = view.frontends.map((fe) => [
      fe.service ?? `id ${fe.serviceId}`,
      fe.frontend,
      fe.kind + (fe.scope === 'internal' ? ' (internal)' : ''),
      fe.flags.join(',') || '-',
      fe.remoteWhy !== null ? `${fe.remote}: ${fe.remoteWhy}` : fe.remote,
      fe.noEndpoints !== null
        ? `none (${fe.noEndpoints})`
        : fe.backends.map((b) => `${b.address.includes(':') ? `[${b.address}]` : b.address}:${b.port}${b.state === 'active' ? '' : ` (${b.state})`}`).join(', '),
    ]);
    const out = [table(['service', 'frontend', 'kind', 'flags', 'remote', 'backends'], rows)];
    if (view.skipped.length > 0) {
      out.push('', 'Skipped Services:', table(['service', 'reason', 'why'], view.skipped.map((s) => [s.service, s.reason, s.message])));
    }
    if (view.errors.length > 0) {
      out.push('', 'Errors:', table(['object', 'field', 'error'], view.errors.map((e) => [e.object, e.field, e.message])));
    }
    return out.join('\n');
  });
}

function cmdCtList(f: ReadFlags): void {
  const rows = withMaps(f.bpfRoot, (maps) => ctList(maps, { ...(f.family ? { family: f.family } : {}), includeExpired: f.all }));
  print(f.output, rows, () =>
    table(
      ['proto', 'source', 'destination', 'dir', 'backend', 'flags', 'expires'],
      rows.map((c) => [c.protocol, c.source, c.destination, c.direction, String(c.backendId), c.flags.join(',') || '-', `${c.expiresInSeconds}s`]),
    ),
  );
}

function cmdBackends(f: ReadFlags): void {
  const rows = withMaps(f.bpfRoot, (maps) => backendsList(maps));
  print(f.output, rows, () =>
    table(
      ['id', 'backend', 'proto', 'state', 'local', 'services'],
      rows.map((b) => [String(b.id), b.family === 6 ? `[${b.address}]:${b.port}` : `${b.address}:${b.port}`, b.protocol, b.state, b.local ? 'yes' : 'no', b.serviceIds.join(',') || '-']),
    ),
  );
}

function cmdStatus(f: ReadFlags): void {
  const agent = readStatusFile(statusFilePath(f.bpfRoot, f.stateDir));
  const view = withMaps(f.bpfRoot, (maps) => statusView(f.bpfRoot, maps, agent));
  print(f.output, view, () => {
    const out = [`bpf root: ${view.bpfRoot}${view.pinned ? '' : ' (nothing pinned)'}`];
    if (view.agent) {
      out.push(
        `agent: pid ${view.agent.pid}, node ${view.agent.nodeName}, source ${view.agent.source}, last sync ${view.agent.lastSync ?? 'never'}` +
          (view.agent.lastSyncDurationMs !== null ? ` (${view.agent.lastSyncDurationMs.toFixed(1)} ms)` : '') +
          (view.agent.lastError ? `, last error: ${view.agent.lastError}` : ''),
      );
    } else out.push('agent: no status file (never ran on this root, or another --state-dir)');
    out.push('', 'Attachments:', view.attachments.length > 0 ? view.attachments.map((a) => `  ${a}`).join('\n') : '  none');
    out.push('', table(['map', 'entries', 'max'], view.maps.map((m) => [m.name, String(m.entries), String(m.maxEntries)])));
    if (view.metrics.length > 0) {
      out.push('', table(['counter', 'dir', 'packets', 'bytes'], view.metrics.map((m) => [m.reason, m.dir, String(m.packets), String(m.bytes)])));
    }
    return out.join('\n');
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  const read = (args: string[], run: (f: ReadFlags) => void): number => {
    const f = readFlags(args);
    if (f.help) process.stdout.write(USAGE);
    else run(f);
    return 0;
  };
  switch (cmd) {
    case 'agent': {
      const { runAgentCommand } = await import('../agent/command.js');
      return runAgentCommand(argv.slice(1));
    }
    case 'lab': {
      const { runLabCommand } = await import('../lab/command.js');
      return runLabCommand(argv.slice(1));
    }
    case 'lb':
      if (sub !== 'list') throw new Error(`unknown command: strait lb ${sub ?? ''} (did you mean strait lb list?)`);
      return read(rest, cmdLbList);
    case 'ct':
      if (sub !== 'list') throw new Error(`unknown command: strait ct ${sub ?? ''} (did you mean strait ct list?)`);
      return read(rest, cmdCtList);
    case 'backends':
      return read(argv.slice(1), cmdBackends);
    case 'status':
      return read(argv.slice(1), cmdStatus);
    default:
      throw new Error(`unknown command: ${cmd} (strait --help lists them)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`strait: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
