// The E2eCluster of the lab (src/lab): nodes are network namespaces with one `strait agent` each,
// the lab plays kubelet, the external client is the fabric's 198.18.0.250 / 2001:2::250, and
// what an agent programmed is read from its pinned maps (the code behind `strait lb list`).
//
// One lab per test file (useLab / useLabCluster: up in beforeAll, down in afterAll); every file
// names its own lab (lab<suffix>), so a crashed file's leftovers never meet another file's lab.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { ensureK8sBinaries, k8sBinariesCached, REPO_ROOT } from '../../../src/lab/control-plane.js';
import { Lab, labBpfRoots, labDown, labUp, type LabUpOptions } from '../../../src/lab/lab.js';
import { listNamespaces, routeLine, run, strayProcesses } from '../../../src/lab/host.js';
import type { LabLayout } from '../../../src/lab/layout.js';
import { STRAIT_MAIN, childEnv, labNodeBinary } from '../../../src/lab/programs.js';
import type { E2eCluster, EchoSpec, From, LbList, Pod, PodSpec } from './cluster.js';

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
  }
  return newest;
}

/** The agents run the compiled CLI: a missing or stale dist/ fails the file with what to run. */
export function assertBuilt(): void {
  if (!existsSync(STRAIT_MAIN)) throw new Error(`${STRAIT_MAIN} is missing: run make ts (make test builds first)`);
  if (statSync(STRAIT_MAIN).mtimeMs < newestSource(join(REPO_ROOT, 'src'))) throw new Error(`${STRAIT_MAIN} is older than src/: run make ts`);
}

/** The hook budget for building the Kubernetes binaries when they are not cached yet. */
export const BINARIES_HOOK_MS = k8sBinariesCached() ? 120_000 : 90 * 60_000;

/** Hook budgets of a lab coming up (control plane, nodes, agents) and going down. */
export const LAB_UP_MS = 180_000;
export const LAB_DOWN_MS = 60_000;

export async function prepareLab(): Promise<void> {
  assertBuilt();
  await ensureK8sBinaries();
}

/** How a test file's lab is made: labUp's options but its name and log. Default 2 nodes. */
export type LabSpec = Omit<LabUpOptions, 'name' | 'log'>;

/** Brings lab `name` up (2 nodes unless `spec` says), its progress logged as [name]. */
export async function upLab(name: string, spec: LabSpec = {}): Promise<Lab> {
  const t0 = performance.now();
  const lab = await labUp({ nodes: 2, ...spec, name, log: (l) => console.log(`[${name}] ${l}`) });
  console.log(`lab ${name} up in ${Math.round(performance.now() - t0)} ms:`, lab.state.timings);
  return lab;
}

/**
 * The test file's lab: dist/ checked and the Kubernetes binaries ensured, then lab `name` up
 * before the file's tests, and down after them — the safety net that runs even when a test
 * failed (or already took it down). Call at the top of the file (or of a describe); the
 * returned accessor is valid in tests.
 */
export function useLab(name: string, spec: LabSpec = {}): () => Lab {
  let lab: Lab | undefined;
  beforeAll(prepareLab, BINARIES_HOOK_MS);
  beforeAll(async () => {
    lab = await upLab(name, spec);
  }, LAB_UP_MS);
  afterAll(async () => {
    await labDown({ name });
  }, LAB_DOWN_MS);
  return () => {
    if (!lab) throw new Error(`lab ${name} is not up (its beforeAll failed, or this runs outside the file's tests)`);
    return lab;
  };
}

/** Nothing of the lab at `layout` is left: no stray process, namespace, bpf root or state dir. */
export async function expectLabGone(layout: LabLayout): Promise<void> {
  expect(strayProcesses(layout.stateDir)).toEqual([]);
  expect((await listNamespaces()).filter((n) => n.startsWith(`${layout.prefix}-`))).toEqual([]);
  expect(labBpfRoots(layout)).toEqual([]);
  expect(existsSync(layout.stateDir)).toBe(false);
}

