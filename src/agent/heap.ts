// The agent's heap policy. V8 grows its young generation (up to 64 MB per
// semi-space on a machine this size) whenever the bytes that survive its
// scavenges add up to more than the young generation holds — which is what a
// full sync does by design: it builds the state the agent keeps until the
// next one. Grown, the young generation never shrinks back while the agent
// runs, and two semi-spaces of 64 MB are most of the agent's RSS. Keeping it
// at the size it has when the agent starts costs nothing measurable and makes
// the first sync faster (bench/README.md, "Agent sync": cold start and peak
// RSS with and without). V8 reads this flag each time it would grow the young
// generation, so setting it at run time takes effect; it changes nothing else.
import { setFlagsFromString } from 'node:v8';

let applied = false;

/** Keeps V8's young generation at its current size from now on (once per process). */
export function applyAgentHeapPolicy(): void {
  if (applied) return;
  applied = true;
  setFlagsFromString('--semi-space-growth-factor=1');
}
