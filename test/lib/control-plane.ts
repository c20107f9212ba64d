// A real Kubernetes control plane for tests: the code lives in src/lab/control-plane.ts (the lab
// CLI uses it too); this file keeps the tests' import path.
//
//   const cp = await startControlPlane({ controllerManager: true });
//   const sa = await createAgentServiceAccount(cp);          // least-privilege kubeconfig
//   await cp.stop();
//
// Tests use the default, "tied" mode: state in a temp dir that stop() removes, children that die
// with the test process, leftovers of crashed runs cleaned by the next start.
export * from '../../src/lab/control-plane.js';
