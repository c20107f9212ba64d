// Address parsing for the model: validation, canonical text, family.
// Addresses from the lab ranges 198.18.0.0/15 and 2001:2::/48 only.
import { describe, expect, it } from 'vitest';

import { canonicalIP, cidrContains, ipFamilyOf, ipSortKey, joinHostPort, parseCIDR, parseIP } from '../../src/model/index.js';

describe('parseIP', () => {
  it.each([
    { name: 'IPv4 as written', text: '198.18.0.1', want: '198.18.0.1', family: 'IPv4' },
    { name: 'IPv6 compressed', text: '2001:2::1', want: '2001:2::1', family: 'IPv6' },
    { name: 'IPv6 with leading zeros and upper case', text: '2001:0002:0000:0000:0000:0000:0000:00AB', want: '2001:2::ab', family: 'IPv6' },
    { name: 'IPv6 longest zero run compressed', text: '2001:2:0:0:1:0:0:0', want: '2001:2:0:0:1::', family: 'IPv6' },
    { name: 'IPv6 leftmost of equal zero runs compressed', text: '2001:2:0:0:1:0:0:1', want: '2001:2::1:0:0:1', family: 'IPv6' },
    { name: 'IPv6 single zero group not compressed', text: '2001:2:0:1:1:1:1:1', want: '2001:2:0:1:1:1:1:1', family: 'IPv6' },
    { name: 'IPv6 with embedded IPv4 tail', text: '2001:2::198.18.0.1', want: '2001:2::c612:1', family: 'IPv6' },
    { name: 'IPv4-mapped IPv6 is the IPv4 address (as Go parses it)', text: '::ffff:198.18.0.1', want: '198.18.0.1', family: 'IPv4' },
  ])('$name', ({ text, want, family }) => {
    expect(canonicalIP(text)).toBe(want);
    expect(ipFamilyOf(text)).toBe(family);
  });

  it.each([
    { name: 'leading zero in an IPv4 octet', text: '198.018.0.1' },
    { name: 'octet out of range', text: '198.18.0.256' },
    { name: 'three octets', text: '198.18.1' },
    { name: 'surrounding space', text: ' 198.18.0.1' },
    { name: 'IPv6 zone id', text: '2001:2::1%eth0' },
    { name: 'a CIDR', text: '198.18.0.0/15' },
    { name: 'a name', text: 'node-a' },
    { name: 'empty', text: '' },
  ])('rejects $name', ({ text }) => {
    expect(parseIP(text)).toBeUndefined();
  });

  it('gives network-order bytes', () => {
    expect([...parseIP('198.18.0.1')!.bytes]).toEqual([198, 18, 0, 1]);
    expect([...parseIP('2001:2::1')!.bytes]).toEqual([0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  });
});

describe('parseCIDR', () => {
  it.each([
    { name: 'IPv4 network', text: '198.18.0.0/15', want: '198.18.0.0/15' },
    { name: 'host bits cleared', text: '198.19.1.7/15', want: '198.18.0.0/15' },
    { name: 'IPv6 network canonical', text: '2001:0002:0000::/48', want: '2001:2::/48' },
    { name: 'IPv6 host bits cleared', text: '2001:2::1/64', want: '2001:2::/64' },
    { name: 'host route', text: '198.18.0.1/32', want: '198.18.0.1/32' },
  ])('$name', ({ text, want }) => {
    expect(parseCIDR(text)?.cidr).toBe(want);
  });

  it.each([
    { name: 'no prefix', text: '198.18.0.0' },
    { name: 'IPv4 prefix over 32', text: '198.18.0.0/33' },
    { name: 'IPv6 prefix over 128', text: '2001:2::/129' },
    { name: 'prefix with leading zero', text: '198.18.0.0/015' },
    { name: 'bad address', text: '198.18.0/15' },
  ])('rejects $name', ({ text }) => {
    expect(parseCIDR(text)).toBeUndefined();
  });

  it('contains addresses of its family inside the prefix only', () => {
    const v4 = parseCIDR('198.18.0.0/24')!;
    expect(cidrContains(v4, parseIP('198.18.0.200')!)).toBe(true);
    expect(cidrContains(v4, parseIP('198.18.1.1')!)).toBe(false);
    expect(cidrContains(v4, parseIP('2001:2::1')!)).toBe(false);
    const v6 = parseCIDR('2001:2::/64')!;
    expect(cidrContains(v6, parseIP('2001:2::ffff')!)).toBe(true);
    expect(cidrContains(v6, parseIP('2001:2:0:1::1')!)).toBe(false);
  });
});

describe('ordering and formatting', () => {
  it('sorts IPv4 before IPv6, numerically within a family', () => {
    const sorted = ['2001:2::10', '198.18.0.10', '2001:2::9', '198.18.0.9'].sort((a, b) =>
      ipSortKey(a) < ipSortKey(b) ? -1 : 1,
    );
    expect(sorted).toEqual(['198.18.0.9', '198.18.0.10', '2001:2::9', '2001:2::10']);
  });

  it('brackets IPv6 in host:port', () => {
    expect(joinHostPort('198.18.0.1', 80)).toBe('198.18.0.1:80');
    expect(joinHostPort('2001:2::1', 80)).toBe('[2001:2::1]:80');
  });
});
