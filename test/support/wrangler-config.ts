// Copies of wrangler.toml for tests. The worker tests give each file its own database, so they
// need the config without an uncommented [[hyperdrive]] block (a bound HYPERDRIVE wins over
// DATABASE_URL, and needs a local connection string); the deploy test needs it with one.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');

/** wrangler.toml's text with `main` made absolute, so the copy works from any folder. */
function withAbsoluteMain(text: string): string {
  return text.replace(/^main\s*=\s*"([^"]+)"/m, (_line, main: string) => `main = ${JSON.stringify(resolve(ROOT, main))}`);
}

/** Removes every uncommented [[hyperdrive]] table (its header and key lines). */
export function withoutHyperdrive(text: string): string {
  const out: string[] = [];
  let inBlock = false;
  for (const line of text.split('\n')) {
    if (/^\s*\[\[hyperdrive\]\]\s*$/.test(line)) {
      inBlock = true;
      continue;
    }
    if (inBlock && /^\s*[A-Za-z_]+\s*=/.test(line)) continue;
    inBlock = false;
    out.push(line);
  }
  return out.join('\n');
}

/** Uncomments the README's [[hyperdrive]] block (the lines right after "# [[hyperdrive]]"). */
export function withHyperdriveUncommented(text: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => /^#\s*\[\[hyperdrive\]\]\s*$/.test(l));
  if (start < 0) throw new Error('wrangler.toml has no commented [[hyperdrive]] block');
  for (let i = start; i < lines.length && /^#\s*(\[\[hyperdrive\]\]|[A-Za-z_]+\s*=)/.test(lines[i]!); i++) {
    lines[i] = lines[i]!.replace(/^#\s*/, '');
  }
  return lines.join('\n');
}

/** Writes a copy of wrangler.toml, transformed, at `file`; returns its path. */
export function writeWranglerCopy(file: string, transform: (text: string) => string = (t) => t): string {
  const text = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, transform(withAbsoluteMain(text)));
  return file;
}
