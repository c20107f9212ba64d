// The E2eCluster of a kind cluster (test/e2e/semantics/cluster.ts): real kubelets and containers,
// kube-proxy absent (kubeProxyMode: none), strait as a DaemonSet (strait-daemonset.yaml), the
// lab's echo server and client in the pods (one image, Dockerfile). The external client is a
// container of that image on the cluster's Docker network (strait-kind-ext), which the test
// makes in the lab ranges first (198.18.128.0/24, 2001:2:0:80::/64), so no test packet leaves them.
//
// Needs docker and kind on PATH and the repository built (make build); images: debian:bookworm-
// slim (override with STRAIT_KIND_BASE) and kind's node image, pulled by docker.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { run } from '../../../src/lab/host.js';
import { REPO_ROOT, ensureK8sBinaries } from '../../../src/lab/control-plane.js';
import type { ClusterNode, E2eCluster, EchoMode, EchoSpec, EchoSummary, From, FrontendView, HttpProbe, LbList, Pod, PodSpec } from '../semantics/cluster.js';

export const KIND = {
  cluster: 'strait-e2e',
  network: 'strait-kind',
  subnet4: '198.18.128.0/24',
  gateway4: '198.18.128.1',
  subnet6: '2001:2:0:80::/64',
  gateway6: '2001:2:0:80::1',
  image: 'strait-e2e:dev',
  external: 'strait-kind-ext',
  zones: ['zone-a', 'zone-b'],
} as const;

const HERE = join(REPO_ROOT, 'test', 'e2e', 'kind');
export const KIND_CONFIG = join(HERE, 'kind-config.yaml');
export const DAEMONSET = join(HERE, 'strait-daemonset.yaml');
const IN_IMAGE = '/opt/strait/dist/src/lab';

