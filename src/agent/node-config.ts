// The `config` map (abi.h struct node_config): the node facts the datapath
// needs and cannot look up itself — the addresses north-south SNAT rewrites
// sources to, the SNAT port range, the uplinks, the modes. One entry (key 0),
// written by the agent whenever it changes (a Node address change included).
import {
  NODE_MAX_UPLINKS,
  NODE_MODE_DSR,
  NODE_MODE_SOCKET_LB,
  NODE_MODE_XDP,
  type NodeConfig,
} from '../bpf/abi.js';
import { parseIP } from '../model/index.js';

export interface PortRange {
  readonly min: number;
  readonly max: number;
}

/**
 * SNAT ports (lib/snat.h): above Linux's ephemeral range (32768–60999, what the
 * node's own sockets — kubelet probing a pod — pick from) and the NodePort range
 * (30000–32767), so a SNAT mapping never captures the replies of a host socket.
 * Ports are unique per node address, backend address, backend port and protocol,
 * so this is 4536 concurrent flows per backend and node.
 */
export const DEFAULT_SNAT_PORT_RANGE: PortRange = { min: 61000, max: 65535 };
/** kube-apiserver's default --service-node-port-range. */
export const DEFAULT_NODEPORT_RANGE: PortRange = { min: 30000, max: 32767 };

/** "MIN-MAX" → a range of ports in 1..65535, min ≤ max. */
export function parsePortRange(flag: string, text: string): PortRange {
  const m = /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(text);
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1 || max > 65535 || min > max) {
    throw new Error(`${flag}: want MIN-MAX with 1 ≤ MIN ≤ MAX ≤ 65535, got ${JSON.stringify(text)}`);
  }
  return { min, max };
}

/** Do two ranges share a port? */
export function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.min <= b.max && b.min <= a.max;
}

export interface NodeConfigInput {
  /** The node's addresses in preference order (model NodeInfo.addresses): the first of each family is the SNAT source. */
  readonly addresses: readonly string[];
  /** ifindexes of the uplinks the tc programs are attached to (the first NODE_MAX_UPLINKS are kept). */
  readonly uplinkIfindexes: readonly number[];
  readonly socketLb: boolean;
  /** `--dsr`: remote backends of LB_F_DSR frontends are reached by DSR (bpf/lib/dsr.h). */
  readonly dsr?: boolean;
  /** `--xdp`: the XDP program is attached to the uplinks (informational for the datapath). */
  readonly xdp?: boolean;
  readonly snatPorts: PortRange;
  readonly nodePorts: PortRange;
}

/** The config entry for a node; a family without an address gets zeros (that family is not SNATed). */
export function nodeConfigValue(input: NodeConfigInput): NodeConfig {
  const ips = input.addresses.map((a) => parseIP(a)).filter((ip) => ip !== undefined);
  const v4 = ips.find((ip) => ip.family === 'IPv4');
  const v6 = ips.find((ip) => ip.family === 'IPv6');
  const uplinks = input.uplinkIfindexes.slice(0, NODE_MAX_UPLINKS);
  while (uplinks.length < NODE_MAX_UPLINKS) uplinks.push(0);
  return {
    addr4: v4?.address ?? '0.0.0.0',
    addr6: v6?.address ?? '::',
    uplinkIfindex: uplinks,
    modes: (input.socketLb ? NODE_MODE_SOCKET_LB : 0) | (input.dsr ? NODE_MODE_DSR : 0) | (input.xdp ? NODE_MODE_XDP : 0),
    nodeportMin: input.nodePorts.min,
    nodeportMax: input.nodePorts.max,
    snatPortMin: input.snatPorts.min,
    snatPortMax: input.snatPorts.max,
  };
}

/** Whether two config values are the same entry. */
export function sameNodeConfig(a: NodeConfig, b: NodeConfig): boolean {
  return (
    a.addr4 === b.addr4 &&
    a.addr6 === b.addr6 &&
    a.modes === b.modes &&
    a.nodeportMin === b.nodeportMin &&
    a.nodeportMax === b.nodeportMax &&
    a.snatPortMin === b.snatPortMin &&
    a.snatPortMax === b.snatPortMax &&
    a.uplinkIfindex.length === b.uplinkIfindex.length &&
    a.uplinkIfindex.every((v, i) => v === b.uplinkIfindex[i])
  );
}
