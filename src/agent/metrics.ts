// A minimal Prometheus registry: counters, gauges and histograms with labels,
// rendered in the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/). No dependency.
// Metrics read from elsewhere at scrape time (conntrack entries, the datapath's
// per-CPU counters) are filled in by collectors that run before each render.

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Label values by label name; exactly the metric's label names. */
export type Labels<L extends string> = Readonly<Record<L, string>>;

export interface MetricOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  /** Upper bounds, strictly increasing; +Inf is implied. Default DEFAULT_BUCKETS. */
  readonly buckets?: readonly number[];
}

/** Prometheus client libraries' default buckets (seconds). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** `count` buckets: start, start·factor, start·factor², … */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !(factor > 1) || !(count >= 1)) throw new RangeError('exponentialBuckets: start > 0, factor > 1, count >= 1');
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

/** `count` buckets: start, start+width, … */
export function linearBuckets(start: number, width: number, count: number): number[] {
  if (!(width > 0) || !(count >= 1)) throw new RangeError('linearBuckets: width > 0, count >= 1');
  return Array.from({ length: count }, (_, i) => start + width * i);
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type MetricType = 'counter' | 'gauge' | 'histogram';

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  render(out: string[]): void;
}

/**
 * Programming errors (a bad name, labels that do not match) throw: they are
 * bugs to fix, not outcomes to handle.
 */
abstract class Metric<L extends string> implements Family {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  readonly labelNames: readonly L[];

  constructor(options: MetricOptions<L>, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(options.name)) throw new Error(`invalid metric name ${JSON.stringify(options.name)}`);
    const labelNames = options.labelNames ?? [];
    const seen = new Set<string>();
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || reserved.includes(l) || seen.has(l)) {
        throw new Error(`${options.name}: invalid or duplicate label name ${JSON.stringify(l)}`);
      }
      seen.add(l);
    }
    this.name = options.name;
    this.help = options.help;
    this.labelNames = labelNames;
  }

  /** Label values in labelNames order, checked. */
  protected values(labels: Labels<L> | undefined): string[] {
    const given = labels ?? ({} as Labels<L>);
    const keys = Object.keys(given);
    if (keys.length !== this.labelNames.length || !this.labelNames.every((l) => typeof given[l] === 'string')) {
      throw new Error(`${this.name}: labels {${keys.join(',')}} do not match {${this.labelNames.join(',')}}`);
    }
    return this.labelNames.map((l) => given[l]);
  }

  protected labelText(values: readonly string[], extra?: string): string {
    const pairs = this.labelNames.map((l, i) => `${l}="${escapeLabelValue(values[i] ?? '')}"`);
    if (extra !== undefined) pairs.push(extra);
    return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
  }

  abstract render(out: string[]): void;
}

/** A value per label set (counters and gauges). */
abstract class ScalarMetric<L extends string> extends Metric<L> {
  readonly #series = new Map<string, { values: string[]; value: number }>();

  protected series(labels: Labels<L> | undefined): { values: string[]; value: number } {
    const values = this.values(labels);
    const key = JSON.stringify(values);
    let s = this.#series.get(key);
    if (s === undefined) this.#series.set(key, (s = { values, value: 0 }));
    return s;
  }

  /** The current value (0 if never set). */
  get(labels?: Labels<L>): number {
    return this.#series.get(JSON.stringify(this.values(labels)))?.value ?? 0;
  }

  /** Forgets every label set (e.g. before a collector writes the current ones). */
  reset(): void {
    this.#series.clear();
  }

  /** Forgets one label set. */
  remove(labels: Labels<L>): void {
    this.#series.delete(JSON.stringify(this.values(labels)));
  }

