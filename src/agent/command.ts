// `strait agent`: flags → AgentConfig → run until SIGTERM/SIGINT. Stopping
// leaves the maps pinned and the programs attached: the next agent adopts them
// and established connections never notice.
import { parseArgs } from 'node:util';
import { DEFAULT_BPF_ROOT } from '../bpf/dataplane.js';
import { findCgroup2Root } from '../bpf/socket-lb.js';
import { Agent, type AgentConfig } from './agent.js';
import { DEVICE_RESCAN_MS } from './devices.js';
import { DEFAULT_HEALTHZ_ADDR, DEFAULT_METRICS_ADDR } from './http.js';
import { createLogger, parseLogFormat, parseLogLevel } from './logger.js';
import { DEFAULT_NODEPORT_RANGE, DEFAULT_SNAT_PORT_RANGE, parsePortRange, rangesOverlap } from './node-config.js';
import { DEFAULT_STATE_DIR } from './status-file.js';

export const AGENT_USAGE = `strait agent — the node agent: Services and EndpointSlices into the BPF maps

Usage: strait agent [flags]

Source (one of):
  --kubeconfig PATH          watch the API server named there (default: in-cluster config)
  --manifests DIR            no API: read Service/EndpointSlice/Node YAML or JSON from DIR and follow it
Node:
  --node-name NAME           this node (default: $NODE_NAME, else the hostname)
  --node-ip ADDR[,ADDR]      the node's addresses when no Node object gives them (manifest mode)
  --nodeport-addresses LIST  CIDRs (or "primary") NodePorts are served on (default: every node address)
Dataplane:
  --bpf-root DIR             where maps and links are pinned (default ${DEFAULT_BPF_ROOT})
  --devices IF[,IF]          devices to attach the tc programs to (default: none): names, or glob
                             patterns (*, ?, [..]) such as up0,lxc*. Names must exist at start;
                             patterns are re-resolved on every sync and every ${DEVICE_RESCAN_MS / 1000}s: new matches
                             are attached, vanished ones forgotten (e.g. pods' host-side veths)
  --devices-netns NS         the devices are in this network namespace (path or /run/netns name), not the agent's
  --tc-mode auto|tcx|clsact  how to attach (default auto: tcx where the kernel has it)
  --map-size NAME=N          max_entries of a map, repeatable (e.g. ct4=1048576)
  --snat-port-range MIN-MAX  source ports of NodePort/LoadBalancer/externalIP traffic SNATed to a backend
                             on another node (default ${DEFAULT_SNAT_PORT_RANGE.min}-${DEFAULT_SNAT_PORT_RANGE.max}: clear of the
                             ephemeral range 32768-60999 the node's own sockets use, and of NodePorts)
  --dsr                      direct server return: NodePort/LoadBalancer/externalIP traffic to a backend on
                             another node is encapsulated (IPIP / IPv6-in-IPv6) to it, and the backend's node
                             answers the client itself (client address kept). Frontends whose targetPort is
                             not their port stay SNAT (\`strait lb list\` says so). Every node needs it for
                             the replies: the backend's node decapsulates and rewrites them
  --xdp                      XDP on the uplinks (the --devices given by name, not patterns): frontend lookup,
                             loadBalancerSourceRanges drops and DSR forwarding before the kernel builds an
                             skb; the rest goes on to tc. Without it, tc does the same work. Off: detach
                             what an earlier agent attached
  --xdp-mode auto|native|generic   how to attach (default auto: native where the driver has XDP)
Socket LB (pods and host processes reach Services at connect()/sendmsg(), no per-packet NAT):
  --socket-lb                on, attached to the cgroup v2 root (from /proc/mounts): every process of the node
  --cgroup PATH              on, attached to this cgroup v2 directory instead (implies --socket-lb)
  --no-socket-lb             off, and detach what an earlier agent attached: Services are served by the
                             tc programs on --devices only. Default: off unless --socket-lb or --cgroup is
                             given (attaching to a machine's cgroup root is never implicit)
Sync:
  --min-sync-period DUR      least time between syncs (default 1s; e.g. 100ms, 2s)
  --sync-period DUR          full reconcile interval, repairs maps changed behind the agent (default 30s)
HTTP:
  --metrics-addr HOST:PORT   /metrics, /healthz, /readyz (default ${DEFAULT_METRICS_ADDR}; "" = off)
  --healthz-addr HOST:PORT   node health like kube-proxy (default ${DEFAULT_HEALTHZ_ADDR}; "" = off)
  --health-check-bind ADDR   address of the health-check node ports (default: all)
  --health-netns NS          node health (--healthz-addr) and the health-check node ports listen inside
                             this network namespace (path or /run/netns name), where load balancers
                             reach the node's addresses; default the agent's own. Not implied by
                             --devices-netns (the lab gives both the node's namespace); /metrics stays here
Output:
  --state-dir DIR            status file for the CLI (default ${DEFAULT_STATE_DIR})
  --log-format json|text     default: text on a TTY, JSON otherwise
  --log-level LEVEL          debug, info (default), warn, error
`;

