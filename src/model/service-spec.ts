// A Service read and checked: which addresses, ports and settings it asks for,
// per address family. Items that are invalid are left out and reported; a
// Service that cannot be proxied at all is skipped with a reason.
import { parseCIDR, parseIP } from './ip.js';
import { LABEL_SERVICE_PROXY_NAME, type Service } from './k8s-types.js';
import type {
  IPFamily,
  ModelError,
  ObjectRef,
  Protocol,
  SessionAffinity,
  SkippedService,
} from './types.js';

export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

/** The empty per-family map Services without external IPs, LB addresses or source ranges share (never written). */
const NONE: Map<IPFamily, string[]> = new Map();
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

export interface ServicePortSpecChecked {
  /** Index in spec.ports, for error fields. */
  readonly index: number;
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
  /** 0 = none. */
  readonly nodePort: number;
  readonly targetPort: number | string;
}

export interface ServiceSpecChecked {
  readonly ref: ObjectRef;
  readonly type: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  /** One cluster IP per family, in spec order. */
  readonly clusterIPs: ReadonlyMap<IPFamily, string>;
  readonly ports: readonly ServicePortSpecChecked[];
  /** Only families that have a cluster IP: kube-proxy translates no families. */
  readonly externalIPs: ReadonlyMap<IPFamily, readonly string[]>;
  readonly loadBalancerIPs: ReadonlyMap<IPFamily, readonly string[]>;
  readonly loadBalancerSourceRanges: ReadonlyMap<IPFamily, readonly string[]>;
  readonly externalPolicyLocal: boolean;
  readonly internalPolicyLocal: boolean;
  readonly sessionAffinity: SessionAffinity | undefined;
  /** 0 = none. */
  readonly healthCheckNodePort: number;
  readonly trafficDistribution: string | undefined;
}

export type CheckedService =
  | { readonly ok: true; readonly service: ServiceSpecChecked; readonly errors: readonly ModelError[] }
  | { readonly ok: false; readonly skipped: SkippedService; readonly errors: readonly ModelError[] };

const PROTOCOLS: ReadonlySet<string> = new Set(['TCP', 'UDP', 'SCTP']);
const TYPES: ReadonlySet<string> = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);

/** A Service's object reference; a missing namespace is "default", as kubectl reads manifests. */
export function serviceRef(service: Service): ObjectRef {
  return {
    kind: 'Service',
    namespace: service.metadata?.namespace || 'default',
    name: service.metadata?.name ?? '',
  };
}