/** useLab, seen as an E2eCluster (the checks of ./checks.ts run against it). */
export function useLabCluster(name: string, spec: LabSpec = {}): () => LabCluster {
  const lab = useLab(name, spec);
  let cluster: LabCluster | undefined;
  return () => {
    const l = lab();
    if (cluster?.lab !== l) cluster = new LabCluster(l);
    return cluster;
  };
}

export class LabCluster implements E2eCluster {
  readonly name = 'lab' as const;
  readonly dualStack = true;

  constructor(readonly lab: Lab) {}

  static async up(name: string, spec: LabSpec = {}): Promise<LabCluster> {
    return new LabCluster(await upLab(name, spec));
  }

  get nodes() {
    return this.lab.nodes.map((n) => ({ name: n.name, zone: n.zone, addr4: n.addr4, addr6: n.addr6 }));
  }

  get external() {
    return { addr4: this.lab.state.external.addr4, addr6: this.lab.state.external.addr6 };
  }

  api(method: string, path: string, body?: unknown) {
    return this.lab.cp.api(method, path, body);
  }

  patch(path: string, body: unknown) {
    return this.lab.cp.patch(path, body);
  }

  /** At most 6 pods are being set up at once: each starts a Node process on a 2-core machine. */
  async createPods(specs: readonly PodSpec[]): Promise<Pod[]> {
    const out: Pod[] = new Array<Pod>(specs.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < specs.length; i = next++) {
        const s = specs[i] as PodSpec;
        const rec = await this.lab.kubelet.createPod({
          name: s.name,
          node: s.node,
          ...(s.labels ? { labels: s.labels } : {}),
          ...(s.serve !== undefined ? { serve: s.serve } : {}),
          ...(s.containerPorts ? { containerPorts: s.containerPorts } : {}),
          ...(s.ready !== undefined ? { ready: s.ready } : {}),
        });
        out[i] = { name: rec.name, node: rec.node, addr4: rec.addr4, addr6: rec.addr6 };
      }
    };
    await Promise.all(Array.from({ length: Math.min(6, specs.length) }, worker));
    return out;
  }

  setReady(pod: string, ready: boolean): Promise<void> {
    return this.lab.kubelet.setReady(pod, ready);
  }

  startDeletion(pod: string, opts: { serving: boolean }): Promise<void> {
    return this.lab.kubelet.startDeletion(pod, { serving: opts.serving });
  }

  finishDeletion(pod: string): Promise<void> {
    return this.lab.kubelet.finishDeletion(pod);
  }

  echo(from: From, mode: Parameters<Lab['echoClient']>[1], to: string, spec: EchoSpec = {}) {
    const netns = from === 'external' ? this.lab.state.external.ns : this.lab.kubelet.pod(from.name).netns;
    return this.lab.echoClient(netns, mode, to, spec);
  }

  async externalRoute(prefix: string, viaNode: string): Promise<void> {
    const n = this.lab.node(viaNode);
    const via = prefix.includes(':') ? n.addr6 : n.addr4;
    await this.lab.ns.batch(this.lab.state.external.ns, [routeLine(prefix, { via, dev: this.lab.state.external.dev }).replace(/^route add /, 'route replace ')]);
  }

  httpGet(_from: 'external', url: string) {
    return this.lab.httpGet(this.lab.state.external.ns, url);
  }

  frontends(node: string) {
    return this.lab.frontends(node);
  }

  async lbList(node: string): Promise<LbList> {
    const n = this.lab.node(node);
    const r = await run(labNodeBinary(), [STRAIT_MAIN, 'lb', 'list', '-o', 'json', '--bpf-root', n.bpfRoot, '--state-dir', n.stateDir], { env: childEnv() });
    return JSON.parse(r.stdout) as LbList;
  }

  waitFor(what: string, cond: () => Promise<boolean | string> | boolean | string, timeoutMs?: number): Promise<number> {
    return this.lab.waitFor(what, cond, timeoutMs);
  }
}
