// Pending changes per object, kube-proxy style: first previous, latest current,
// and a change that undoes itself cancels out.
import { describe, expect, it } from 'vitest';

import { ChangeTracker, type Service } from '../../src/model/index.js';

const v1: Service = { metadata: { name: 'web', namespace: 'default', resourceVersion: '1' }, spec: { clusterIP: '198.19.0.10' } };
const v2: Service = { metadata: { name: 'web', namespace: 'default', resourceVersion: '2' }, spec: { clusterIP: '198.19.0.11' } };
const v3: Service = { metadata: { name: 'web', namespace: 'default', resourceVersion: '3' }, spec: { clusterIP: '198.19.0.10' } };

describe('ChangeTracker', () => {
  it.each<{ name: string; steps: [Service | undefined, Service | undefined][]; want: { previous?: Service; current?: Service } | 'none' }>([
    { name: 'an add is pending', steps: [[undefined, v1]], want: { previous: undefined, current: v1 } },
    { name: 'add then delete cancels out', steps: [[undefined, v1], [v1, undefined]], want: 'none' },
    { name: 'update then revert cancels out', steps: [[v1, v2], [v2, v1]], want: 'none' },
    { name: 'two updates keep the first previous and the last current', steps: [[v1, v2], [v2, v3]], want: { previous: v1, current: v3 } },
    { name: 'delete then re-add differently is an update', steps: [[v1, undefined], [undefined, v2]], want: { previous: v1, current: v2 } },
    { name: 'an update to an equal object is no change', steps: [[v1, structuredClone(v1)]], want: 'none' },
  ])('$name', ({ steps, want }) => {
    const t = new ChangeTracker<Service>();
    for (const [prev, cur] of steps) t.update('default/web', prev, cur);
    const changes = t.take();
    if (want === 'none') expect(changes.size).toBe(0);
    else expect(changes.get('default/web')).toEqual(want);
    expect(t.size).toBe(0);
  });

  it('a projection makes changes to irrelevant fields cancel out', () => {
    const t = new ChangeTracker<Service, unknown>({ project: (s) => s.spec });
    t.update('default/web', v1, v2);
    t.update('default/web', v2, v3); // back to v1's spec; only resourceVersion differs
    expect(t.size).toBe(0);
  });

  it('take clears and keeps keys apart', () => {
    const t = new ChangeTracker<Service>();
    t.update('default/a', undefined, v1);
    t.update('default/b', undefined, v2);
    expect([...t.take().keys()].sort()).toEqual(['default/a', 'default/b']);
    expect(t.take().size).toBe(0);
  });
});
