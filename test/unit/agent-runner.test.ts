import { describe, expect, it } from 'vitest';
import { BoundedFrequencyRunner, type RunOutcome } from '../../src/agent/bounded-frequency-runner.js';
import type { Clock } from '../../src/agent/clock.js';

// A clock the test moves by hand; timers fire in time order, and promises settle
// between timers so that the runner sees its function finish.
class FakeClock implements Clock {
  #now = 1_000_000;
  #seq = 0;
  #timers: { at: number; seq: number; fire: () => void; active: boolean }[] = [];

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fire: () => void): () => void {
    const timer = { at: this.#now + ms, seq: this.#seq++, fire, active: true };
    this.#timers.push(timer);
    return () => {
      timer.active = false;
    };
  }

  get pendingTimers(): number {
    return this.#timers.filter((t) => t.active).length;
  }

  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      this.#timers = this.#timers.filter((t) => t.active);
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#timers[0];
      if (next === undefined || next.at > end) break;
      this.#now = Math.max(this.#now, next.at);
      next.active = false;
      next.fire();
    }
    this.#now = end;
    await settle();
  }
}

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Harness {
  readonly clock: FakeClock;
  readonly runner: BoundedFrequencyRunner;
  /** Start times of runs, relative to the test's t0. */
  readonly starts: number[];
  readonly outcomes: RunOutcome[];
  readonly t0: number;
  /** Concurrent runs seen at most. */
  maxConcurrent: number;
}

interface HarnessOptions {
  minInterval?: number;
  maxInterval?: number;
  retryInterval?: number;
  maxRetryInterval?: number;
  /** How long each run takes (fake time) — by default it finishes at once. */
  durationMs?: number;
  /** Runs (0-based) that fail. */
  failing?: ReadonlySet<number>;
  /** Called inside each run, before it finishes. */
  during?: (h: Harness, index: number) => void;
}

function harness(options: HarnessOptions = {}): Harness {
  const clock = new FakeClock();
  let concurrent = 0;
  let runs = 0;
  const h: Harness = {
    clock,
    t0: clock.now(),
    starts: [],
    outcomes: [],
    maxConcurrent: 0,
    runner: undefined as unknown as BoundedFrequencyRunner,
  };
  const fn = async (): Promise<void> => {
    const index = runs++;
    concurrent += 1;
    h.maxConcurrent = Math.max(h.maxConcurrent, concurrent);
    h.starts.push(clock.now() - h.t0);
    try {
      options.during?.(h, index);
      if (options.durationMs !== undefined) {
        await new Promise<void>((resolve) => clock.setTimer(options.durationMs ?? 0, resolve));
      }
      if (options.failing?.has(index)) throw new Error(`run ${index} failed`);
    } finally {
      concurrent -= 1;
    }
  };
  (h as { runner: BoundedFrequencyRunner }).runner = new BoundedFrequencyRunner({
    name: 'test',
    fn,
    minInterval: options.minInterval ?? 1000,
    maxInterval: options.maxInterval ?? 60_000,
    ...(options.retryInterval !== undefined ? { retryInterval: options.retryInterval } : {}),
    ...(options.maxRetryInterval !== undefined ? { maxRetryInterval: options.maxRetryInterval } : {}),
    clock,
    onRun: (o) => h.outcomes.push(o),
  });
  return h;
}