/** "250ms", "2s", "1m", or a bare number of seconds → milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`${flag}: not a duration: ${JSON.stringify(text)} (e.g. 500ms, 2s, 1m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000);
}

const list = (v: string | undefined): string[] => (v ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');

export function parseAgentFlags(args: string[]): AgentConfig | 'help' {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    allowNegative: true, // --no-socket-lb
    options: {
      kubeconfig: { type: 'string' },
      manifests: { type: 'string' },
      'node-name': { type: 'string' },
      'node-ip': { type: 'string' },
      'nodeport-addresses': { type: 'string' },
      'bpf-root': { type: 'string', default: DEFAULT_BPF_ROOT },
      devices: { type: 'string' },
      'devices-netns': { type: 'string' },
      'tc-mode': { type: 'string', default: 'auto' },
      'map-size': { type: 'string', multiple: true },
      'snat-port-range': { type: 'string' },
      dsr: { type: 'boolean', default: false },
      xdp: { type: 'boolean', default: false },
      'xdp-mode': { type: 'string', default: 'auto' },
      'socket-lb': { type: 'boolean' },
      cgroup: { type: 'string' },
      'min-sync-period': { type: 'string', default: '1s' },
      'sync-period': { type: 'string', default: '30s' },
      'metrics-addr': { type: 'string', default: DEFAULT_METRICS_ADDR },
      'healthz-addr': { type: 'string', default: DEFAULT_HEALTHZ_ADDR },
      'health-check-bind': { type: 'string' },
      'health-netns': { type: 'string' },
      'state-dir': { type: 'string', default: DEFAULT_STATE_DIR },
      'log-format': { type: 'string', default: 'auto' },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  if (values.kubeconfig !== undefined && values.manifests !== undefined) {
    throw new Error('--kubeconfig and --manifests are exclusive: one source of Services');
  }
  const tcMode = values['tc-mode'];
  const socketLb = values['socket-lb'] ?? values.cgroup !== undefined;
  let socketLbCgroup: string | undefined;
  if (socketLb) {
    socketLbCgroup = values.cgroup ?? findCgroup2Root();
    if (socketLbCgroup === undefined) throw new Error('--socket-lb: no cgroup2 file system in /proc/mounts (give --cgroup PATH)');
  }
  if (tcMode !== 'auto' && tcMode !== 'tcx' && tcMode !== 'clsact') throw new Error(`--tc-mode: want auto, tcx or clsact, got ${tcMode}`);
  const format = parseLogFormat(values['log-format']);
  if (!format.ok) throw new Error(`--log-format: ${format.error}`);
  const level = parseLogLevel(values['log-level']);
  if (!level.ok) throw new Error(`--log-level: ${level.error}`);
  const mapSizes: Record<string, number> = {};
  for (const spec of values['map-size'] ?? []) {
    const m = /^([a-z0-9_]+)=(\d+)$/.exec(spec);
    if (!m) throw new Error(`--map-size: want NAME=N, got ${JSON.stringify(spec)}`);
    mapSizes[m[1] as string] = Number(m[2]);
  }
  const snat = values['snat-port-range'];
  const snatPortRange = snat === undefined ? DEFAULT_SNAT_PORT_RANGE : parsePortRange('--snat-port-range', snat);
  if (rangesOverlap(snatPortRange, DEFAULT_NODEPORT_RANGE)) {
    throw new Error(`--snat-port-range ${snatPortRange.min}-${snatPortRange.max} overlaps the NodePort range ${DEFAULT_NODEPORT_RANGE.min}-${DEFAULT_NODEPORT_RANGE.max}`);
  }
  const xdpMode = values['xdp-mode'];
  if (xdpMode !== 'auto' && xdpMode !== 'native' && xdpMode !== 'generic') throw new Error(`--xdp-mode: want auto, native or generic, got ${xdpMode}`);
  const minSyncPeriodMs = parseDuration('--min-sync-period', values['min-sync-period']);
  const syncPeriodMs = parseDuration('--sync-period', values['sync-period']);
  if (syncPeriodMs < minSyncPeriodMs) throw new Error('--sync-period must be at least --min-sync-period');
  const nodeName = values['node-name'] ?? process.env['NODE_NAME'] ?? (process.env['HOSTNAME'] || undefined);
  if (!nodeName) throw new Error('--node-name is required (or set NODE_NAME)');
  const nodePortAddresses = list(values['nodeport-addresses']);
  const nodeAddresses = list(values['node-ip']);
  const bind = values['health-check-bind'];
  return {
    nodeName,
    source: values.manifests !== undefined ? { kind: 'manifests', dir: values.manifests } : { kind: 'kubernetes', ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}) },
    bpfRoot: values['bpf-root'],
    stateDir: values['state-dir'],
    devices: list(values.devices),
    devicesNetns: values['devices-netns'],
    tcMode,
    socketLbCgroup,
    metricsAddr: values['metrics-addr'],
    healthzAddr: values['healthz-addr'],
    healthCheckBindAddresses: bind === undefined ? [''] : list(bind),
    healthNetns: values['health-netns'] === '' ? undefined : values['health-netns'],
    minSyncPeriodMs,
    syncPeriodMs,
    nodePortAddresses: nodePortAddresses.length > 0 ? nodePortAddresses : undefined,
    nodeAddresses: nodeAddresses.length > 0 ? nodeAddresses : undefined,
    mapSizes,
    snatPortRange,
    dsr: values.dsr,
    xdp: values.xdp ? xdpMode : undefined,
    log: createLogger({ format: format.value, level: level.value }),
  };
}

export async function runAgentCommand(args: string[]): Promise<number> {
  const config = parseAgentFlags(args);
  if (config === 'help') {
    process.stdout.write(AGENT_USAGE);
    return 0;
  }
  const agent = new Agent(config);
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      config.log.info('stopping; maps stay pinned and programs attached', { signal });
      void agent.stop().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  try {
    await agent.start();
  } catch (e: unknown) {
    config.log.error('agent failed to start', { error: e instanceof Error ? e.message : String(e) });
    await agent.stop().catch(() => undefined);
    return 1;
  }
  config.log.info('agent started', {
    node: config.nodeName,
    source: config.source.kind,
    bpfRoot: config.bpfRoot,
    metrics: agent.http?.metrics,
    healthz: agent.http?.healthz,
  });
  await stopped;
  return 0;
}
