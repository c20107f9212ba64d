import { test } from 'vitest';
import { startControlPlane, createAgentServiceAccount } from '../lib/control-plane.js';
test('scratch', async () => {
  const cp = await startControlPlane({ controllerManager: true, log: (l) => console.log(l) });
  try {
    console.log(cp.timings);
    const sa = await createAgentServiceAccount(cp);
    console.log(await cp.kubectl(['auth', 'can-i', '--list'], sa.kubeconfigPath));
    console.log(await cp.kubectl(['get', 'svc,endpointslices', '-A', '-o', 'wide']));
    const t = performance.now();
    await cp.killApiServer();
    console.log('killed', performance.now() - t);
    const ms = await cp.startApiServer();
    console.log('restart', ms);
  } finally { await cp.stop(); }
}, 300_000);
