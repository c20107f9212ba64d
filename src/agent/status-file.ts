// What the agent knows that the maps cannot hold (skipped Services and why,
// model errors, the last sync), written after every sync beside the bpf root's
// name so the read-only CLI can show it with the agent stopped.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export const DEFAULT_STATE_DIR = '/run/strait';

export interface AgentStatus {
  readonly version: 1;
  readonly pid: number;
  readonly nodeName: string;
  readonly bpfRoot: string;
  readonly source: 'kubernetes' | 'manifests' | 'store';
  /** ISO time of the last successful sync, or null before the first. */
  readonly lastSync: string | null;
  readonly lastSyncDurationMs: number | null;
  readonly lastError: string | null;
  readonly services: number;
  readonly frontends: number;
  readonly backends: number;
  readonly skipped: readonly { service: string; reason: string; message: string }[];
  readonly errors: readonly { object: string; field: string; message: string }[];
}

/** /run/strait/<basename of bpf root>.status.json: one file per agent (lab nodes differ by root). */
export function statusFilePath(bpfRoot: string, stateDir: string = DEFAULT_STATE_DIR): string {
  return join(stateDir, `${basename(bpfRoot)}.status.json`);
}

/** Atomic replace: readers never see half a file. */
export function writeStatusFile(path: string, status: AgentStatus): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(status, null, 2)}\n`);
  renameSync(tmp, path);
}

export function readStatusFile(path: string): AgentStatus | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as AgentStatus;
    return parsed.version === 1 ? parsed : undefined;
  } catch {
    return undefined;
  }
}
