// A ClusterStore that just keeps the objects in maps (namespace/name keys): for tests, the
// cluster-less tools, and as the reference of what the watch promises to deliver.
import type { EndpointSlice, Node, Service } from '../model/k8s-types.js';
import type { ClusterStore } from './watch.js';

export const objectKey = (namespace: string, name: string): string => `${namespace}/${name}`;

export class MemoryClusterStore implements ClusterStore {
  readonly services = new Map<string, Service>();
  readonly endpointSlices = new Map<string, EndpointSlice>();
  node: Node | undefined;
  /** Number of calls so far (any method); handy to wait for "something changed". */
  writes = 0;

  upsertService(obj: Service): void {
    this.writes++;
    this.services.set(objectKey(obj.metadata?.namespace ?? '', obj.metadata?.name ?? ''), obj);
  }

  deleteService(namespace: string, name: string): void {
    this.writes++;
    this.services.delete(objectKey(namespace, name));
  }

  upsertEndpointSlice(obj: EndpointSlice): void {
    this.writes++;
    this.endpointSlices.set(objectKey(obj.metadata?.namespace ?? '', obj.metadata?.name ?? ''), obj);
  }

  deleteEndpointSlice(namespace: string, name: string): void {
    this.writes++;
    this.endpointSlices.delete(objectKey(namespace, name));
  }

  setNode(obj: Node | undefined): void {
    this.writes++;
    this.node = obj;
  }
}
