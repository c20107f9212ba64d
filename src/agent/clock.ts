// Time as the agent's runtime pieces see it: injected, so that unit tests drive
// the runner, health and debouncing with a fake clock instead of sleeping.

export interface Clock {
  /**
   * Milliseconds since the Unix epoch, never going backwards: intervals are
   * measured with it, and health reports print it as a time.
   */
  now(): number;
  /** Calls `callback` once, `ms` milliseconds from now; returns a function that cancels it. */
  setTimer(ms: number, callback: () => void): () => void;
}

/** setTimeout's limit: longer delays fire at once (with a warning) unless split. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * The real clock: monotonic time expressed as epoch milliseconds (the process
 * start's wall time plus the monotonic time since), so that an NTP step cannot
 * stall the runner or fake a health timeout; and setTimeout (setImmediate for a
 * timer due now). Logs use Date.now.
 */
export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimer(ms, callback) {
    // setTimeout waits at least 1 ms; a timer due now runs after this turn's I/O instead
    if (ms <= 0) {
      const immediate = setImmediate(callback);
      return () => clearImmediate(immediate);
    }
    let handle: NodeJS.Timeout | undefined;
    const arm = (remaining: number): void => {
      const step = Math.min(Math.max(0, remaining), MAX_TIMEOUT_MS);
      handle = setTimeout(() => {
        if (remaining > MAX_TIMEOUT_MS) arm(remaining - step);
        else callback();
      }, step);
    };
    arm(ms);
    return () => clearTimeout(handle);
  },
};
