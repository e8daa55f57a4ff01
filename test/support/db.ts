// A fresh database per test file, cloned from the template the global setup installed.
// Runtime-neutral (postgres.js over TCP), so it works in workerd tests and Node tests alike.
import postgres from 'postgres';
import { inject } from 'vitest';
import { withDatabase } from './urls.ts';

export interface TestDatabase {
  url: string;
  name: string;
  sql: postgres.Sql;
}

let counter = 0;

export async function freshDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const template = inject('templateDb');
  // pid is not available in workerd: the template name carries the setup's pid.
  const pid = template.replace('pne_template_', '');
  const name = `pne_t_${pid}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}${counter++}`;
  const admin = postgres(adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
  // CREATE DATABASE … TEMPLATE fails while another session is copying the same template; retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.unsafe(`create database ${name} template ${template}`);
      break;
    } catch (error) {
      if (attempt >= 20) throw error;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  const url = withDatabase(adminUrl, name);
  return { url, name, sql: postgres(url, { max: 4, fetch_types: false, onnotice: () => {} }) };
}
