// The subset of Kubernetes objects the model reads: core/v1 Service, discovery/v1
// EndpointSlice and core/v1 Node. Every field is optional (and readonly), so
// @kubernetes/client-node's V1Service / V1EndpointSlice / V1Node — and plain
// objects parsed from manifests — can be passed in as they are; the model checks
// what it reads at run time and reports what is missing or malformed.

export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly labels?: { readonly [key: string]: string };
  readonly annotations?: { readonly [key: string]: string };
  readonly resourceVersion?: string;
  readonly uid?: string;
}

// ---- core/v1 Service ----

export interface ServicePortSpec {
  readonly name?: string;
  readonly port: number;
  readonly protocol?: string;
  readonly targetPort?: number | string;
  readonly nodePort?: number;
  readonly appProtocol?: string;
}

export interface ClientIPConfig {
  readonly timeoutSeconds?: number;
}

export interface SessionAffinityConfig {
  readonly clientIP?: ClientIPConfig;
}

export interface ServiceSpec {
  readonly type?: string;
  readonly clusterIP?: string;
  readonly clusterIPs?: readonly string[];
  readonly ipFamilies?: readonly string[];
  readonly ports?: readonly ServicePortSpec[];
  readonly externalIPs?: readonly string[];
  readonly externalName?: string;
  readonly externalTrafficPolicy?: string;
  readonly internalTrafficPolicy?: string;
  readonly healthCheckNodePort?: number;
  readonly sessionAffinity?: string;
  readonly sessionAffinityConfig?: SessionAffinityConfig;
  readonly loadBalancerSourceRanges?: readonly string[];
  readonly allocateLoadBalancerNodePorts?: boolean;
  readonly trafficDistribution?: string;
}

export interface LoadBalancerIngress {
  readonly ip?: string;
  readonly hostname?: string;
  /** "VIP" (the default) or "Proxy". */
  readonly ipMode?: string;
}

export interface ServiceStatus {
  readonly loadBalancer?: { readonly ingress?: readonly LoadBalancerIngress[] };
}

export interface Service {
  readonly metadata?: ObjectMeta;
  readonly spec?: ServiceSpec;
  readonly status?: ServiceStatus;
}

// ---- discovery/v1 EndpointSlice ----

export interface EndpointConditions {
  readonly ready?: boolean | null;
  readonly serving?: boolean | null;
  readonly terminating?: boolean | null;
}

export interface EndpointHints {
  readonly forZones?: readonly { readonly name: string }[];
  readonly forNodes?: readonly { readonly name: string }[];
}

export interface SliceEndpoint {
  readonly addresses: readonly string[];
  readonly conditions?: EndpointConditions;
  readonly hints?: EndpointHints;
  readonly nodeName?: string;
  readonly zone?: string;
  readonly hostname?: string;
}

export interface SlicePort {
  readonly name?: string;
  readonly port?: number;
  readonly protocol?: string;
  readonly appProtocol?: string;
}

export interface EndpointSlice {
  readonly metadata?: ObjectMeta;
  /** "IPv4", "IPv6" or "FQDN". */
  readonly addressType?: string;
  readonly endpoints?: readonly SliceEndpoint[];
  readonly ports?: readonly SlicePort[];
}

// ---- core/v1 Node ----

export interface NodeAddress {
  /** "InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS". */
  readonly type: string;
  readonly address: string;
}

export interface Node {
  readonly metadata?: ObjectMeta;
  readonly status?: { readonly addresses?: readonly NodeAddress[] };
}

// ---- well-known names ----

/** EndpointSlice label naming the Service a slice belongs to. */
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
/** A Service (or slice) with this label belongs to another proxy. */
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
/** Slices of headless Services carry this label; kube-proxy does not watch them. */
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';
/** The Node label holding its zone. */
export const LABEL_TOPOLOGY_ZONE = 'topology.kubernetes.io/zone';
/** Service annotation asking for topology-aware routing ("Auto"). */
export const ANNOTATION_TOPOLOGY_MODE = 'service.kubernetes.io/topology-mode';
/** The pre-1.27 spelling of the same request ("Auto"/"auto"). */
export const ANNOTATION_TOPOLOGY_AWARE_HINTS = 'service.kubernetes.io/topology-aware-hints';
