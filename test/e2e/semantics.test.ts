// DESIGN's "Kubernetes semantics", part 1 (Services), in the lab: 2 namespace nodes in zones
// zone-a and zone-b, a real control plane with the real EndpointSlice controller, one compiled
// `strait agent` per node, echo-server pods played by the lab's kubelet, client pods client1
// (node1) and client2 (node2). One check per semantic (test/e2e/semantics/checks.ts, shared with
// kind in test/e2e/kind/); part 2 (traffic policies, health checks, scale) is
// traffic-policy.test.ts.
//
// Expected failures are registered with test.fails and say in their title which issue they wait
// on (STRAIT_E2E_EXPECTED_FAILURES=run runs them as ordinary tests, to see why they fail); nothing
// is skipped. The lab is named "labsem" (namespaces strait-labsem-*), so it never meets
// the demo's lab or another e2e file's.
import { describe, test } from 'vitest';
import { SERVICE_CHECKS, checkTitle, testFor } from './semantics/checks.js';
import { useLabCluster } from './semantics/lab-cluster.js';

const cluster = useLabCluster('labsem');

describe('Kubernetes semantics in the lab: Services', () => {
  for (const ch of SERVICE_CHECKS) {
    (testFor(ch, 'lab') === 'fails' ? test.fails : test)(checkTitle(ch, 'lab'), () => ch.run(cluster()), ch.timeoutMs);
  }
});