export function checkService(service: Service): CheckedService {
  const ref = serviceRef(service);
  const errors: ModelError[] = [];
  const err = (field: string, message: string): void => {
    errors.push({ ref, field, message });
  };
  const skip = (reason: SkippedService['reason'], message: string): CheckedService => ({
    ok: false,
    skipped: { ref, reason, message },
    errors,
  });

  if (!isNonEmptyString(service.metadata?.name)) {
    err('metadata.name', 'missing');
    return skip('invalid', 'Service has no name');
  }
  const labels = service.metadata?.labels ?? {};
  if (LABEL_SERVICE_PROXY_NAME in labels) {
    return skip('serviceProxyName', `labelled ${LABEL_SERVICE_PROXY_NAME}=${labels[LABEL_SERVICE_PROXY_NAME]}: served by another proxy`);
  }
  const spec = service.spec ?? {};
  const rawType = spec.type ?? 'ClusterIP';
  if (rawType === 'ExternalName') return skip('externalName', 'type ExternalName: DNS only');
  let type: ServiceSpecChecked['type'] = 'ClusterIP';
  if (TYPES.has(rawType)) {
    type = rawType as ServiceSpecChecked['type'];
  } else {
    err('spec.type', `unknown type ${JSON.stringify(rawType)}; treated as ClusterIP`);
  }

  // ---- cluster IPs ----
  const listed = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0;
  const ipTexts: readonly string[] = listed
    ? (spec.clusterIPs as readonly string[])
    : isNonEmptyString(spec.clusterIP)
      ? [spec.clusterIP]
      : [];
  if (ipTexts[0] === 'None') return skip('headless', 'clusterIP None (headless): DNS only');
  if (ipTexts.length === 0) return skip('noClusterIP', 'no cluster IP assigned');
  const clusterIPs = new Map<IPFamily, string>();
  ipTexts.forEach((text, i) => {
    const field = listed ? `spec.clusterIPs[${i}]` : 'spec.clusterIP';
    const ip = parseIP(text);
    if (ip === undefined) return err(field, `invalid IP address ${JSON.stringify(text)}`);
    if (clusterIPs.has(ip.family)) return err(field, `second ${ip.family} cluster IP ${ip.address}; only one per family`);
    clusterIPs.set(ip.family, ip.address);
  });
  if (clusterIPs.size === 0) return skip('invalid', 'no valid cluster IP');

  // ---- ports ----
  const rawPorts = Array.isArray(spec.ports) ? spec.ports : [];
  if (rawPorts.length === 0) return skip('noPorts', 'no ports');
  const wantsNodePorts = type === 'NodePort' || type === 'LoadBalancer';
  const ports: ServicePortSpecChecked[] = [];
  // duplicates only among several ports: no sets for the usual single one
  const several = rawPorts.length > 1;
  const names = several ? new Set<string>() : undefined;
  const portProtos = several ? new Set<string>() : undefined;
  const nodePortProtos = several ? new Set<string>() : undefined;
  rawPorts.forEach((p, index) => {
    const at = `spec.ports[${index}]`;
    if (p === null || typeof p !== 'object') return err(at, 'not an object');
    const name = p.name ?? '';
    if (typeof name !== 'string') return err(`${at}.name`, 'not a string');
    const protocol = p.protocol ?? 'TCP';
    if (!PROTOCOLS.has(protocol)) return err(`${at}.protocol`, `unsupported protocol ${JSON.stringify(protocol)} (TCP, UDP or SCTP)`);
    if (!isPort(p.port)) return err(`${at}.port`, `port ${JSON.stringify(p.port)} out of range 1-65535`);
    const targetPort = checkTargetPort(p.targetPort, p.port);
    if (targetPort === undefined) return err(`${at}.targetPort`, `invalid targetPort ${JSON.stringify(p.targetPort)} (1-65535 or a port name)`);
    if (names?.has(name) === true) {
      return err(`${at}.name`, name === '' ? 'more than one unnamed port' : `duplicate port name ${JSON.stringify(name)}`);
    }
    if (portProtos !== undefined) {
      const portProto = `${p.port}/${protocol}`;
      if (portProtos.has(portProto)) return err(`${at}.port`, `duplicate port ${portProto}`);
      portProtos.add(portProto);
    }
    names?.add(name);

    let nodePort = 0;
    if (p.nodePort !== undefined && p.nodePort !== null && p.nodePort !== 0) {
      const np = `${p.nodePort}/${protocol}`;
      if (!wantsNodePorts) err(`${at}.nodePort`, `nodePort may not be used with type ${type}; ignored`);
      else if (!isPort(p.nodePort)) err(`${at}.nodePort`, `nodePort ${JSON.stringify(p.nodePort)} out of range 1-65535; ignored`);
      else if (nodePortProtos?.has(np) === true) err(`${at}.nodePort`, `duplicate nodePort ${np}; ignored`);
      else {
        nodePort = p.nodePort;
        nodePortProtos?.add(np);
      }
    }
    ports.push({ index, name, protocol: protocol as Protocol, port: p.port, nodePort, targetPort });
  });
  if (ports.length === 0) return skip('invalid', 'no valid ports');

  // ---- external addresses (only families with a cluster IP) ----
  // (a Service without any shares one empty map: most have none)
  const externalIPs = Array.isArray(spec.externalIPs) && spec.externalIPs.length > 0 ? new Map<IPFamily, string[]>() : NONE;
  const addByFamily = (map: Map<IPFamily, string[]>, text: string, field: string, what: string): void => {
    const ip = parseIP(text);
    if (ip === undefined) return err(field, `invalid IP address ${JSON.stringify(text)}`);
    if (!clusterIPs.has(ip.family)) {
      return err(field, `${what} ${ip.address} is ${ip.family} but the Service has no ${ip.family} cluster IP; ignored`);
    }
    const list = map.get(ip.family) ?? [];
    if (!list.includes(ip.address)) list.push(ip.address);
    map.set(ip.family, list);
  };
  (Array.isArray(spec.externalIPs) ? spec.externalIPs : []).forEach((text, i) =>
    addByFamily(externalIPs, text, `spec.externalIPs[${i}]`, 'external IP'),
  );
  const ingress = service.status?.loadBalancer?.ingress;
  const loadBalancerIPs = Array.isArray(ingress) && ingress.length > 0 ? new Map<IPFamily, string[]>() : NONE;
  (Array.isArray(ingress) ? ingress : []).forEach((ing, i) => {
    if (!isNonEmptyString(ing?.ip)) return; // hostname-only ingress: nothing to program
    // ipMode Proxy: the load balancer proxies to the NodePort itself; routing its
    // address here would bypass it. Any value but VIP is treated so (kube-proxy IsVIPMode).
    if (ing.ipMode !== undefined && ing.ipMode !== null && ing.ipMode !== 'VIP') return;
    addByFamily(loadBalancerIPs, ing.ip, `status.loadBalancer.ingress[${i}].ip`, 'load balancer IP');
  });
  const loadBalancerSourceRanges =
    Array.isArray(spec.loadBalancerSourceRanges) && spec.loadBalancerSourceRanges.length > 0 ? new Map<IPFamily, string[]>() : NONE;
  (Array.isArray(spec.loadBalancerSourceRanges) ? spec.loadBalancerSourceRanges : []).forEach((text, i) => {
    const cidr = typeof text === 'string' ? parseCIDR(text.trim()) : undefined;
    if (cidr === undefined) return err(`spec.loadBalancerSourceRanges[${i}]`, `invalid CIDR ${JSON.stringify(text)}; ignored`);
    const list = loadBalancerSourceRanges.get(cidr.family) ?? [];
    if (!list.includes(cidr.cidr)) list.push(cidr.cidr);
    loadBalancerSourceRanges.set(cidr.family, list);
  });

  // ---- policies ----
  const etp = spec.externalTrafficPolicy;
  if (etp !== undefined && etp !== null && etp !== 'Cluster' && etp !== 'Local') {
    err('spec.externalTrafficPolicy', `unknown policy ${JSON.stringify(etp)}; treated as Cluster`);
  }
  const hasExternal =
    type === 'NodePort' || type === 'LoadBalancer' || (Array.isArray(spec.externalIPs) && spec.externalIPs.length > 0);
  const externalPolicyLocal = hasExternal && etp === 'Local';
  const itp = spec.internalTrafficPolicy;
  if (itp !== undefined && itp !== null && itp !== 'Cluster' && itp !== 'Local') {
    err('spec.internalTrafficPolicy', `unknown policy ${JSON.stringify(itp)}; treated as Cluster`);
  }
  const internalPolicyLocal = itp === 'Local';

  let sessionAffinity: SessionAffinity | undefined;
  const affinity = spec.sessionAffinity ?? 'None';
  if (affinity === 'ClientIP') {
    const timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    let timeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    if (timeout !== undefined && timeout !== null) {
      if (Number.isInteger(timeout) && timeout > 0 && timeout <= MAX_AFFINITY_TIMEOUT_SECONDS) timeoutSeconds = timeout;
      else err('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `timeout ${JSON.stringify(timeout)} out of range 1-${MAX_AFFINITY_TIMEOUT_SECONDS}; using ${DEFAULT_AFFINITY_TIMEOUT_SECONDS}`);
    }
    sessionAffinity = { mode: 'ClientIP', timeoutSeconds };
  } else if (affinity !== 'None') {
    err('spec.sessionAffinity', `unknown session affinity ${JSON.stringify(affinity)}; treated as None`);
  }

  let healthCheckNodePort = 0;
  if (type === 'LoadBalancer' && externalPolicyLocal) {
    const hc = spec.healthCheckNodePort;
    if (isPort(hc)) healthCheckNodePort = hc;
    else err('spec.healthCheckNodePort', hc === undefined || hc === null || hc === 0 ? 'missing for a LoadBalancer with externalTrafficPolicy Local' : `port ${JSON.stringify(hc)} out of range 1-65535`);
  }

  return {
    ok: true,
    errors,
    service: {
      ref,
      type,
      clusterIPs,
      ports,
      externalIPs,
      loadBalancerIPs,
      loadBalancerSourceRanges,
      externalPolicyLocal,
      internalPolicyLocal,
      sessionAffinity,
      healthCheckNodePort,
      trafficDistribution: isNonEmptyString(spec.trafficDistribution) ? spec.trafficDistribution : undefined,
    },
  };
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v !== '';
}

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

/** targetPort: absent = the port; a number 1-65535 (digits in a string too); or a port name. */
function checkTargetPort(v: unknown, port: number): number | string | undefined {
  if (v === undefined || v === null || v === 0 || v === '') return port;
  if (typeof v === 'number') return isPort(v) ? v : undefined;
  if (typeof v !== 'string') return undefined;
  if (/^[0-9]+$/.test(v)) {
    const n = Number(v);
    return isPort(n) ? n : undefined;
  }
  return isPortName(v) ? v : undefined;
}

/** IANA_SVC_NAME: 1-15 of [a-z0-9-], a letter somewhere, no leading, trailing or doubled hyphen. */
function isPortName(v: string): boolean {
  return (
    v.length <= 15 &&
    /^[a-z0-9-]+$/.test(v) &&
    /[a-z]/.test(v) &&
    !v.startsWith('-') &&
    !v.endsWith('-') &&
    !v.includes('--')
  );
}
