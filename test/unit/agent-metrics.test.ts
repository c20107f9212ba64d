// The Prometheus registry: text exposition format 0.0.4, byte for byte.
import { describe, expect, it } from 'vitest';
import { exponentialBuckets, formatNumber, linearBuckets, Registry } from '../../src/agent/metrics.js';

describe('Registry.render', () => {
  it('writes HELP and TYPE, then the samples, in registration order', () => {
    const r = new Registry();
    r.counter({ name: 'strait_api_errors_total', help: 'API errors.' }).add(2);
    r.gauge({ name: 'strait_services', help: 'Services.' }).set(12);
    expect(r.render()).toBe(
      '# HELP strait_api_errors_total API errors.\n# TYPE strait_api_errors_total counter\nstrait_api_errors_total 2\n' +
        '# HELP strait_services Services.\n# TYPE strait_services gauge\nstrait_services 12\n',
    );
  });

  it('shows an unlabelled metric as 0 before first use, a labelled one with no samples', () => {
    const r = new Registry();
    r.counter({ name: 'a_total', help: 'A.' });
    r.counter({ name: 'b_total', help: 'B.', labelNames: ['x'] });
    expect(r.render()).toBe('# HELP a_total A.\n# TYPE a_total counter\na_total 0\n# HELP b_total B.\n# TYPE b_total counter\n');
  });

  it('renders label sets sorted, with escaped values', () => {
    const r = new Registry();
    const c = r.counter({ name: 'strait_datapath_packets_total', help: 'Packets.', labelNames: ['reason', 'direction'] });
    c.inc({ reason: 'no_backend', direction: 'ingress' });
    c.add(5, { reason: 'forwarded', direction: 'egress' });
    c.inc({ reason: 'weird "one"\\\n', direction: 'ingress' });
    expect(r.render().split('\n').slice(2, -1)).toEqual([
      'strait_datapath_packets_total{reason="forwarded",direction="egress"} 5',
      'strait_datapath_packets_total{reason="no_backend",direction="ingress"} 1',
      'strait_datapath_packets_total{reason="weird \\"one\\"\\\\\\n",direction="ingress"} 1',
    ]);
  });

  it('escapes backslashes and newlines in HELP', () => {
    const r = new Registry();
    r.gauge({ name: 'g', help: 'a\\b\nc' });
    expect(r.render()).toContain('# HELP g a\\\\b\\nc\n');
  });

  it('renders histograms with cumulative buckets, +Inf, sum and count', () => {
    const r = new Registry();
    const h = r.histogram({ name: 'strait_sync_duration_seconds', help: 'Sync duration.', buckets: [0.01, 0.1, 1] });
    for (const v of [0.005, 0.05, 0.05, 0.5, 5]) h.observe(v);
    expect(r.render()).toBe(
      [
        '# HELP strait_sync_duration_seconds Sync duration.',
        '# TYPE strait_sync_duration_seconds histogram',
        'strait_sync_duration_seconds_bucket{le="0.01"} 1',
        'strait_sync_duration_seconds_bucket{le="0.1"} 3',
        'strait_sync_duration_seconds_bucket{le="1"} 4',
        'strait_sync_duration_seconds_bucket{le="+Inf"} 5',
        'strait_sync_duration_seconds_sum 5.605',
        'strait_sync_duration_seconds_count 5',
        '',
      ].join('\n'),
    );
    expect(h.get()).toEqual({ count: 5, sum: 5.605 });
  });

  it('puts le after the other labels of a histogram', () => {
    const r = new Registry();
    const h = r.histogram({ name: 'h', help: 'H.', labelNames: ['kind'], buckets: [1] });
    h.observe(2, { kind: 'full' });
    expect(r.render().split('\n').slice(2, -1)).toEqual(['h_bucket{kind="full",le="1"} 0', 'h_bucket{kind="full",le="+Inf"} 1', 'h_sum{kind="full"} 2', 'h_count{kind="full"} 1']);
  });

  it('counts a value equal to a bound in that bucket', () => {
    const r = new Registry();
    const h = r.histogram({ name: 'h', help: 'H.', buckets: [1, 2] });
    h.observe(1);
    expect(r.render()).toContain('h_bucket{le="1"} 1\n');
  });

  it('runs collectors before each render', () => {
    const r = new Registry();
    const g = r.gauge({ name: 'strait_ct_entries', help: 'Conntrack entries.', labelNames: ['family'] });
    let n = 0;
    r.addCollector(() => {
      n += 10;
      g.set(n, { family: 'ipv4' });
    });
    expect(r.render()).toContain('strait_ct_entries{family="ipv4"} 10\n');
    expect(r.render()).toContain('strait_ct_entries{family="ipv4"} 20\n');
  });

  it('gauge inc/dec/setToTime, reset and remove', () => {
    const r = new Registry();
    const g = r.gauge({ name: 'g', help: 'G.', labelNames: ['a'] });
    g.inc({ a: 'x' });
    g.inc({ a: 'x' }, 4);
    g.dec({ a: 'x' });
    expect(g.get({ a: 'x' })).toBe(4);
    g.setToTime(1_700_000_000_500, { a: 'y' });
    expect(g.get({ a: 'y' })).toBe(1_700_000_000.5);
    g.remove({ a: 'y' });
    expect(r.render()).not.toContain('a="y"');
    g.reset();
    expect(r.render()).toBe('# HELP g G.\n# TYPE g gauge\n');
  });
});

describe('formatNumber', () => {
  it.each([
    [0, '0'],
    [1.5, '1.5'],
    [Infinity, '+Inf'],
    [-Infinity, '-Inf'],
    [NaN, 'NaN'],
    [1e21, '1e+21'],
  ])('%s → %s', (n, text) => {
    expect(formatNumber(n)).toBe(text);
  });
});

describe('buckets', () => {
  it('exponential and linear', () => {
    expect(exponentialBuckets(0.001, 2, 4)).toEqual([0.001, 0.002, 0.004, 0.008]);
    expect(linearBuckets(1, 2, 3)).toEqual([1, 3, 5]);
  });
});

describe('programming errors throw', () => {
  it.each([
    ['an invalid metric name', (r: Registry) => r.counter({ name: '1bad', help: '' })],
    ['an invalid label name', (r: Registry) => r.counter({ name: 'c', help: '', labelNames: ['a-b'] })],
    ['a reserved label name', (r: Registry) => r.counter({ name: 'c', help: '', labelNames: ['__x'] })],
    ['le on a histogram', (r: Registry) => r.histogram({ name: 'h', help: '', labelNames: ['le'] })],
    ['unsorted buckets', (r: Registry) => r.histogram({ name: 'h', help: '', buckets: [2, 1] })],
    ['a duplicate name', (r: Registry) => { r.gauge({ name: 'g', help: '' }); r.gauge({ name: 'g', help: '' }); }],
    ['a name that clashes with histogram series', (r: Registry) => { r.histogram({ name: 'h', help: '' }); r.counter({ name: 'h_count', help: '' }); }],
    ['missing labels', (r: Registry) => r.counter({ name: 'c', help: '', labelNames: ['a'] }).inc()],
    ['extra labels', (r: Registry) => r.counter<'a'>({ name: 'c', help: '', labelNames: ['a'] }).inc({ a: 'x', b: 'y' } as never)],
    ['a counter going down', (r: Registry) => r.counter({ name: 'c', help: '' }).add(-1)],
  ])('%s', (_name, f) => {
    expect(() => f(new Registry())).toThrow();
  });
});
