// The destination policy's parser and matcher (pure): every spelling of an address lands on the
// same number, CIDRs and host names match as documented, bad entries are refused by name.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_POLICY,
  DestinationError,
  destinationPolicy,
  embeddedIPv4,
  parseAddress,
  parseIPv4,
  parseIPv6,
  parseRule,
  refuseHost,
  refuseUrl,
} from '../../src/core/destination.ts';

const LOOPBACK = 0x7f000001n;

describe('parseIPv4', () => {
  it.each([
    '127.0.0.1', '127.1', '127.0.1', '2130706433', '0x7f000001', '0X7F000001', '0177.0.0.1', '0x7f.1',
    '0177.0.0.01', '127.0.0.1.', '017700000001', '0x7f.0.0.0x1',
  ])('%s is 127.0.0.1', (spelling) => {
    expect(parseIPv4(spelling)).toBe(LOOPBACK);
  });
  it('0 and 0x are 0.0.0.0', () => {
    expect(parseIPv4('0')).toBe(0n);
    expect(parseIPv4('0x')).toBe(0n);
  });
  it.each(['256.0.0.1', '1.2.3.4.5', '4294967296', '08.0.0.1', 'a.b.c.d', '1..2', '', 'example.com', '127.0.0.256', '1.16777216'])(
    '%s is not an address',
    (text) => {
      expect(parseIPv4(text)).toBeNull();
    },
  );
});

describe('parseIPv6', () => {
  it('compressed, full, bracketed, zoned and IPv4-tailed forms', () => {
    expect(parseIPv6('::1')).toBe(1n);
    expect(parseIPv6('[::1]')).toBe(1n);
    expect(parseIPv6('0:0:0:0:0:0:0:1')).toBe(1n);
    expect(parseIPv6('fe80::1%eth0')).toBe((0xfe80n << 112n) | 1n);
    expect(parseIPv6('::ffff:127.0.0.1')).toBe((0xffffn << 32n) | LOOPBACK);
    expect(parseIPv6('[::ffff:7f00:1]')).toBe((0xffffn << 32n) | LOOPBACK);
    expect(parseIPv6('::')).toBe(0n);
  });
  it.each(['1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', '::ffff:127.1', 'g::1', '1:2:3:4:5:6:7'])('%s is not an address', (t) => {
    expect(parseIPv6(t)).toBeNull();
  });
  it('IPv4-mapped, NAT64 and IPv4-compatible addresses carry their IPv4 address', () => {
    for (const text of ['::ffff:127.0.0.1', '64:ff9b::127.0.0.1', '::127.0.0.1']) {
      expect(embeddedIPv4(parseAddress(text)!)).toBe(LOOPBACK);
    }
    expect(embeddedIPv4(parseAddress('::1')!)).toBeNull();
    expect(embeddedIPv4(parseAddress('2001:db8::1')!)).toBeNull();
  });
});

describe('rules', () => {
  it('CIDRs in any spelling, bare addresses, names and wildcards', () => {
    expect(parseRule('127.0.0.0/8')).toMatchObject({ kind: 'cidr', family: 4, network: LOOPBACK - 1n, prefix: 8 });
    expect(parseRule('0x7f000001')).toMatchObject({ kind: 'cidr', family: 4, network: LOOPBACK, prefix: 32 });
    expect(parseRule('10.1.2.3/8')).toMatchObject({ network: 0x0a000000n });
    expect(parseRule('::1')).toMatchObject({ kind: 'cidr', family: 6, network: 1n, prefix: 128 });
    expect(parseRule('Example.COM.')).toMatchObject({ kind: 'host', name: 'example.com', subdomains: false });
    expect(parseRule('*.example.com')).toMatchObject({ kind: 'host', name: 'example.com', subdomains: true });
  });
  it.each(['10.0.0.0/33', '::/129', 'foo/8', 'exa mple.com', '*', 'a..b', 'http://x'])('%s is refused with its text', (entry) => {
    expect(() => parseRule(entry)).toThrow(DestinationError);
    expect(() => parseRule(entry)).toThrow(entry);
  });
});

describe('refuseHost / refuseUrl', () => {
  const noLoopback = destinationPolicy('127.0.0.0/8, ::1', null);

  it('built-in: metadata and link-local refused by default, loopback allowed', () => {
    expect(refuseHost('169.254.169.254', DEFAULT_POLICY)).toMatch(/^refused destination: 169\.254\.169\.254 is denied \(169\.254\.0\.0\/16, built-in\)$/);
    expect(refuseHost('METADATA.google.internal.', DEFAULT_POLICY)).toMatch(/built-in/);
    expect(refuseHost('[fd00:ec2::254]', DEFAULT_POLICY)).toMatch(/fd00:ec2::254\/128/);
    expect(refuseHost('0.0.0.0', DEFAULT_POLICY)).toMatch(/0\.0\.0\.0\/8/);
    expect(refuseHost('127.0.0.1', DEFAULT_POLICY)).toBeNull();
    expect(refuseHost('example.com', DEFAULT_POLICY)).toBeNull();
  });

  it('every spelling of a denied address is refused, in URLs too', () => {
    for (const host of ['127.1', '2130706433', '0x7f000001', '0177.0.0.1', '[::ffff:127.0.0.1]', '[::1]', '127.0.0.1']) {
      expect(refuseHost(host, noLoopback)).toMatch(/^refused destination: .* is denied \(.*pg_net\.denied_destinations\)$/);
      expect(refuseUrl(`http://${host}:8080/x`, noLoopback)).toMatch(/^refused destination: /);
    }
    expect(refuseUrl('http://[::ffff:169.254.169.254]/', DEFAULT_POLICY)).toMatch(/built-in/);
  });

  it('allowed_destinations restricts to its entries; denied still wins', () => {
    const policy = destinationPolicy('bad.example.com', '*.example.com, 10.0.0.0/8');
    expect(refuseHost('api.example.com', policy)).toBeNull();
    // *.example.com covers the domain itself too.
    expect(refuseHost('example.com', policy)).toBeNull();
    expect(refuseHost('example.org', policy)).toMatch(/not in pg_net\.allowed_destinations/);
    expect(refuseHost('notexample.com', policy)).toMatch(/not in pg_net\.allowed_destinations/);
    expect(refuseHost('bad.example.com', policy)).toMatch(/is denied/);
    expect(refuseHost('10.9.8.7', policy)).toBeNull();
    expect(refuseHost('11.0.0.1', policy)).toMatch(/not in pg_net\.allowed_destinations/);
    // A resolved address of an allowed name is checked against the denied list only.
    expect(refuseHost('93.184.216.34', policy, true)).toBeNull();
    expect(refuseHost('169.254.169.254', policy, true)).toMatch(/is denied/);
  });

  it('/cdn-cgi/ paths (any cdn-cgi segment) are refused on any host, however spelled', () => {
    for (const url of [
      'http://127.0.0.1:8787/cdn-cgi/handler/scheduled',
      'https://example.com/CDN-CGI/trace',
      'http://localhost/%63dn-cgi/x',
      'http://localhost/a/../cdn-cgi/x',
      'http://localhost/a/cdn-cgi',
    ]) {
      expect(refuseUrl(url, DEFAULT_POLICY)).toMatch(/^refused destination: .* is a \/cdn-cgi\/ control path$/);
    }
    expect(refuseUrl('http://127.0.0.1/cdn-cgi-not/x', DEFAULT_POLICY)).toBeNull();
  });

  it('a bad setting fails loudly', () => {
    expect(() => destinationPolicy('10.0.0.0/99', null)).toThrow(/10\.0\.0\.0\/99/);
  });
});