  render(out: string[]): void {
    // A metric without labels always has its one series, even before first use.
    if (this.labelNames.length === 0 && this.#series.size === 0) this.series(undefined);
    for (const s of sortedSeries(this.#series)) out.push(`${this.name}${this.labelText(s.values)} ${formatNumber(s.value)}`);
  }
}

export class Counter<L extends string = never> extends ScalarMetric<L> {
  readonly type = 'counter';

  inc(labels?: Labels<L>): void {
    this.add(1, labels);
  }

  add(amount: number, labels?: Labels<L>): void {
    if (!(amount >= 0)) throw new Error(`${this.name}: a counter only goes up (add ${amount})`);
    this.series(labels).value += amount;
  }

  /**
   * Sets the total of a counter mirrored from a monotonic source outside the
   * process (the datapath's per-CPU counters), in a collector.
   */
  set(total: number, labels?: Labels<L>): void {
    this.series(labels).value = total;
  }
}

export class Gauge<L extends string = never> extends ScalarMetric<L> {
  readonly type = 'gauge';

  set(value: number, labels?: Labels<L>): void {
    this.series(labels).value = value;
  }

  inc(labels?: Labels<L>, amount = 1): void {
    this.series(labels).value += amount;
  }

  dec(labels?: Labels<L>, amount = 1): void {
    this.series(labels).value -= amount;
  }

  /** Sets the gauge to clock time in seconds (for *_timestamp_seconds). */
  setToTime(epochMs: number, labels?: Labels<L>): void {
    this.set(epochMs / 1000, labels);
  }
}

interface HistogramSeries {
  readonly values: string[];
  /** Per bucket (not cumulative), then +Inf. */
  readonly counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends Metric<L> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  readonly #series = new Map<string, HistogramSeries>();

  constructor(options: HistogramOptions<L>) {
    super(options, ['le']);
    const buckets = [...(options.buckets ?? DEFAULT_BUCKETS)].filter((b) => b !== Infinity);
    if (buckets.length === 0 || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= (buckets[i - 1] ?? -Infinity)))) {
      throw new Error(`${options.name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = buckets;
  }

  observe(value: number, labels?: Labels<L>): void {
    const values = this.values(labels);
    const key = JSON.stringify(values);
    let s = this.#series.get(key);
    if (s === undefined) {
      s = { values, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    let i = this.buckets.findIndex((b) => value <= b);
    if (i < 0) i = this.buckets.length;
    s.counts[i] = (s.counts[i] ?? 0) + 1;
    s.sum += value;
    s.count += 1;
  }

  /** Observes the seconds since `startMs` (a clock.now() value) at `endMs`. */
  observeDuration(startMs: number, endMs: number, labels?: Labels<L>): void {
    this.observe((endMs - startMs) / 1000, labels);
  }

  /** Count and sum of one label set. */
  get(labels?: Labels<L>): { count: number; sum: number } {
    const s = this.#series.get(JSON.stringify(this.values(labels)));
    return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
  }

  reset(): void {
    this.#series.clear();
  }

  render(out: string[]): void {
    // A histogram without labels always has its one series, even before first use.
    if (this.labelNames.length === 0 && this.#series.size === 0) {
      this.#series.set('[]', { values: [], counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 });
    }
    for (const s of sortedSeries(this.#series)) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i] ?? 0;
        out.push(`${this.name}_bucket${this.labelText(s.values, `le="${formatNumber(b)}"`)} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${this.labelText(s.values, 'le="+Inf"')} ${s.count}`);
      out.push(`${this.name}_sum${this.labelText(s.values)} ${formatNumber(s.sum)}`);
      out.push(`${this.name}_count${this.labelText(s.values)} ${s.count}`);
    }
  }
}

export class Registry {
  readonly #families = new Map<string, Family>();
  readonly #collectors: (() => void)[] = [];

  counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
    return this.#register(new Counter<L>(options));
  }

  gauge<L extends string = never>(options: MetricOptions<L>): Gauge<L> {
    return this.#register(new Gauge<L>(options));
  }

  histogram<L extends string = never>(options: HistogramOptions<L>): Histogram<L> {
    return this.#register(new Histogram<L>(options));
  }

  /**
   * Runs `collect` before every render, to read values kept elsewhere (BPF
   * maps) into gauges and mirrored counters. A collector that throws fails the
   * render (the scrape then gets a 500 and the error is logged).
   */
  addCollector(collect: () => void): void {
    this.#collectors.push(collect);
  }

  /** Every metric in registration order, in the text exposition format 0.0.4. */
  render(): string {
    for (const collect of this.#collectors) collect();
    const out: string[] = [];
    for (const family of this.#families.values()) {
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.type}`);
      family.render(out);
    }
    return out.length === 0 ? '' : out.join('\n') + '\n';
  }

  #register<M extends Family>(metric: M): M {
    const clashes = [metric.name, ...(metric.type === 'histogram' ? suffixed(metric.name) : [])];
    for (const existing of this.#families.values()) {
      const taken = [existing.name, ...(existing.type === 'histogram' ? suffixed(existing.name) : [])];
      if (clashes.some((n) => taken.includes(n))) throw new Error(`metric ${metric.name} clashes with ${existing.name}`);
    }
    this.#families.set(metric.name, metric);
    return metric;
  }
}

function suffixed(name: string): string[] {
  return [`${name}_bucket`, `${name}_sum`, `${name}_count`];
}

function sortedSeries<S extends { values: string[] }>(series: ReadonlyMap<string, S>): S[] {
  return [...series.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
}

/** Go's strconv-compatible spellings of the special values. */
export function formatNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