/** Whether this machine can run the kind e2e, and if not, why (shown in the skipped test's title). */
export function kindAvailability(): { ok: true } | { ok: false; reason: string } {
  if (process.env['STRAIT_KIND'] === '0') return { ok: false, reason: 'STRAIT_KIND=0 turned it off' };
  const missing = ['docker', 'kind'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);
  if (missing.length > 0) return { ok: false, reason: `${missing.join(' and ')} not found on PATH` };
  const info = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 20_000 });
  if (info.status !== 0) return { ok: false, reason: `docker does not answer (docker info: ${(info.stderr || info.error?.message || '').trim().split('\n')[0]})` };
  return { ok: true };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class KindCluster implements E2eCluster {
  readonly name = 'kind' as const;
  readonly dualStack = true;
  external: { addr4: string; addr6: string | undefined } = { addr4: '', addr6: undefined };
  nodes: ClusterNode[] = [];
  readonly #kc: KubeConfig;
  readonly #kubeconfigPath: string;
  readonly #kubectl: string;

  private constructor(kubeconfig: string, kubeconfigPath: string, kubectl: string) {
    this.#kc = new KubeConfig();
    this.#kc.loadFromString(kubeconfig);
    this.#kubeconfigPath = kubeconfigPath;
    this.#kubectl = kubectl;
  }

  /** Network, cluster, image, DaemonSet; resolves once every agent is ready. */
  static async up(log: (l: string) => void): Promise<KindCluster> {
    await KindCluster.down();
    const net = await run('docker', ['network', 'inspect', KIND.network], { check: false });
    if (net.code !== 0) {
      log(`docker network ${KIND.network} ${KIND.subnet4} ${KIND.subnet6}`);
      await run('docker', ['network', 'create', '--ipv6', '--subnet', KIND.subnet4, '--gateway', KIND.gateway4, '--subnet', KIND.subnet6, '--gateway', KIND.gateway6, KIND.network]);
    }
    log(`kind create cluster --name ${KIND.cluster}`);
    await run('kind', ['create', 'cluster', '--name', KIND.cluster, '--config', KIND_CONFIG, '--wait', '0s'], {
      env: { ...process.env, KIND_EXPERIMENTAL_DOCKER_NETWORK: KIND.network },
      timeoutMs: 600_000,
    });
    const kubeconfig = (await run('kind', ['get', 'kubeconfig', '--name', KIND.cluster])).stdout;
    const dir = mkdtempSync(join(tmpdir(), 'strait-kind-'));
    const kubeconfigPath = join(dir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfig, { mode: 0o600 });
    const kubectl = spawnSync('sh', ['-c', 'command -v kubectl']).status === 0 ? 'kubectl' : join(await ensureK8sBinaries(log), 'kubectl');
    const c = new KindCluster(kubeconfig, kubeconfigPath, kubectl);

    log(`docker build ${KIND.image}`);
    await buildImage();
    await run('kind', ['load', 'docker-image', KIND.image, '--name', KIND.cluster], { timeoutMs: 600_000 });
    // The external client: outside the cluster, on its network (NET_ADMIN for the routes a load balancer would have).
    await run('docker', ['run', '-d', '--name', KIND.external, '--network', KIND.network, '--cap-add', 'NET_ADMIN', '--entrypoint', 'sleep', KIND.image, 'infinity']);
    const ext = JSON.parse((await run('docker', ['inspect', KIND.external])).stdout)[0].NetworkSettings.Networks[KIND.network];
    c.external = { addr4: ext.IPAddress, addr6: ext.GlobalIPv6Address || undefined };

    // The workers are the test's nodes, in two zones.
    const nodes = (await c.api('GET', '/api/v1/nodes')).items as Obj[];
    const workers = nodes.filter((n) => !('node-role.kubernetes.io/control-plane' in (n.metadata.labels ?? {}))).sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    if (workers.length < 2) throw new Error(`kind made ${workers.length} worker(s); the checks need 2`);
    for (const [i, w] of workers.entries()) {
      await c.patch(`/api/v1/nodes/${w.metadata.name}`, { metadata: { labels: { 'topology.kubernetes.io/zone': KIND.zones[i % 2] } } });
    }
    const apiHost = `${KIND.cluster}-control-plane`;
    const manifest = readFileSync(DAEMONSET, 'utf8').replaceAll('${IMAGE}', KIND.image).replaceAll('${API_HOST}', apiHost).replaceAll('${API_PORT}', '6443');
    await c.kubectl(['apply', '-f', '-'], manifest);
    log('waiting for the strait DaemonSet and the nodes');
    await c.waitFor('every strait agent ready and every node Ready', async () => {
      const ds = await c.api('GET', '/apis/apps/v1/namespaces/strait-system/daemonsets/strait');
      const ready = (await c.api('GET', '/api/v1/nodes')).items.filter((n: Obj) => n.status.conditions?.some((x: Obj) => x.type === 'Ready' && x.status === 'True')).length;
      return (ds.status?.desiredNumberScheduled > 0 && ds.status.numberReady === ds.status.desiredNumberScheduled && ready === nodes.length) || `${ds.status?.numberReady}/${ds.status?.desiredNumberScheduled} agents, ${ready}/${nodes.length} nodes`;
    }, 300_000);
    c.nodes = workers.map((w, i) => {
      const ips = (w.status.addresses as { type: string; address: string }[]).filter((a) => a.type === 'InternalIP').map((a) => a.address);
      return { name: w.metadata.name, zone: KIND.zones[i % 2] as string, addr4: ips.find((a) => !a.includes(':')) as string, addr6: ips.find((a) => a.includes(':')) };
    });
    return c;
  }

  /** Removes the cluster and the network (idempotent). */
  static async down(): Promise<void> {
    await run('docker', ['rm', '-f', KIND.external], { check: false });
    await run('kind', ['delete', 'cluster', '--name', KIND.cluster], { check: false, timeoutMs: 300_000 });
    await run('docker', ['network', 'rm', KIND.network], { check: false });
  }

  async api(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Obj> {
    const server = new URL(this.#kc.getCurrentCluster()?.server ?? '');
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const opts: RequestOptions = {
      host: server.hostname,
      port: server.port,
      method,
      path,
      headers: { Accept: 'application/json', ...(payload !== undefined ? { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(payload)) } : {}) },
      timeout: 30_000,
    };
    await this.#kc.applyToHTTPSOptions(opts);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(opts, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* text */
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) reject(new Error(`${method} ${path}: HTTP ${status}: ${typeof parsed === 'string' ? parsed : JSON.stringify(parsed)}`));
          else resolve(parsed);
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  patch(path: string, body: unknown): Promise<Obj> {
    return this.api('PATCH', path, body, 'application/merge-patch+json');
  }

  async kubectl(args: string[], input?: string, timeoutMs = 120_000): Promise<string> {
    return (await run(this.#kubectl, [`--kubeconfig=${this.#kubeconfigPath}`, ...args], { ...(input !== undefined ? { input } : {}), timeoutMs })).stdout;
  }

  async createPods(specs: readonly PodSpec[]): Promise<Pod[]> {
    for (const s of specs) await this.api('POST', '/api/v1/namespaces/default/pods', podObject(s));
    const out: Pod[] = [];
    for (const s of specs) {
      let pod: Obj;
      await this.waitFor(`pod ${s.name} running${s.ready === false ? '' : ' and ready'}`, async () => {
        pod = await this.api('GET', `/api/v1/namespaces/default/pods/${s.name}`);
        const ready = pod.status.conditions?.some((x: Obj) => x.type === 'Ready' && x.status === 'True');
        return (pod.status.phase === 'Running' && (pod.status.podIPs?.length ?? 0) > 0 && (s.ready === false || s.serve === null || ready)) || `${pod.status.phase}`;
      }, 180_000);
      const ips = (pod.status.podIPs as { ip: string }[]).map((p) => p.ip);
      out.push({ name: s.name, node: s.node, addr4: ips.find((a) => !a.includes(':')) as string, addr6: ips.find((a) => a.includes(':')) });
    }
    return out;
  }

  async setReady(pod: string, ready: boolean): Promise<void> {
    await this.kubectl(['exec', pod, '--', 'sh', '-c', ready ? 'rm -f /tmp/unready' : 'touch /tmp/unready']);
    await this.waitFor(`pod ${pod} Ready=${ready}`, async () => {
      const p = await this.api('GET', `/api/v1/namespaces/default/pods/${pod}`);
      return p.status.conditions?.some((x: Obj) => x.type === 'Ready' && x.status === (ready ? 'True' : 'False')) ?? false;
    }, 60_000);
  }

  async startDeletion(pod: string, opts: { serving: boolean }): Promise<void> {
    if (!opts.serving) await this.kubectl(['exec', pod, '--', 'touch', '/tmp/unready']);
    // The container's preStop hook holds it (still serving, readiness still probed) until finishDeletion.
    await this.api('DELETE', `/api/v1/namespaces/default/pods/${pod}`, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 300 });
  }

  async finishDeletion(pod: string): Promise<void> {
    await this.kubectl(['exec', pod, '--', 'touch', '/tmp/stop']).catch(() => undefined);
    await this.api('DELETE', `/api/v1/namespaces/default/pods/${pod}`, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0 }).catch(() => undefined);
    await this.waitFor(`pod ${pod} gone`, async () => {
      try {
        await this.api('GET', `/api/v1/namespaces/default/pods/${pod}`);
        return false;
      } catch (e) {
        return /HTTP 404/.test((e as Error).message);
      }
    }, 120_000);
  }

  async echo(from: From, mode: EchoMode, to: string, spec: EchoSpec = {}): Promise<EchoSummary> {
    const args = [mode, '--to', to, '--count', String(spec.count ?? 1), '--timeout-ms', String(spec.timeoutMs ?? 2_000)];
    if (spec.parallel !== undefined) args.push('--parallel', String(spec.parallel));
    if (spec.reuse) args.push('--reuse');
    if (spec.intervalMs !== undefined) args.push('--interval-ms', String(spec.intervalMs));
    if (spec.localPort !== undefined) args.push('--local-port', String(spec.localPort));
    const stdout = from === 'external'
      ? (await run('docker', ['exec', KIND.external, 'node', `${IN_IMAGE}/echo-client.js`, ...args], { timeoutMs: 300_000 })).stdout
      : await this.kubectl(['exec', from.name, '--', 'node', `${IN_IMAGE}/echo-client.js`, ...args], undefined, 300_000);
    return JSON.parse(stdout) as EchoSummary;
  }

  async externalRoute(prefix: string, viaNode: string): Promise<void> {
    const n = this.nodes.find((x) => x.name === viaNode);
    if (!n) throw new Error(`no node ${viaNode}`);
    const via = prefix.includes(':') ? n.addr6 : n.addr4;
    if (via === undefined) throw new Error(`${viaNode} has no address of ${prefix}'s family`);
    await run('docker', ['exec', KIND.external, 'ip', ...(prefix.includes(':') ? ['-6'] : []), 'route', 'replace', prefix, 'via', via]);
  }

  async httpGet(_from: 'external', url: string): Promise<HttpProbe> {
    const script = `
      const http = require('node:http');
      http.get(${JSON.stringify(url)}, { timeout: 3000, agent: false }, (res) => {
        let body = ''; res.setEncoding('utf8'); res.on('data', (d) => body += d);
        res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
      }).on('error', (e) => console.log(JSON.stringify({ code: e.code ?? e.message })))
        .on('timeout', function () { this.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })); });`;
    return JSON.parse((await run('docker', ['exec', KIND.external, 'node', '-e', script], { timeoutMs: 30_000 })).stdout) as HttpProbe;
  }

  async #agentPod(node: string): Promise<string> {
    const l = await this.api('GET', `/api/v1/namespaces/strait-system/pods?labelSelector=app.kubernetes.io%2Fname%3Dstrait&fieldSelector=spec.nodeName%3D${node}`);
    const name = l.items[0]?.metadata?.name;
    if (!name) throw new Error(`no strait agent pod on ${node}`);
    return name as string;
  }

  async lbList(node: string): Promise<LbList> {
    const pod = await this.#agentPod(node);
    return JSON.parse(await this.kubectl(['exec', '-n', 'strait-system', pod, '-c', 'agent', '--', 'strait', 'lb', 'list', '-o', 'json'])) as LbList;
  }

  async frontends(node: string): Promise<readonly FrontendView[]> {
    return (await this.lbList(node)).frontends;
  }

  async waitFor(what: string, cond: () => Promise<boolean | string> | boolean | string, timeoutMs = 60_000): Promise<number> {
    const t0 = performance.now();
    for (;;) {
      const last = await cond();
      if (last === true) return Math.round(performance.now() - t0);
      if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${typeof last === 'string' ? `: ${last}` : ''}`);
      await sleep(500);
    }
  }
}

/** A Pod running the echo server (or a client that sleeps), readiness from /tmp/unready, held in termination until /tmp/stop. */
function podObject(s: PodSpec): Obj {
  const serve = s.serve === undefined ? { http: 8080, tcp: 9000, udp: 9000 } : s.serve;
  const flags = serve ? [serve.http !== undefined ? `--http ${serve.http}` : '', serve.tcp !== undefined ? `--tcp ${serve.tcp}` : '', serve.udp !== undefined ? `--udp ${serve.udp}` : ''].join(' ') : '';
  const ports = s.containerPorts ?? (serve
    ? [
        ...(serve.http !== undefined ? [{ name: 'http', containerPort: serve.http, protocol: 'TCP' }] : []),
        ...(serve.tcp !== undefined ? [{ name: 'echo-tcp', containerPort: serve.tcp, protocol: 'TCP' }] : []),
        ...(serve.udp !== undefined ? [{ name: 'echo-udp', containerPort: serve.udp, protocol: 'UDP' }] : []),
      ]
    : []);
  const start = s.ready === false ? 'touch /tmp/unready; ' : '';
  const main = serve ? `exec node ${IN_IMAGE}/echo-server.js --name "$POD_NAME" ${flags}` : 'exec sleep infinity';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: s.name, labels: { ...(s.labels ?? {}) } },
    spec: {
      nodeName: s.node,
      terminationGracePeriodSeconds: 300,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      containers: [{
        name: 'echo',
        image: KIND.image,
        imagePullPolicy: 'Never',
        command: ['sh', '-c', `${start}${main}`],
        env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
        ports,
        ...(serve ? { readinessProbe: { exec: { command: ['sh', '-c', 'test ! -e /tmp/unready'] }, periodSeconds: 1, failureThreshold: 1 } } : {}),
        lifecycle: { preStop: { exec: { command: ['sh', '-c', 'while test ! -e /tmp/stop; do sleep 1; done'] } } },
      }],
    },
  };
}

/** docker build from a context of what `make build` made (dist, build, node_modules, package.json). */
async function buildImage(): Promise<void> {
  const ctx = mkdtempSync(join(tmpdir(), 'strait-image-'));
  try {
    for (const part of ['package.json', 'dist', 'build', 'node_modules']) cpSync(join(REPO_ROOT, part), join(ctx, part), { recursive: true, dereference: false });
    cpSync(join(HERE, 'Dockerfile'), join(ctx, 'Dockerfile'));
    const base = process.env['STRAIT_KIND_BASE'];
    await run('docker', ['build', ...(base ? ['--build-arg', `BASE=${base}`] : []), '-t', KIND.image, ctx], { timeoutMs: 1_200_000 });
  } finally {
    rmSync(ctx, { recursive: true, force: true });
  }
}
