// Runs the sync function when asked, but never more often than minInterval,
// never concurrently, and at least every maxInterval — kube-proxy's
// BoundedFrequencyRunner (pkg/util/async/bounded_frequency_runner.go), with an
// injected clock and an async function. Events only call run(); the runner
// merges them. A failed run is retried with exponential backoff.
//
// Intervals are measured from the end of one run to the start of the next, as
// kube-proxy documents them ("at least minInterval between them, from
// completion to next start").
import { systemClock, type Clock } from './clock.js';

export interface BoundedFrequencyRunnerOptions {
  /** For logs: "sync". */
  readonly name: string;
  /** The work. A rejection counts as a failed run and schedules a retry. */
  readonly fn: () => Promise<void>;
  /** Least time between runs, ms (kube-proxy --min-sync-period). 0 = no limit. */
  readonly minInterval: number;
  /** Most time between runs, ms: a periodic run (full reconcile, --sync-period). Infinity = none. */
  readonly maxInterval: number;
  /** Delay before retrying a failed run, ms; doubles with each consecutive failure. Default max(minInterval, 1000). */
  readonly retryInterval?: number;
  /** Cap on the retry delay, ms. Default maxInterval (when finite), else 60000. */
  readonly maxRetryInterval?: number;
  readonly clock?: Clock;
  /** Told about each finished run (for logs and metrics). Must not throw. */
  readonly onRun?: (outcome: RunOutcome) => void;
}

/** What started a run. */
export type RunTrigger = 'requested' | 'retry' | 'periodic';

export type RunOutcome =
  | {
      readonly ok: true;
      readonly trigger: RunTrigger;
      /** clock.now() at the start. */
      readonly startedAt: number;
      readonly durationMs: number;
    }
  | {
      readonly ok: false;
      readonly trigger: RunTrigger;
      readonly startedAt: number;
      readonly durationMs: number;
      readonly error: unknown;
      /** Consecutive failed runs, this one included. */
      readonly failures: number;
      /** When the retry is due (it still honours minInterval). */
      readonly retryInMs: number;
    };

export interface RunnerStatus {
  readonly state: 'new' | 'started' | 'stopped';
  /** A run is in progress. */
  readonly running: boolean;
  /** Consecutive failed runs (0 after a success). */
  readonly failures: number;
  readonly lastError: unknown;
  /** clock.now() at the start / end of the last finished run. */
  readonly lastRunStartedAt: number | undefined;
  readonly lastRunEndedAt: number | undefined;
  /** When the next run is due (requested, retry or periodic), if known. */
  readonly nextRunAt: number | undefined;
}

interface Request {
  readonly at: number;
  readonly trigger: 'requested' | 'retry';
}

export class BoundedFrequencyRunner {
  readonly name: string;
  readonly #fn: () => Promise<void>;
  readonly #minInterval: number;
  readonly #maxInterval: number;
  readonly #retryInterval: number;
  readonly #maxRetryInterval: number;
  readonly #clock: Clock;
  readonly #onRun: ((outcome: RunOutcome) => void) | undefined;

  #state: RunnerStatus['state'] = 'new';
  /** Set synchronously before fn is called, so that fn calling run() cannot start a second run. */
  #running = false;
  /** The current or last run, for stop() to wait on. */
  #inFlight: Promise<void> | undefined;
  /** The earliest pending request (run() or a retry); undefined = none. */
  #request: Request | undefined;
  #periodicAt = Infinity;
  #lastStart: number | undefined;
  #lastEnd: number | undefined;
  #failures = 0;
  #lastError: unknown = undefined;
  #timer: { readonly at: number; readonly cancel: () => void } | undefined;
  #stopped: (() => void)[] = [];

