// This node's facts: name, zone, addresses, and the addresses NodePorts are
// served on (kube-proxy's --nodeport-addresses).
import { cidrContains, parseCIDR, parseIP, type ParsedCIDR, type ParsedIP } from './ip.js';
import { LABEL_TOPOLOGY_ZONE, type Node } from './k8s-types.js';
import type { IPFamily, ModelError, NodeInfo, ObjectRef } from './types.js';

export interface NodeInput {
  /** This node's name (--node-name); endpoints with this nodeName are local. */
  readonly nodeName: string;
  /** This node's object, for its zone label and status.addresses. */
  readonly node?: Node | undefined;
  /**
   * Where NodePorts are served: CIDRs (per family; a family with none listed
   * keeps all its addresses, as kube-proxy) or the single word "primary" (the
   * node's first InternalIP, else ExternalIP, of each family). Default: every
   * node address.
   */
  readonly nodePortAddresses?: readonly string[] | undefined;
  /**
   * The node's addresses when there is no Node object to read them from (the
   * cluster-less mode) or to override it; default Node.status.addresses
   * InternalIP then ExternalIP.
   */
  readonly nodeAddresses?: readonly string[] | undefined;
}

export const PRIMARY_NODE_PORT_ADDRESSES = 'primary';

const OPTION_REF: ObjectRef = { kind: 'Option', namespace: '', name: 'nodePortAddresses' };

export function buildNodeInfo(input: NodeInput): { node: NodeInfo; errors: ModelError[] } {
  const errors: ModelError[] = [];
  const nodeRef: ObjectRef = { kind: 'Node', namespace: '', name: input.node?.metadata?.name ?? input.nodeName };
  const zone = input.node?.metadata?.labels?.[LABEL_TOPOLOGY_ZONE] || undefined;

  const parsed: ParsedIP[] = [];
  const seen = new Set<string>();
  const add = (text: string, ref: ObjectRef, field: string): void => {
    const ip = parseIP(text);
    if (ip === undefined) {
      errors.push({ ref, field, message: `invalid IP address ${JSON.stringify(text)}` });
      return;
    }
    if (!seen.has(ip.address)) {
      seen.add(ip.address);
      parsed.push(ip);
    }
  };
  if (input.nodeAddresses !== undefined) {
    input.nodeAddresses.forEach((a, i) =>
      add(a, { kind: 'Option', namespace: '', name: 'nodeAddresses' }, `[${i}]`),
    );
  } else {
    const addresses = input.node?.status?.addresses ?? [];
    for (const type of ['InternalIP', 'ExternalIP']) {
      addresses.forEach((a, i) => {
        if (a?.type === type) add(a.address, nodeRef, `status.addresses[${i}].address`);
      });
    }
  }

  const nodePortAddresses = selectNodePortAddresses(parsed, input.nodePortAddresses, errors);
  return {
    node: {
      name: input.nodeName,
      zone,
      addresses: parsed.map((ip) => ip.address),
      nodePortAddresses: nodePortAddresses.map((ip) => ip.address),
    },
    errors,
  };
}

function selectNodePortAddresses(
  addresses: readonly ParsedIP[],
  option: readonly string[] | undefined,
  errors: ModelError[],
): ParsedIP[] {
  if (option === undefined || option.length === 0) return [...addresses];
  if (option.length === 1 && option[0] === PRIMARY_NODE_PORT_ADDRESSES) {
    // k8s GetNodeHostIPs: the first address, then the first of the other family.
    const first = addresses[0];
    if (first === undefined) return [];
    const other = addresses.find((ip) => ip.family !== first.family);
    return other === undefined ? [first] : [first, other];
  }
  const cidrs = new Map<IPFamily, ParsedCIDR[]>();
  option.forEach((text, i) => {
    const cidr = parseCIDR(text.trim());
    if (cidr === undefined) {
      const message =
        text === PRIMARY_NODE_PORT_ADDRESSES
          ? '"primary" cannot be combined with CIDRs'
          : `invalid CIDR ${JSON.stringify(text)}`;
      errors.push({ ref: OPTION_REF, field: `[${i}]`, message });
      return;
    }
    const list = cidrs.get(cidr.family) ?? [];
    list.push(cidr);
    cidrs.set(cidr.family, list);
  });
  return addresses.filter((ip) => {
    const list = cidrs.get(ip.family);
    return list === undefined || list.some((c) => cidrContains(c, ip));
  });
}
