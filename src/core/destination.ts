// The destination policy (SPEC §7): which hosts a queued request may reach. Pure and
// runtime-neutral. Addresses are recognised in every spelling the URL parsers and inet_aton
// accept (decimal 2130706433, hex 0x7f000001, octal 0177.0.0.1, short 127.1, IPv4-mapped
// [::ffff:127.0.0.1]), so no spelling slips past a CIDR rule. sql/install.sql has the same rules
// (net._check_destination) for the call-time check; this module checks again before every send
// and every redirect hop, and the Node drain checks resolved addresses too.

/** An IP address as a number: 32 bits for IPv4, 128 for IPv6. */
export interface Address {
  family: 4 | 6;
  value: bigint;
}

export type Rule =
  | { kind: 'cidr'; text: string; family: 4 | 6; network: bigint; prefix: number }
  | { kind: 'host'; text: string; name: string; subdomains: boolean };

export interface DestinationPolicy {
  /** Refused; checked first (the built-in list, then pg_net.denied_destinations). */
  denied: { rule: Rule; source: string }[];
  /** When set (pg_net.allowed_destinations), only these are allowed. */
  allowed: Rule[] | null;
}

export class DestinationError extends Error {
  override name = 'DestinationError';
}

/**
 * Refused in every runtime whatever the settings say: "this network" (0.0.0.0 reaches the local
 * host on Linux), link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254), Alibaba's
 * 100.100.100.200, Oracle's 192.0.0.192, the unspecified IPv6 address, and metadata host names.
 * Loopback and private ranges are not in it (self-hosted drains and local development reach
 * them on purpose): deny them with pg_net.denied_destinations.
 */
export const BUILT_IN_DENIED = [
  '0.0.0.0/8',
  '169.254.0.0/16',
  '100.100.100.200/32',
  '192.0.0.192/32',
  '::/128',
  'fe80::/10',
  'fd00:ec2::254/128',
  'metadata.google.internal',
  'metadata.goog',
  'metadata',
  'instance-data',
  'instance-data.ec2.internal',
  'metadata.azure.internal',
] as const;

const MAX_V4 = 0xffffffffn;

/** One inet_aton part: decimal, 0x hex (0x alone is 0, as in URLs) or 0-led octal. */
function v4Part(part: string): bigint | null {
  if (/^0x[0-9a-f]*$/i.test(part)) return part.length === 2 ? 0n : BigInt(part);
  if (/^0[0-7]+$/.test(part)) return BigInt(`0o${part.slice(1)}`);
  if (/^(0|[1-9][0-9]*)$/.test(part)) return BigInt(part);
  return null;
}

/** IPv4 in any inet_aton / WHATWG URL spelling: 1-4 parts, the last filling the remaining bytes. */
export function parseIPv4(text: string): bigint | null {
  let parts = text.split('.');
  // A trailing dot is allowed (as in a fully qualified name).
  if (parts.length > 1 && parts[parts.length - 1] === '') parts = parts.slice(0, -1);
  if (parts.length === 0 || parts.length > 4 || parts.some((p) => p.length === 0 || p.length > 40)) return null;
  const values = parts.map(v4Part);
  if (values.some((v) => v === null)) return null;
  const nums = values as bigint[];
  let out = 0n;
  for (let i = 0; i < nums.length - 1; i++) {
    if (nums[i]! > 255n) return null;
    out |= nums[i]! << BigInt(8 * (3 - i));
  }
  const last = nums[nums.length - 1]!;
  const room = BigInt(8 * (4 - (nums.length - 1)));
  if (last >= 1n << room) return null;
  return out | last;
}

/** Strict dotted quad, as the tail of an IPv6 address. */
function dottedQuad(text: string): bigint | null {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) return null;
  const parts = text.split('.').map(Number);
  if (parts.some((p) => p > 255)) return null;
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n);
}

/** IPv6, with or without brackets and a zone (%eth0); an IPv4 tail (::ffff:1.2.3.4) is allowed. */
export function parseIPv6(text: string): bigint | null {
  let s = text;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (!s.includes(':') || s.length > 64) return null;
  let tail: bigint | null = null;
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    tail = dottedQuad(s.slice(lastColon + 1));
    if (tail === null) return null;
    // Keep the colon(s) and stand the quad in as two groups.
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const rest = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  let out = 0n;
  for (const g of all) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return null;
    out = (out << 16n) | BigInt(`0x${g}`);
  }
  if (tail !== null) out = (out & ~MAX_V4) | tail;
  return out;
}

/** A URL host (or an address as written) → address, or null for a host name. */
export function parseAddress(host: string): Address | null {
  const h = host.trim();
  if (h.startsWith('[') || h.includes(':')) {
    const v6 = parseIPv6(h);
    return v6 === null ? null : { family: 6, value: v6 };
  }
  const v4 = parseIPv4(h);
  return v4 === null ? null : { family: 4, value: v4 };
}

/**
 * The IPv4 address an IPv6 one carries and reaches: IPv4-mapped (::ffff:0:0/96), the NAT64
 * well-known prefix (64:ff9b::/96) and the deprecated IPv4-compatible form (::/96).
 */
export function embeddedIPv4(address: Address): bigint | null {
  if (address.family !== 6) return null;
  const high = address.value >> 32n;
  if (high === 0xffffn || high === 0x0064ff9b0000000000000000n || (high === 0n && address.value > 1n)) {
    return address.value & MAX_V4;
  }
  return null;
}

