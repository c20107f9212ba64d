// The model: the desired state of this node's Service dataplane, normalised from
// Services, EndpointSlices and this Node with kube-proxy's semantics. Plain
// readonly data; the compile stage turns it into map entries.

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IPFamily = 'IPv4' | 'IPv6';

/** What kind of address a frontend is (mirrors LB_KIND_* in bpf/lib/abi.h). */
export type FrontendKind = 'clusterIP' | 'nodePort' | 'externalIP' | 'loadBalancer';

/**
 * Which topology filter kube-proxy applied to the cluster endpoints:
 * "None" (all endpoints), "PreferSameZone" (zone hints) or "PreferSameNode" (node hints).
 */
export type TopologyMode = 'None' | 'PreferSameZone' | 'PreferSameNode';

/** The object a skip or an error concerns. `Option` names an agent option (nodePortAddresses). */
export interface ObjectRef {
  readonly kind: 'Service' | 'EndpointSlice' | 'Node' | 'Option';
  readonly namespace: string;
  readonly name: string;
}

/** A Service port as kube-proxy names it: {namespace, name, port name, protocol}. */
export interface ServicePortName {
  readonly namespace: string;
  readonly name: string;
  /** spec.ports[].name; "" for the single unnamed port. */
  readonly port: string;
  readonly protocol: Protocol;
}

export interface SessionAffinity {
  readonly mode: 'ClientIP';
  /** sessionAffinityConfig.clientIP.timeoutSeconds, default 10800. */
  readonly timeoutSeconds: number;
}

/** One backend of one Service port, in one address family. */
export interface Endpoint {
  readonly address: string;
  readonly family: IPFamily;
  /** The slice's port number for this Service port's name (the resolved targetPort). */
  readonly port: number;
  /** conditions.ready; nil = true. */
  readonly ready: boolean;
  /** conditions.serving; nil = true (kube-proxy and the API docs). */
  readonly serving: boolean;
  /** conditions.terminating; nil = false. */
  readonly terminating: boolean;
  readonly nodeName: string | undefined;
  readonly zone: string | undefined;
  /** hints.forZones[].name, sorted; empty = no zone hints. */
  readonly zoneHints: readonly string[];
  /** hints.forNodes[].name, sorted; empty = no node hints. */
  readonly nodeHints: readonly string[];
  /** nodeName is this node. */
  readonly isLocal: boolean;
}

/**
 * One frontend: an address, port and protocol that traffic arrives on, with the
 * settings of the Service port behind it and the endpoints kube-proxy would use.
 * Every frontend of the same Service port and family shares the same endpoint
 * arrays (by reference).
 */
export interface ServicePort {
  readonly name: ServicePortName;
  /** formatServicePortName(name): "namespace/name:port/protocol". */
  readonly portName: string;
  readonly family: IPFamily;
  readonly kind: FrontendKind;
  /** Frontend address, canonical. */
  readonly address: string;
  /** Frontend port: spec.ports[].port, or nodePort for kind nodePort. */
  readonly port: number;
  readonly protocol: Protocol;

  // ---- Service port settings ----
  /** spec.ports[].port (equals `port` except for kind nodePort). */
  readonly servicePort: number;
  /** spec.ports[].nodePort; 0 = none. */
  readonly nodePort: number;
  /** spec.ports[].targetPort: a number, or a name resolved per endpoint by the slices. */
  readonly targetPort: number | string;
  /** The Service's cluster IP of this family. */
  readonly clusterIP: string;
  /** externalTrafficPolicy: Local on a Service that has external frontends. */
  readonly externalPolicyLocal: boolean;
  /** internalTrafficPolicy: Local. */
  readonly internalPolicyLocal: boolean;
  readonly sessionAffinity: SessionAffinity | undefined;
  /** spec.healthCheckNodePort of a LoadBalancer Service with externalTrafficPolicy Local; 0 = none. */
  readonly healthCheckNodePort: number;
  /**
   * Valid loadBalancerSourceRanges of this frontend's family, canonical CIDRs.
   * Set on loadBalancer frontends only (kube-proxy applies them to LB addresses
   * only); empty = no restriction.
   */
  readonly loadBalancerSourceRanges: readonly string[];
  /** spec.trafficDistribution as written, if any. */
  readonly trafficDistribution: string | undefined;

