// Where the Kubernetes API is and how to authenticate to it: a kubeconfig file
// (its current context) or the in-cluster service account. Read here rather
// than through @kubernetes/client-node, whose KubeConfig pulls in the whole
// generated client (≈ 85 MB of RSS for a module graph the agent needs none of:
// the watch speaks plain JSON over HTTPS).
//
// Supported: server, certificate-authority(-data), insecure-skip-tls-verify,
// tls-server-name, client-certificate(-data) + client-key(-data), token,
// tokenFile, username/password. Credential plugins (exec, auth-provider) are
// refused with a message naming them. Relative paths are relative to the
// kubeconfig's directory, as kubectl reads them.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';

/** The API server and the credentials to present to it. */
export interface ApiConfig {
  /** "https://host:port" (no trailing slash). */
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** A bearer token; tokenFile when it may rotate (read before every request). */
  readonly token?: string;
  readonly tokenFile?: string;
  readonly username?: string;
  readonly password?: string;
  readonly insecureSkipTLSVerify?: boolean;
  readonly tlsServerName?: string;
  /** Where this came from, for messages: the kubeconfig path or "in-cluster". */
  readonly source: string;
}

const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';

export class KubeconfigError extends Error {
  override readonly name = 'KubeconfigError';
  constructor(
    readonly source: string,
    message: string,
  ) {
    super(`kubeconfig ${source}: ${message}`);
  }
}

type Named<T> = { readonly name?: unknown } & { readonly [k: string]: T | unknown };

function findNamed(list: unknown, name: string, what: string, source: string): Record<string, unknown> {
  const entry = (Array.isArray(list) ? (list as Named<unknown>[]) : []).find((e) => e?.name === name);
  const body = entry?.[what];
  if (typeof body !== 'object' || body === null) throw new KubeconfigError(source, `no ${what} named ${JSON.stringify(name)}`);
  return body as Record<string, unknown>;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Loads `path`, or the in-cluster configuration (service account token + CA) when none is given. */
export function loadApiConfig(path?: string): ApiConfig {
  if (path === undefined || path === '') return inCluster();
  let doc: Record<string, unknown>;
  try {
    doc = parseYaml(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e: unknown) {
    throw new KubeconfigError(path, e instanceof Error ? e.message : String(e));
  }
  if (typeof doc !== 'object' || doc === null) throw new KubeconfigError(path, 'not a kubeconfig');
  const contextName = str(doc['current-context']);
  if (contextName === undefined) throw new KubeconfigError(path, 'no current-context');
  const context = findNamed(doc['contexts'], contextName, 'context', path);
  const cluster = findNamed(doc['clusters'], str(context['cluster']) ?? '', 'cluster', path);
  const userName = str(context['user']);
  const user = userName === undefined ? {} : findNamed(doc['users'], userName, 'user', path);
  const base = dirname(path);
  const file = (p: unknown): Buffer | undefined => (str(p) === undefined ? undefined : readFileSync(isAbsolute(p as string) ? (p as string) : resolve(base, p as string)));
  const data = (d: unknown): Buffer | undefined => (str(d) === undefined ? undefined : Buffer.from(d as string, 'base64'));

  const server = str(cluster['server']);
  if (server === undefined) throw new KubeconfigError(path, `cluster of context ${JSON.stringify(contextName)} has no server`);
  for (const plugin of ['exec', 'auth-provider']) {
    if (user[plugin] !== undefined) {
      throw new KubeconfigError(path, `user ${JSON.stringify(userName)}: ${plugin} credentials are not supported (use a token, tokenFile or client certificate)`);
    }
  }
  const tokenFile = str(user['tokenFile']);
  return {
    server: server.replace(/\/+$/, ''),
    ...opt('ca', data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority'])),
    ...opt('cert', data(user['client-certificate-data']) ?? file(user['client-certificate'])),
    ...opt('key', data(user['client-key-data']) ?? file(user['client-key'])),
    ...opt('token', str(user['token'])),
    ...opt('tokenFile', tokenFile === undefined ? undefined : isAbsolute(tokenFile) ? tokenFile : resolve(base, tokenFile)),
    ...opt('username', str(user['username'])),
    ...opt('password', str(user['password'])),
    ...opt('insecureSkipTLSVerify', cluster['insecure-skip-tls-verify'] === true ? true : undefined),
    ...opt('tlsServerName', str(cluster['tls-server-name'])),
    source: path,
  };
}

function opt<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

function inCluster(): ApiConfig {
  const host = process.env['KUBERNETES_SERVICE_HOST'];
  const port = process.env['KUBERNETES_SERVICE_PORT'];
  if (!host || !port) {
    throw new Error('not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): pass --kubeconfig PATH');
  }
  const hostPart = host.includes(':') ? `[${host}]` : host;
  let ca: Buffer;
  try {
    ca = readFileSync(`${SERVICE_ACCOUNT}/ca.crt`);
  } catch (e: unknown) {
    throw new KubeconfigError('in-cluster', `service account CA: ${e instanceof Error ? e.message : String(e)}`);
  }
  // the token is read before each request: bound service account tokens rotate
  return { server: `https://${hostPart}:${port}`, ca, tokenFile: `${SERVICE_ACCOUNT}/token`, source: 'in-cluster' };
}

/** The Authorization header for `config`, if it has credentials other than a client certificate. */
export function authorization(config: ApiConfig): string | undefined {
  if (config.tokenFile !== undefined) {
    try {
      return `Bearer ${readFileSync(config.tokenFile, 'utf8').trim()}`;
    } catch {
      // fall back to a static token, if any (kubectl does the same)
    }
  }
  if (config.token !== undefined) return `Bearer ${config.token}`;
  if (config.username !== undefined) return `Basic ${Buffer.from(`${config.username}:${config.password ?? ''}`).toString('base64')}`;
  return undefined;
}
