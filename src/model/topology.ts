// Endpoint selection for one Service port, as kube-proxy's CategorizeEndpoints
// (pkg/proxy/topology.go): which endpoints cluster-policy and local-policy
// traffic may use on this node.
import type { Endpoint, TopologyMode } from './types.js';

/** The Service port settings that decide which endpoint sets are needed. */
export interface EndpointPolicy {
  readonly internalPolicyLocal: boolean;
  readonly externalPolicyLocal: boolean;
  /** Has a nodePort, an externalIP or a loadBalancer address (in this family). */
  readonly externallyAccessible: boolean;
}

export interface EndpointCategories {
  readonly clusterEndpoints: readonly Endpoint[];
  readonly localEndpoints: readonly Endpoint[];
  readonly hasAnyEndpoints: boolean;
  readonly topologyMode: TopologyMode;
}

/** The port ever sends traffic by Cluster policy (external traffic short-circuits to it too). */
export function usesClusterEndpoints(p: EndpointPolicy): boolean {
  return !p.internalPolicyLocal || p.externallyAccessible;
}

/** The port ever sends traffic by Local policy. */
export function usesLocalEndpoints(p: EndpointPolicy): boolean {
  return p.internalPolicyLocal || (p.externalPolicyLocal && p.externallyAccessible);
}

/**
 * Usable means ready; when nothing is ready, serving-and-terminating (KEP-1669),
 * decided separately for the cluster and the local set. Cluster endpoints are
 * narrowed by topology hints when every ready endpoint has one and some hint
 * names this node (PreferSameNode) or its zone (PreferSameZone); otherwise all.
 */
export function categorizeEndpoints(
  endpoints: readonly Endpoint[],
  policy: EndpointPolicy,
  nodeName: string,
  zone: string | undefined,
): EndpointCategories {
  let clusterEndpoints: readonly Endpoint[] = [];
  let localEndpoints: readonly Endpoint[] = [];
  let hasAnyEndpoints = false;
  let topologyMode: TopologyMode = 'None';
  if (endpoints.length === 0) return { clusterEndpoints, localEndpoints, hasAnyEndpoints, topologyMode };

  if (usesClusterEndpoints(policy)) {
    topologyMode = topologyModeFromHints(endpoints, nodeName, zone);
    clusterEndpoints = endpoints.filter(
      (ep) => ep.ready && availableForTopology(ep, topologyMode, nodeName, zone),
    );
    // Topology already fell back to "None" when no ready endpoint suits this
    // node, so an empty set here means nothing is ready anywhere.
    if (clusterEndpoints.length === 0) {
      clusterEndpoints = endpoints.filter((ep) => ep.serving && ep.terminating);
    }
    if (clusterEndpoints.length > 0) hasAnyEndpoints = true;
  }

  if (!usesLocalEndpoints(policy)) return { clusterEndpoints, localEndpoints, hasAnyEndpoints, topologyMode };

  let hasLocalReady = false;
  let hasLocalServingTerminating = false;
  for (const ep of endpoints) {
    if (ep.ready) {
      hasAnyEndpoints = true;
      if (ep.isLocal) hasLocalReady = true;
    } else if (ep.serving && ep.terminating) {
      hasAnyEndpoints = true;
      if (ep.isLocal) hasLocalServingTerminating = true;
    }
  }
  if (hasLocalReady) {
    localEndpoints = endpoints.filter((ep) => ep.isLocal && ep.ready);
  } else if (hasLocalServingTerminating) {
    localEndpoints = endpoints.filter((ep) => ep.isLocal && ep.serving && ep.terminating);
  }
  return { clusterEndpoints, localEndpoints, hasAnyEndpoints, topologyMode };
}

/**
 * kube-proxy trusts the hints the EndpointSlice controller wrote (it writes them
 * only for Services that ask, by trafficDistribution or the topology-mode
 * annotation); incomplete hints, or none for this node/zone, mean no filtering.
 */
export function topologyModeFromHints(
  endpoints: readonly Endpoint[],
  nodeName: string,
  zone: string | undefined,
): TopologyMode {
  let hasReady = false;
  let allHaveNodeHints = true;
  let hasEndpointForNode = false;
  let allHaveZoneHints = true;
  let hasEndpointForZone = false;
  for (const ep of endpoints) {
    if (!ep.ready) continue;
    hasReady = true;
    if (ep.nodeHints.length === 0) allHaveNodeHints = false;
    else if (ep.nodeHints.includes(nodeName)) hasEndpointForNode = true;
    if (ep.zoneHints.length === 0) allHaveZoneHints = false;
    else if (zone !== undefined && ep.zoneHints.includes(zone)) hasEndpointForZone = true;
  }
  if (!hasReady) return 'None';
  if (allHaveNodeHints && hasEndpointForNode) return 'PreferSameNode';
  if (allHaveZoneHints && hasEndpointForZone) return 'PreferSameZone';
  return 'None';
}

function availableForTopology(
  ep: Endpoint,
  mode: TopologyMode,
  nodeName: string,
  zone: string | undefined,
): boolean {
  switch (mode) {
    case 'None':
      return true;
    case 'PreferSameNode':
      return ep.nodeHints.includes(nodeName);
    case 'PreferSameZone':
      return zone !== undefined && ep.zoneHints.includes(zone);
  }
}
