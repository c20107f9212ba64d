// Where a lab keeps what it creates: every name derives from the lab's name, so `strait lab
// down` finds all of it, state file or not.
//
// Lab "lab" (the default; others are named lab<suffix>, e.g. labe2e):
//   network namespaces   strait-lab-fabric, strait-lab-ext, strait-lab-node<N>, strait-lab-pod-<pod>
//   bpf roots            /sys/fs/bpf/strait-lab-node<N>
//   state dir            /run/strait-lab/            lab.json, cp/ (control plane), node<N>/
//                                                    (agent log, pid, status file), pods/, ipam/
//   agent HTTP           127.18.<L>.<N>: metrics + /readyz on an ephemeral port (so a lab never
//                        holds 10249 that a host kube-proxy or test may want); L is 0 for "lab" and
//                        a hash of the name otherwise (loopback only: 127.0.0.0/8 is local without
//                        any address added). Node health (:10256) and the health-check node ports
//                        listen inside the node's namespace (agent --health-netns), on its addresses
import { join } from 'node:path';

export const DEFAULT_LAB_NAME = 'lab';
const NAME_RE = /^lab[a-z0-9]{0,8}$/;

export interface LabLayout {
  readonly name: string;
  /** strait-<name>: the first part of every namespace and bpf root. */
  readonly prefix: string;
  readonly stateDir: string;
  readonly stateFile: string;
  readonly controlPlaneDir: string;
  readonly podsDir: string;
  readonly ipamDir: string;
  readonly fabricNs: string;
  readonly externalNs: string;
  readonly bpfParent: string;
}

export function labLayout(name: string = DEFAULT_LAB_NAME): LabLayout {
  if (!NAME_RE.test(name)) throw new Error(`lab name ${JSON.stringify(name)}: want "lab" plus up to 8 of [a-z0-9] (e.g. lab, labe2e)`);
  const prefix = `strait-${name}`;
  const stateDir = `/run/${prefix}`;
  return {
    name,
    prefix,
    stateDir,
    stateFile: join(stateDir, 'lab.json'),
    controlPlaneDir: join(stateDir, 'cp'),
    podsDir: join(stateDir, 'pods'),
    ipamDir: join(stateDir, 'ipam'),
    fabricNs: `${prefix}-fabric`,
    externalNs: `${prefix}-ext`,
    bpfParent: '/sys/fs/bpf',
  };
}

export function nodeName(index: number): string {
  return `node${index}`;
}

export function nodeNamespace(layout: LabLayout, node: string): string {
  return `${layout.prefix}-${node}`;
}

export function nodeBpfRoot(layout: LabLayout, node: string): string {
  return join(layout.bpfParent, `${layout.prefix}-${node}`);
}

export function nodeStateDir(layout: LabLayout, node: string): string {
  return join(layout.stateDir, node);
}

/** Pod namespace: strait-<lab>-pod-<name>, or …-pod-<namespace>.<name> outside "default". */
export function podNamespace(layout: LabLayout, namespace: string, pod: string): string {
  return `${layout.prefix}-pod-${namespace === 'default' ? pod : `${namespace}.${pod}`}`;
}

/** 127.18.<L>.<N>: the loopback address of node N's agent listeners. */
export function agentLoopback(layout: LabLayout, nodeIndex: number): string {
  let l = 0;
  if (layout.name !== DEFAULT_LAB_NAME) {
    let h = 2166136261;
    for (const c of layout.name) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    l = 1 + (h % 254);
  }
  return `127.18.${l}.${nodeIndex}`;
}

/** Every node's uplink onto the fabric (in its namespace). */
export const UPLINK = 'up0';
/** Host-side pod veths: lxc + 8 hex digits (the agents attach to `up0,lxc*`). */
export const POD_VETH_PREFIX = 'lxc';