  constructor(options: BoundedFrequencyRunnerOptions) {
    const { name, minInterval, maxInterval } = options;
    if (!(minInterval >= 0)) throw new RangeError(`${name}: minInterval ${minInterval} must be >= 0`);
    if (!(maxInterval >= minInterval)) {
      throw new RangeError(`${name}: maxInterval (${maxInterval}) must be >= minInterval (${minInterval})`);
    }
    this.name = name;
    this.#fn = options.fn;
    this.#minInterval = minInterval;
    this.#maxInterval = maxInterval;
    this.#retryInterval = options.retryInterval ?? Math.max(minInterval, 1000);
    this.#maxRetryInterval =
      options.maxRetryInterval ?? (Number.isFinite(maxInterval) ? Math.max(maxInterval, this.#retryInterval) : 60_000);
    if (!(this.#retryInterval > 0)) throw new RangeError(`${name}: retryInterval must be > 0`);
    this.#clock = options.clock ?? systemClock;
    this.#onRun = options.onRun;
  }

  /**
   * Starts the loop: requested runs happen from now on, and a periodic run
   * maxInterval from now unless something runs before. Does not run by itself:
   * call run() once the inputs are ready, as kube-proxy does after its initial lists.
   */
  start(): void {
    if (this.#state !== 'new') return;
    this.#state = 'started';
    this.#periodicAt = this.#clock.now() + this.#maxInterval;
    this.#arm();
  }

  /** start(), and a promise that settles once stop() has been called and the last run ended. */
  loop(): Promise<void> {
    this.start();
    if (this.#state === 'stopped' && !this.#running) return Promise.resolve();
    return new Promise((resolve) => this.#stopped.push(resolve));
  }

  /** Stops for good: no new runs; resolves when a run in progress has ended. */
  async stop(): Promise<void> {
    if (this.#state !== 'stopped') {
      this.#state = 'stopped';
      this.#cancelTimer();
    }
    if (this.#inFlight !== undefined) await this.#inFlight;
    this.#notifyStopped();
  }

  /**
   * Asks for a run as soon as allowed. Requests while a run is in progress or
   * within minInterval of the last run merge into one run. Before start(), the
   * request waits for start().
   */
  run(): void {
    this.#requestAt(this.#clock.now(), 'requested');
  }

  /** Ensures a run no later than `ms` from now (still no sooner than minInterval allows). */
  retryAfter(ms: number): void {
    this.#requestAt(this.#clock.now() + Math.max(0, ms), 'retry');
  }

  status(): RunnerStatus {
    return {
      state: this.#state,
      running: this.#running,
      failures: this.#failures,
      lastError: this.#lastError,
      lastRunStartedAt: this.#lastStart,
      lastRunEndedAt: this.#lastEnd,
      nextRunAt: this.#state === 'started' && !this.#running ? finite(this.#dueAt()) : undefined,
    };
  }

  #requestAt(at: number, trigger: Request['trigger']): void {
    if (this.#state === 'stopped') return;
    if (this.#request === undefined || at < this.#request.at) this.#request = { at, trigger };
    this.#arm();
  }

  /** When the next run may start: the earliest wish, held back by minInterval. */
  #dueAt(): number {
    const wanted = Math.min(this.#request?.at ?? Infinity, this.#periodicAt);
    const earliest = this.#lastEnd === undefined ? -Infinity : this.#lastEnd + this.#minInterval;
    return Math.max(wanted, earliest);
  }

  /** Keeps exactly one timer, set for the next due run (none while a run is in progress). */
  #arm(): void {
    if (this.#state !== 'started' || this.#running) {
      this.#cancelTimer();
      return;
    }
    const due = this.#dueAt();
    if (this.#timer !== undefined && this.#timer.at === due) return;
    this.#cancelTimer();
    if (!Number.isFinite(due)) return;
    const cancel = this.#clock.setTimer(Math.max(0, due - this.#clock.now()), () => {
      this.#timer = undefined;
      this.#fire();
    });
    this.#timer = { at: due, cancel };
  }

  #cancelTimer(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  #fire(): void {
    if (this.#state !== 'started' || this.#running) return;
    const now = this.#clock.now();
    if (now < this.#dueAt()) {
      this.#arm(); // early wake-up (clock adjustments): wait for the rest
      return;
    }
    const request = this.#request;
    const trigger: RunTrigger = request !== undefined && request.at <= now ? request.trigger : 'periodic';
    // A run that starts now covers every request made so far.
    this.#request = undefined;
    this.#lastStart = now;
    this.#running = true;
    this.#inFlight = this.#execute(trigger, now);
  }

  async #execute(trigger: RunTrigger, startedAt: number): Promise<void> {
    let outcome: RunOutcome;
    try {
      await this.#fn();
      const end = this.#clock.now();
      this.#failures = 0;
      this.#lastError = undefined;
      this.#finish(end);
      outcome = { ok: true, trigger, startedAt, durationMs: end - startedAt };
    } catch (error: unknown) {
      const end = this.#clock.now();
      this.#failures += 1;
      this.#lastError = error;
      this.#finish(end);
      const retryInMs = Math.min(this.#retryInterval * 2 ** (this.#failures - 1), this.#maxRetryInterval);
      if (this.#state !== 'stopped' && (this.#request === undefined || end + retryInMs < this.#request.at)) {
        this.#request = { at: end + retryInMs, trigger: 'retry' };
      }
      outcome = { ok: false, trigger, startedAt, durationMs: end - startedAt, error, failures: this.#failures, retryInMs };
    }
    this.#running = false;
    try {
      this.#onRun?.(outcome);
    } finally {
      this.#arm();
      if (this.#state === 'stopped') this.#notifyStopped();
    }
  }

  #finish(end: number): void {
    this.#lastEnd = end;
    this.#periodicAt = end + this.#maxInterval;
  }

  #notifyStopped(): void {
    if (this.#state !== 'stopped' || this.#running) return;
    const waiters = this.#stopped;
    this.#stopped = [];
    for (const resolve of waiters) resolve();
  }
}

function finite(n: number): number | undefined {
  return Number.isFinite(n) ? n : undefined;
}