function normalName(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * One policy entry: a CIDR (any address spelling), a bare address, a host name, or *.domain
 * (also written .domain) for the domain and every name under it.
 */
export function parseRule(entry: string): Rule {
  const text = entry.trim();
  const slash = text.indexOf('/');
  const addressText = slash >= 0 ? text.slice(0, slash) : text;
  const address = parseAddress(addressText);
  if (address !== null) {
    const bits = address.family === 4 ? 32 : 128;
    const prefixText = slash >= 0 ? text.slice(slash + 1) : String(bits);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      throw new DestinationError(`invalid destination entry ${JSON.stringify(entry)}: the prefix length must be 0 to ${bits}`);
    }
    const prefix = Number(prefixText);
    return { kind: 'cidr', text, family: address.family, network: address.value & mask(address.family, prefix), prefix };
  }
  if (slash >= 0) {
    throw new DestinationError(`invalid destination entry ${JSON.stringify(entry)}: ${JSON.stringify(addressText)} is not an IP address`);
  }
  let name = normalName(text);
  let subdomains = false;
  if (name.startsWith('*.')) {
    subdomains = true;
    name = name.slice(2);
  } else if (name.startsWith('.')) {
    subdomains = true;
    name = name.slice(1);
  }
  if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
    throw new DestinationError(
      `invalid destination entry ${JSON.stringify(entry)}: expected a CIDR (10.0.0.0/8), an address, a host name or *.domain`,
    );
  }
  return { kind: 'host', text, name, subdomains };
}

function mask(family: 4 | 6, prefix: number): bigint {
  const bits = family === 4 ? 32 : 128;
  const all = (1n << BigInt(bits)) - 1n;
  return (all >> BigInt(bits - prefix)) << BigInt(bits - prefix);
}

/** A comma-separated setting → rules (empty entries ignored). Throws DestinationError naming a bad entry. */
export function parseRules(setting: string | null | undefined): Rule[] {
  if (setting === null || setting === undefined) return [];
  return setting
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '')
    .map(parseRule);
}

/** The policy from the two database settings (null/empty: not set). */
export function destinationPolicy(denied?: string | null, allowed?: string | null): DestinationPolicy {
  const given = (allowed ?? '').trim();
  return {
    denied: [
      ...BUILT_IN_DENIED.map((text) => ({ rule: parseRule(text), source: 'built-in' })),
      ...parseRules(denied).map((rule) => ({ rule, source: 'pg_net.denied_destinations' })),
    ],
    allowed: given === '' ? null : parseRules(given),
  };
}

export const DEFAULT_POLICY: DestinationPolicy = destinationPolicy(null, null);

function matchesAddress(rule: Rule, address: Address): boolean {
  if (rule.kind !== 'cidr') return false;
  const candidates: Address[] = [address];
  const v4 = embeddedIPv4(address);
  if (v4 !== null) candidates.push({ family: 4, value: v4 });
  return candidates.some((a) => a.family === rule.family && (a.value & mask(a.family, rule.prefix)) === rule.network);
}

function matchesName(rule: Rule, name: string): boolean {
  if (rule.kind !== 'host') return false;
  return name === rule.name || (rule.subdomains && name.endsWith(`.${rule.name}`));
}

/**
 * Why a host (a URL's host, or an address a name resolved to) is refused, or null. `resolved`:
 * an address looked up for an allowed name, checked against the denied list only (an allowed
 * name's addresses need not be listed too).
 */
export function refuseHost(host: string, policy: DestinationPolicy, resolved = false): string | null {
  const address = parseAddress(host);
  const name = address === null ? normalName(host) : null;
  const matches = (rule: Rule) => (address !== null ? matchesAddress(rule, address) : matchesName(rule, name!));
  const shown = host.replace(/^\[|\]$/g, '');
  for (const { rule, source } of policy.denied) {
    if (matches(rule)) return `refused destination: ${shown} is denied (${rule.text}, ${source})`;
  }
  if (!resolved && policy.allowed !== null && !policy.allowed.some(matches)) {
    return `refused destination: ${shown} is not in pg_net.allowed_destinations`;
  }
  return null;
}

/** Percent-decodes what can be decoded, so /%63dn-cgi/ is seen as /cdn-cgi/. */
function decodedPath(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
}

/**
 * Why a URL is refused, or null (also null for a URL that doesn't parse: execute reports that).
 * A path with a cdn-cgi segment is refused on every host: /cdn-cgi/ paths are Cloudflare's and
 * wrangler's control paths (wrangler dev's /cdn-cgi/handler/scheduled runs the cron), and a
 * Worker can't know all of its own host names (routes, custom domains, workers.dev, a dev
 * server's port) to refuse only those. Any segment, not just the first, so that a path that
 * normalizes differently in another parser (dot segments, backslashes) can't slip through, and
 * so that it is the same rule as net._check_destination's.
 */
export function refuseUrl(url: string, policy: DestinationPolicy): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  if (/(^|\/)cdn-cgi(\/|$)/i.test(decodedPath(parsed.pathname))) {
    return `refused destination: ${parsed.origin}${parsed.pathname} is a /cdn-cgi/ control path`;
  }
  return refuseHost(parsed.hostname, policy);
}
