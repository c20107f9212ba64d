// The programs the lab runs: the compiled `strait` CLI (agents) and the src/lab scripts (echo
// server and client), with the Node that runs them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT } from './control-plane.js';

/** The Node that runs the lab's programs: the repository's own (package "node") when installed. */
export function labNodeBinary(): string {
  const local = join(REPO_ROOT, 'node_modules', 'node', 'bin', 'node');
  return existsSync(local) ? local : process.execPath;
}

/** The compiled CLI the agents run (make ts). */
export const STRAIT_MAIN = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

/**
 * argv (after the node binary) that runs a src/lab script: the compiled .js next to this module
 * when running compiled, else the .ts through type stripping (Node ≥ 22.6).
 */
export function labScriptArgs(script: 'echo-server' | 'echo-client' | 'netns-relay'): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return [join(here, '..', `${script}.js`)];
  return ['--experimental-strip-types', '--disable-warning=ExperimentalWarning', join(here, '..', `${script}.ts`)];
}

/** The environment of lab children: ours without a test runner's NODE_OPTIONS. */
export function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}