  // ---- endpoints (shared by the Service port's frontends of this family) ----
  /** Every known endpoint of this Service port and family, deduplicated, sorted. */
  readonly endpoints: readonly Endpoint[];
  /** Cluster-policy endpoints: ready (topology-filtered), else serving+terminating; empty
   * when the port never uses cluster endpoints (internalTrafficPolicy Local, no external frontend). */
  readonly clusterEndpoints: readonly Endpoint[];
  /** Local-policy endpoints: local ready, else local serving+terminating; empty when
   * the port never uses local endpoints. */
  readonly localEndpoints: readonly Endpoint[];
  /** External traffic (from off the node to nodePort/externalIP/loadBalancer) goes to localEndpoints. */
  readonly externalUsesLocal: boolean;
  /** Traffic to the cluster IP goes to localEndpoints. */
  readonly internalUsesLocal: boolean;
  /** Some usable endpoint exists anywhere in the cluster: when this frontend's set is
   * empty, drop (endpoints exist elsewhere) rather than reject (none at all). */
  readonly hasAnyEndpoints: boolean;
  readonly topologyMode: TopologyMode;
  /** Local ready (not terminating-fallback) endpoints of this port and family. */
  readonly localReadyEndpoints: number;
}

/** Why a Service yields no frontends. */
export type SkipReason =
  | 'headless'
  | 'externalName'
  | 'serviceProxyName'
  | 'noClusterIP'
  | 'noPorts'
  | 'invalid';

export interface SkippedService {
  readonly ref: ObjectRef;
  readonly reason: SkipReason;
  readonly message: string;
}

/** A malformed or unusable item: the item is left out, everything else goes on. */
export interface ModelError {
  readonly ref: ObjectRef;
  /** Field path inside the object, e.g. "spec.ports[1].port". */
  readonly field: string;
  readonly message: string;
}

/** What the health-check node port of an externalTrafficPolicy: Local Service reports. */
export interface HealthCheck {
  readonly ref: ObjectRef;
  readonly nodePort: number;
  /** Distinct local ready endpoint addresses over all the Service's ports: the larger of the per-family counts. */
  readonly localEndpoints: number;
  /**
   * The same count per address family, for a dual-stack Service: kube-proxy runs one health
   * server per family (pkg/proxy/healthcheck), each counting its own family's endpoints, so a
   * probe is answered with the count of the family it arrived on. Undefined for one family.
   */
  readonly localEndpointsByFamily?: Readonly<Record<IPFamily, number>> | undefined;
}

/** The facts about this node the model used. */
export interface NodeInfo {
  readonly name: string;
  /** Label topology.kubernetes.io/zone, if set. */
  readonly zone: string | undefined;
  /** InternalIP then ExternalIP addresses, canonical, deduplicated. */
  readonly addresses: readonly string[];
  /** The addresses NodePorts are served on (nodePortAddresses applied). */
  readonly nodePortAddresses: readonly string[];
}

export interface Model {
  /** Sorted by Service, port name, protocol, family, kind, address, port. */
  readonly servicePorts: readonly ServicePort[];
  readonly skipped: readonly SkippedService[];
  readonly errors: readonly ModelError[];
  readonly healthChecks: readonly HealthCheck[];
  readonly node: NodeInfo;
}

export function formatServicePortName(n: ServicePortName): string {
  return `${n.namespace}/${n.name}:${n.port}/${n.protocol}`;
}

export function formatObjectRef(ref: ObjectRef): string {
  return ref.namespace === '' ? `${ref.kind} ${ref.name}` : `${ref.kind} ${ref.namespace}/${ref.name}`;
}
