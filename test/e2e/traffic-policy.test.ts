// DESIGN's "Kubernetes semantics", part 2 (traffic policies, health checks, scale), in the lab:
// node health on :10256 and the health-check node ports of externalTrafficPolicy: Local Services
// probed from the external client (198.18.0.250) on the nodes' own addresses (the agents listen
// inside the node namespaces: --health-netns), client addresses kept through a NodePort with a
// local backend, internalTrafficPolicy: Local, and a Service scaled 1 → 50 → 1 pods under
// continuous requests with no failed request. Checks shared with kind (test/e2e/semantics/checks.ts);
// part 1 is semantics.test.ts. Lab "labpol" (namespaces strait-labpol-*).
//
// Not here: NodePort to a backend on another node (SNAT, issue 6), tested with that work.
import { describe, test } from 'vitest';
import { POLICY_CHECKS, checkTitle, testFor } from './semantics/checks.js';
import { useLabCluster } from './semantics/lab-cluster.js';

const cluster = useLabCluster('labpol');

describe('Kubernetes semantics in the lab: traffic policies, health checks, scale', () => {
  for (const ch of POLICY_CHECKS) {
    (testFor(ch, 'lab') === 'fails' ? test.fails : test)(checkTitle(ch, 'lab'), () => ch.run(cluster()), ch.timeoutMs);
  }
});