describe('BoundedFrequencyRunner', () => {
  it('does not run before start; a request made before start runs once started', async () => {
    const h = harness();
    h.runner.run();
    await h.clock.advance(5000);
    expect(h.starts).toEqual([]);
    h.runner.start();
    await h.clock.advance(0);
    expect(h.starts).toEqual([5000]);
  });

  it('does not run on start alone (waits for run() or the periodic run)', async () => {
    const h = harness({ maxInterval: 10_000 });
    h.runner.start();
    await h.clock.advance(9_999);
    expect(h.starts).toEqual([]);
  });

  it('merges a burst of requests in one tick into one run', async () => {
    const h = harness();
    h.runner.start();
    for (let i = 0; i < 100; i++) h.runner.run();
    await h.clock.advance(0);
    expect(h.starts).toEqual([0]);
    await h.clock.advance(30_000);
    expect(h.starts).toEqual([0]);
  });

  it('honours minInterval: requests within it merge into one run at its end', async () => {
    const h = harness({ minInterval: 1000 });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(100);
    h.runner.run();
    await h.clock.advance(300);
    h.runner.run();
    h.runner.run();
    await h.clock.advance(5000);
    expect(h.starts).toEqual([0, 1000]);
  });

  it('measures minInterval from the end of a run to the start of the next', async () => {
    const h = harness({ minInterval: 1000, durationMs: 500 });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(100);
    h.runner.run(); // during the run
    await h.clock.advance(5000);
    expect(h.starts).toEqual([0, 1500]);
  });

  it('runs at once when the last run ended more than minInterval ago', async () => {
    const h = harness({ minInterval: 1000 });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(2500);
    h.runner.run();
    await h.clock.advance(0);
    expect(h.starts).toEqual([0, 2500]);
  });

  it('runs every maxInterval when nothing asks (periodic full reconcile)', async () => {
    const h = harness({ minInterval: 1000, maxInterval: 10_000 });
    h.runner.start();
    await h.clock.advance(35_000);
    expect(h.starts).toEqual([10_000, 20_000, 30_000]);
    expect(h.outcomes.map((o) => o.trigger)).toEqual(['periodic', 'periodic', 'periodic']);
  });

  it('restarts the periodic countdown after every run', async () => {
    const h = harness({ minInterval: 1000, maxInterval: 10_000 });
    h.runner.start();
    await h.clock.advance(4000);
    h.runner.run();
    await h.clock.advance(12_000);
    expect(h.starts).toEqual([4000, 14_000]);
    expect(h.outcomes.map((o) => o.trigger)).toEqual(['requested', 'periodic']);
  });

  it.each([
    { name: 'doubles the retry delay after each consecutive failure', failing: [0, 1, 2], starts: [0, 1000, 3000, 7000] },
    { name: 'caps the retry delay at maxRetryInterval', failing: [0, 1, 2, 3, 4], starts: [0, 1000, 3000, 7000, 12_000, 17_000] },
    { name: 'stops retrying after a success', failing: [0], starts: [0, 1000] },
  ])('retries a failed run: $name', async ({ failing, starts }) => {
    const h = harness({ minInterval: 500, maxInterval: 60_000, retryInterval: 1000, maxRetryInterval: 5000, failing: new Set(failing) });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(20_000);
    expect(h.starts).toEqual(starts);
    expect(h.outcomes.at(-1)?.ok).toBe(true);
    expect(h.runner.status().failures).toBe(0);
  });

  it('reports failures with their count, error and retry delay', async () => {
    const h = harness({ minInterval: 0, retryInterval: 1000, failing: new Set([0, 1]) });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    const first = h.outcomes[0];
    expect(first).toMatchObject({ ok: false, trigger: 'requested', failures: 1, retryInMs: 1000 });
    expect(first?.ok === false && first.error instanceof Error ? first.error.message : '').toBe('run 0 failed');
    expect(h.runner.status()).toMatchObject({ failures: 1, running: false, nextRunAt: h.t0 + 1000 });
    await h.clock.advance(1000);
    expect(h.outcomes[1]).toMatchObject({ ok: false, trigger: 'retry', failures: 2, retryInMs: 2000 });
  });

  it('retries no sooner than minInterval', async () => {
    const h = harness({ minInterval: 5000, retryInterval: 1000, failing: new Set([0]) });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([0, 5000]);
  });

  it('runs a change that arrives during a failing run after minInterval, not after the backoff', async () => {
    const h = harness({
      minInterval: 1000,
      retryInterval: 8000,
      durationMs: 100,
      failing: new Set([0]),
    });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(50);
    h.runner.run();
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([0, 1100]);
  });

  it('never runs concurrently: a request during a slow run waits for it', async () => {
    const h = harness({ minInterval: 0, durationMs: 3000 });
    h.runner.start();
    h.runner.run();
    for (let t = 0; t < 2900; t += 100) {
      await h.clock.advance(100);
      h.runner.run();
    }
    await h.clock.advance(10_000);
    expect(h.maxConcurrent).toBe(1);
    expect(h.starts).toEqual([0, 3000]);
  });

  it('merges a run() made by the function itself into one follow-up run', async () => {
    const h = harness({ minInterval: 1000, during: (x, i) => i === 0 && x.runner.run() });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([0, 1000]);
    expect(h.maxConcurrent).toBe(1);
  });

  it('retryAfter schedules a run, the earliest of several wins, minInterval still holds', async () => {
    const h = harness({ minInterval: 1000 });
    h.runner.start();
    h.runner.retryAfter(5000);
    h.runner.retryAfter(3000);
    h.runner.retryAfter(4000);
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([3000]);
    expect(h.outcomes[0]?.trigger).toBe('retry');
    h.runner.retryAfter(0);
    await h.clock.advance(0);
    expect(h.starts).toEqual([3000, 10_000]);
    h.runner.retryAfter(0);
    await h.clock.advance(5000);
    expect(h.starts).toEqual([3000, 10_000, 11_000]);
  });

  it('stop waits for the run in progress, then nothing runs and no timer is left', async () => {
    const h = harness({ minInterval: 0, maxInterval: 1000, durationMs: 500 });
    const loop = h.runner.loop();
    let loopEnded = false;
    void loop.then(() => (loopEnded = true));
    h.runner.run();
    await h.clock.advance(100);
    let stopped = false;
    const stop = h.runner.stop().then(() => (stopped = true));
    await h.clock.advance(100);
    expect(stopped).toBe(false);
    expect(loopEnded).toBe(false);
    await h.clock.advance(300);
    await stop;
    expect(stopped).toBe(true);
    expect(loopEnded).toBe(true);
    h.runner.run();
    h.runner.retryAfter(0);
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([0]);
    expect(h.clock.pendingTimers).toBe(0);
    expect(h.runner.status().state).toBe('stopped');
  });

  it('keeps one timer at a time however many requests arrive', async () => {
    const h = harness({ minInterval: 1000, maxInterval: 60_000 });
    h.runner.start();
    h.runner.run();
    await h.clock.advance(0);
    for (let i = 0; i < 50; i++) {
      h.runner.run();
      h.runner.retryAfter(i * 10);
    }
    expect(h.clock.pendingTimers).toBe(1);
  });

  it('rejects maxInterval < minInterval', () => {
    expect(
      () => new BoundedFrequencyRunner({ name: 'bad', fn: async () => {}, minInterval: 10, maxInterval: 5 }),
    ).toThrow(RangeError);
  });
});
