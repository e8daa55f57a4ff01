// The newest schema version sql/install.sql migrates to (the highest migration block), so tests
// that check a version follow the file instead of repeating a number each migration changes.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const text = readFileSync(fileURLToPath(new URL('../../sql/install.sql', import.meta.url)), 'utf8');

/** Every migration version in the file, ascending (the layout comment repeats one: a Set). */
export const MIGRATIONS: number[] = [...new Set([...text.matchAll(/insert into net\._migrations \(version, description\)\s*values \((\d+),/g)]
  .map((m) => Number(m[1])))]
  .sort((a, b) => a - b);

export const SCHEMA_VERSION: number = Math.max(...MIGRATIONS);
