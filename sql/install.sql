-- pg-net-edge: pg_net's asynchronous HTTP API for any PostgreSQL, without a C extension.
--
-- This file is the whole SQL side. It is idempotent: run it as often as you like, with
--   psql -v ON_ERROR_STOP=1 -f sql/install.sql "$DATABASE_URL"
-- or paste it into your provider's SQL editor, or run `pg-net-edge install --database-url URL`.
-- Re-running keeps every queued request and every stored response; it only refreshes functions.
--
-- Layout:
--   1. preamble: serialize concurrent installs, refuse to run next to the pg_net extension
--   2. versioned migrations (net._migrations): tables, indexes, types
--   3. helpers (URL encoding, validation, settings); 3b. security: visibility, call-time limits
--   4. the user-facing API (net.http_get / http_post / http_delete, collect_response, …)
--   5. the worker-facing API (net._claim, net._record, net._config, net._sweep, …)
--   6. privileges, row-level security policies, the queue's check trigger
--
-- The HTTP work is done by the pg-net-edge Cloudflare Worker, which connects as the role that
-- ran this file (the owner of schema net).

begin;
-- "already exists, skipping" notices on a re-run are expected; keep the output readable.
set local client_min_messages = warning;

-------------------------------------------------------------------------------------------------
-- 1. Preamble
-------------------------------------------------------------------------------------------------

-- Two installs at once would race on CREATE OR REPLACE ("tuple concurrently updated"):
-- the second waits here until the first commits. The key is arbitrary but fixed.
do $$ begin perform pg_catalog.pg_advisory_xact_lock(7036142216110523431); end $$;

-- pg_net owns schema net and the same object names; the two cannot share a database.
do $$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'pg_net') then
    raise exception 'pg_net extension is installed in this database; pg-net-edge replaces it'
      using errcode = 'object_in_use',
            hint = 'DROP EXTENSION pg_net first (this drops its queue and stored responses), then run this file again.';
  end if;
end
$$;

create schema if not exists net;
comment on schema net is 'pg-net-edge: asynchronous HTTP from SQL, executed by a Cloudflare Worker';

-- One row per applied schema version. Functions are not versioned: they are replaced on every run.
create table if not exists net._migrations (
  version     int primary key,
  description text not null,
  applied_at  timestamptz not null default now()
);

-------------------------------------------------------------------------------------------------
-- 2. Migrations. Each block runs once; append new versions below (never edit an applied one):
--      do $$ begin
--        if not exists (select from net._migrations where version = 2) then
--          ...;
--          insert into net._migrations (version, description) values (2, '...');
--        end if;
--      end $$;
-------------------------------------------------------------------------------------------------

do $$
begin
  if exists (select from net._migrations where version = 1) then
    return;
  end if;

  -- Waiting requests. pg_net's columns first (same names and types), then the lease the worker
  -- stamps when it claims a row. LOGGED, unlike pg_net: a crash loses nothing.
  create table if not exists net.http_request_queue (
    id                   bigserial primary key,
    method               text not null,
    url                  text not null,
    headers              jsonb not null default '{}',
    body                 bytea,
    timeout_milliseconds int not null,
    created              timestamptz not null default now(),
    lease_owner          text,
    lease_expires        timestamptz,
    attempts             int not null default 0
  );
  -- Adopt a table left behind by an older layout (e.g. pg_net's, which lacks the lease columns).
  alter table net.http_request_queue
    add column if not exists created       timestamptz not null default now(),
    add column if not exists lease_owner   text,
    add column if not exists lease_expires timestamptz,
    add column if not exists attempts      int not null default 0;
  alter table net.http_request_queue set logged;

  -- One row per finished request (id = the request's id). pg_net's columns, then content_bytes:
  -- the exact body when it is not valid UTF-8 or contains NUL (content is NULL then).
  create table if not exists net._http_response (
    id            bigint,
    status_code   int,
    content_type  text,
    headers       jsonb,
    content       text,
    timed_out     bool,
    error_msg     text,
    created       timestamptz not null default now(),
    content_bytes bytea
  );
  alter table net._http_response add column if not exists content_bytes bytea;
  alter table net._http_response set logged;
  create unique index if not exists _http_response_id_key on net._http_response (id);
  -- The sweep deletes by age.
  create index if not exists _http_response_created_idx on net._http_response (created);

  -- The worker's heartbeat: one row, id = 1.
  create table if not exists net._worker_status (
    id                int primary key check (id = 1),
    last_seen         timestamptz,
    last_drain        jsonb,
    restart_requested timestamptz
  );
  insert into net._worker_status (id) values (1) on conflict (id) do nothing;

  -- pg_net's result types for http_collect_response.
  if not exists (select from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'net' and t.typname = 'request_status') then
    create type net.request_status as enum ('PENDING', 'SUCCESS', 'ERROR');
  end if;
  if not exists (select from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'net' and t.typname = 'http_response') then
    create type net.http_response as (status_code integer, headers jsonb, body text);
  end if;
  if not exists (select from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'net' and t.typname = 'http_response_result') then
    create type net.http_response_result as (status net.request_status, message text, response net.http_response);
  end if;
  -- What net._claim hands the worker.
  if not exists (select from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'net' and t.typname = '_claimed') then
    create type net._claimed as (id bigint, method text, url text, headers jsonb, body bytea,
                                 timeout_milliseconds int, attempts int);
  end if;

  insert into net._migrations (version, description)
  values (1, 'queue, responses, worker status, result types');
end
$$;

-- Version 2 ("beyond pg_net"): retries, delays, exact response headers, re-sendable failures.
do $$
begin
  if exists (select from net._migrations where version = 2) then
    return;
  end if;

  -- not_before: the row is not claimed before this time (a delayed request, or one waiting to
  -- retry). max_attempts / retry_max_delay_ms: the request's retry policy, fixed when queued.
  -- last_error: why the previous attempt failed, while the row waits to retry.
  alter table net.http_request_queue
    add column if not exists not_before         timestamptz,
    add column if not exists max_attempts       int not null default 1,
    add column if not exists retry_max_delay_ms int not null default 60000,
    add column if not exists last_error         text;

  -- attempts: how many times the request was sent. headers_all: every response header line as
  -- [name, value] pairs (Set-Cookie can't be folded into one value). The request's own fields
  -- are kept for failed requests only, so net.retry() can send them again.
  alter table net._http_response
    add column if not exists attempts             int,
    add column if not exists headers_all          jsonb,
    add column if not exists method               text,
    add column if not exists url                  text,
    add column if not exists request_headers      jsonb,
    add column if not exists request_body         bytea,
    add column if not exists timeout_milliseconds int,
    add column if not exists max_attempts         int,
    add column if not exists retry_max_delay_ms   int;
  -- net._claim takes rows without not_before in id order, and due ones by not_before, so rows
  -- scheduled for later are never scanned; net._next_due_ms finds the next one to come due.
  create index if not exists http_request_queue_plain_idx on net.http_request_queue (id)
    where not_before is null;
  create index if not exists http_request_queue_not_before_idx on net.http_request_queue (not_before)
    where not_before is not null;
  -- net.failed_requests lists the newest failures first.
  create index if not exists _http_response_failed_idx on net._http_response (created)
    where error_msg is not null or status_code >= 400;

  insert into net._migrations (version, description)
  values (2, 'retries, delays, exact response headers, re-sendable failures');
end
$$;

-- Version 3 (security, SPEC section 7): each request belongs to the role that queued it, and
-- row-level security lets every role see only its own requests and responses (or those of roles
-- it is a member of). The worker connects as the owner of net, which RLS does not restrict (the
-- tables are not FORCE ROW LEVEL SECURITY, on purpose).
do $$
declare
  net_owner oid := (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'net');
begin
  if exists (select from net._migrations where version = 3) then
    return;
  end if;

  -- owner: the role that queued the request (current_user: inside a SECURITY DEFINER function,
  -- its owner). expired_leases: how often a claim found the row's lease expired (its drain died);
  -- after the 3rd the row ends with an error instead of being sent again.
  alter table net.http_request_queue
    add column if not exists owner          regrole,
    add column if not exists expired_leases int not null default 0;
  -- retry_claim: stamped by net.retry's row-level-security-gated UPDATE (see net._requeue).
  alter table net._http_response
    add column if not exists owner       regrole,
    add column if not exists retry_claim timestamptz;
  -- Rows queued before this version belong to the owner of net (only it and admins see them).
  update net.http_request_queue set owner = net_owner::regrole where owner is null;
  update net._http_response set owner = net_owner::regrole where owner is null;
  alter table net.http_request_queue
    alter column owner set default pg_catalog.to_regrole(pg_catalog.quote_ident(current_user));

  -- Members of this role see every request (e.g. an operator's role). "pg_" names are reserved.
  -- Without CREATEROLE the install goes on without it (only the owner of net and superusers see all).
  if not exists (select from pg_catalog.pg_roles where rolname = 'net_edge_admin') then
    begin
      create role net_edge_admin nologin;
    exception when insufficient_privilege then
      raise warning 'could not create role net_edge_admin (no CREATEROLE): only the owner of schema net and superusers see every request';
    end;
  end if;

  alter table net.http_request_queue enable row level security;
  alter table net._http_response enable row level security;

  insert into net._migrations (version, description)
  values (3, 'request owners, row-level security, expired lease count');
end
$$;

-- Version 4 (pg_net compatibility): a machine-readable kind for every failure, next to
-- error_msg (which starts with pg_net's own text for the classes pg_net has). One of: timeout,
-- connect, no_response, receive, malformed, dns, tls, too_large, redirects, invalid_request,
-- refused_destination, internal, other. Null on success (and on rows recorded before v4).
do $$
begin
  if exists (select from net._migrations where version = 4) then
    return;
  end if;
  alter table net._http_response add column if not exists error_kind text;
  insert into net._migrations (version, description)
  values (4, 'pg_net compatibility: error_kind on responses');
end
$$;

-- Version 5 (SPEC section 7: a role cancels only its own requests): cancel_claim, stamped by
-- net.cancel's row-level-security-gated UPDATE (see net._cancel), as retry_claim is for
-- net.retry. A cancelled request ends with error_kind 'cancelled', a kind only net.cancel sets
-- (v4 lists the drain's).
do $$
begin
  if exists (select from net._migrations where version = 5) then
    return;
  end if;
  alter table net.http_request_queue add column if not exists cancel_claim timestamptz;
  insert into net._migrations (version, description)
  values (5, 'net.cancel: cancel_claim on the queue');
end
$$;

-------------------------------------------------------------------------------------------------
-- 3. Helpers (not granted to PUBLIC; the SECURITY DEFINER API calls them as the owner)
-------------------------------------------------------------------------------------------------

-- RFC 3986 percent-encoding: only A-Z a-z 0-9 - . _ ~ stay as they are; every other character
-- becomes its UTF-8 bytes as %XX (uppercase hex).
create or replace function net._urlencode(value text)
returns text
language sql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(string_agg(
           case when ch ~ '^[A-Za-z0-9._~-]$' then ch
                else upper(regexp_replace(encode(convert_to(ch, 'UTF8'), 'hex'), '(..)', '%\1', 'g'))
           end, '' order by pos), '')
  from regexp_split_to_table(value, '') with ordinality as chars(ch, pos)
$$;

-- Raises unless url is an absolute http(s) URL with a host. Messages: invalid URL "<url>": <reason>.
create or replace function net._check_url(url text)
returns void
language plpgsql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  authority text;
  host_port text;
  host      text;
  port      text;
begin
  -- pg_net inserts the url into its queue's NOT NULL column: same code and text here.
  if url is null then
    raise exception 'null value in column "url" of relation "http_request_queue" violates not-null constraint'
      using errcode = 'not_null_violation', column = 'url', table = 'http_request_queue';
  end if;
  if url ~ '[[:space:][:cntrl:]]' then
    raise exception 'invalid URL "%": contains whitespace or control characters (percent-encode them)', url
      using errcode = 'invalid_parameter_value';
  end if;
  -- pg_net's (curl's) text first, so code matching on it keeps working; then the precise reason.
  if url !~* '^https?://' then
    raise exception 'Unsupported URL scheme: invalid URL "%": must be an absolute URL starting with http:// or https://', url
      using errcode = 'invalid_parameter_value';
  end if;
  -- authority = what follows the scheme up to the path, query or fragment
  authority := substring(url from '^[A-Za-z]+://([^/?#]*)');
  if authority ~ '\\' then
    raise exception 'invalid URL "%": backslash in the host part', url using errcode = 'invalid_parameter_value';
  end if;
  host_port := regexp_replace(authority, '^.*@', '');  -- drop user:password@
  if host_port ~ '^\[' then                            -- IPv6 literal: [::1]:8080
    host := substring(host_port from '^(\[[^\]]*\])');
    if host is null or host !~ '^\[[0-9A-Fa-f:.]+\]$' then
      raise exception 'invalid URL "%": malformed IPv6 address', url using errcode = 'invalid_parameter_value';
    end if;
    port := substr(host_port, length(host) + 1);
  else
    host := split_part(host_port, ':', 1);
    port := substr(host_port, length(host) + 1);
  end if;
  if host = '' then
    raise exception 'invalid URL "%": missing host', url using errcode = 'invalid_parameter_value';
  end if;
  -- WHATWG URL's forbidden host code points (the ones not already excluded above).
  if host !~ '^\[' and host ~ '[<>^|%\[\]]' then
    raise exception 'invalid URL "%": invalid character in host "%"', url, host
      using errcode = 'invalid_parameter_value';
  end if;
  if port <> '' and port !~ '^:[0-9]{0,5}$' or (port ~ '^:[0-9]+$' and substr(port, 2)::int > 65535) then
    raise exception 'invalid URL "%": invalid port "%"', url, substr(port, 2)
      using errcode = 'invalid_parameter_value';
  end if;
end
$$;

-- Validates headers (null = none) and returns them as a jsonb object of string values.
-- Names must be RFC 7230 tokens; values must not contain CR, LF or NUL (header injection).
create or replace function net._check_headers(headers jsonb)
returns jsonb
language plpgsql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  item   record;
  result jsonb := '{}';
  value  text;
begin
  if headers is null or headers = 'null'::jsonb then
    return result;
  end if;
  if jsonb_typeof(headers) <> 'object' then
    raise exception 'headers must be a JSON object of name/value pairs, got a JSON %', jsonb_typeof(headers)
      using errcode = 'invalid_parameter_value';
  end if;
  for item in select * from jsonb_each(headers) loop
    if item.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' then
      raise exception 'invalid header name "%": must be an HTTP token (letters, digits and !#$%%&''*+-.^_`|~)', item.key
        using errcode = 'invalid_parameter_value';
    end if;
    case jsonb_typeof(item.value)
      when 'string' then value := item.value #>> '{}';
      when 'number', 'boolean' then value := item.value::text;
      else
        raise exception 'header "%" must be a string, number or boolean, got a JSON %', item.key, jsonb_typeof(item.value)
          using errcode = 'invalid_parameter_value';
    end case;
    -- (NUL cannot occur: neither text nor jsonb can hold it.)
    if value ~ '[\r\n]' then
      raise exception 'header "%" value must not contain CR, LF or NUL characters', item.key
        using errcode = 'invalid_parameter_value';
    end if;
    result := result || jsonb_build_object(item.key, value);
  end loop;
  return result;
end
$$;

-- Appends params (null = none) to url as an RFC 3986-encoded query, before any #fragment.
create or replace function net._with_params(url text, params jsonb)
returns text
language plpgsql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  item     record;
  pairs    text[] := '{}';
  value    text;
  base     text;
  fragment text;
  hash_at  int;
begin
  if params is null or params = 'null'::jsonb then
    return url;
  end if;
  if jsonb_typeof(params) <> 'object' then
    raise exception 'params must be a JSON object of name/value pairs, got a JSON %', jsonb_typeof(params)
      using errcode = 'invalid_parameter_value';
  end if;
  for item in select * from jsonb_each(params) loop
    case jsonb_typeof(item.value)
      when 'string' then value := item.value #>> '{}';
      when 'number', 'boolean' then value := item.value::text;
      else
        raise exception 'param "%" must be a string, number or boolean, got a JSON %', item.key, jsonb_typeof(item.value)
          using errcode = 'invalid_parameter_value';
    end case;
    pairs := pairs || (net._urlencode(item.key) || '=' || net._urlencode(value));
  end loop;
  if cardinality(pairs) = 0 then
    return url;
  end if;
  hash_at := strpos(url, '#');
  if hash_at > 0 then
    base := substr(url, 1, hash_at - 1);
    fragment := substr(url, hash_at);
  else
    base := url;
    fragment := '';
  end if;
  if strpos(base, '?') = 0 then
    base := base || '?';
  elsif right(base, 1) not in ('?', '&') then
    base := base || '&';
  end if;
  return base || array_to_string(pairs, '&') || fragment;
end
$$;

-- pg_net's own URL helpers, with its signatures: existing code calls them directly.
-- net._urlencode_string: curl_escape — every byte but A-Z a-z 0-9 - . _ ~ as %XX (UTF-8).
create or replace function net._urlencode_string(string varchar)
returns text
language sql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select net._urlencode(string)
$$;

-- net._encode_url_with_params_array: curl's URL API as pg_net uses it — the URL with each
-- non-null element of params_array (already encoded "key=value" strings) appended to the query
-- with "&", the fragment kept last; like curl_url_get, the scheme comes back lower-case and an
-- empty path as "/". A URL pg-net-edge cannot send raises curl's "Unsupported URL scheme".
create or replace function net._encode_url_with_params_array(url text, params_array text[])
returns text
language plpgsql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  parts text[] := regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$');
  query text;
  param text;
begin
  if parts is null or lower(parts[1]) not in ('http', 'https') then
    raise exception 'Unsupported URL scheme: invalid URL "%": must be an absolute URL starting with http:// or https://', url
      using errcode = 'invalid_parameter_value';
  end if;
  if parts[2] = '' then
    raise exception 'No host part in the URL: invalid URL "%": missing host', url using errcode = 'invalid_parameter_value';
  end if;
  query := substr(parts[4], 2);  -- null without "?"
  foreach param in array params_array loop
    continue when param is null;
    query := case when coalesce(query, '') = '' then param else query || '&' || param end;
  end loop;
  return lower(parts[1]) || '://' || parts[2] || coalesce(nullif(parts[3], ''), '/')
         || coalesce('?' || query, '') || coalesce(parts[5], '');
end
$$;

-- Validates everything, queues one request, wakes the worker (at commit), returns the id.
-- max_attempts null = the pg_net.max_attempts setting (default 1: no retries, as pg_net);
-- not_before null = due at once; retry_max_delay_ms null = 60000.
create or replace function net._enqueue(method text, url text, params jsonb, headers jsonb, body bytea,
                                        timeout_milliseconds int, max_attempts int, not_before timestamptz,
                                        retry_max_delay_ms int)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  request_id bigint;
  full_url   text;
  clean      jsonb;
  attempts   int := coalesce(max_attempts, net._default_max_attempts());
  max_delay  int := coalesce(retry_max_delay_ms, 60000);
begin
  perform net._check_url(url);
  if timeout_milliseconds is null then
    raise exception 'timeout_milliseconds must not be null' using errcode = 'null_value_not_allowed';
  end if;
  if timeout_milliseconds <= 0 or timeout_milliseconds > 300000 then
    raise exception 'timeout_milliseconds must be between 1 and 300000 (5 minutes), got %', timeout_milliseconds
      using errcode = 'invalid_parameter_value';
  end if;
  if attempts < 1 or attempts > 50 then
    raise exception 'max_attempts must be between 1 and 50, got %', attempts using errcode = 'invalid_parameter_value';
  end if;
  if max_delay < 0 or max_delay > 86400000 then
    raise exception 'retry_max_delay_ms must be between 0 and 86400000 (1 day), got %', max_delay
      using errcode = 'invalid_parameter_value';
  end if;
  clean := net._check_headers(headers);
  full_url := net._with_params(url, params);
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds, not_before, max_attempts,
                                      retry_max_delay_ms)
  values (method, full_url, clean, body, timeout_milliseconds, not_before, attempts, max_delay)
  returning id into request_id;
  -- Delivered only at commit, and identical notifications fold: one per transaction.
  perform pg_notify('pg_net_edge_wake', '');
  return request_id;
end
$$;

-- The pg_net-shaped functions' entry point: default retry policy, due at once.
create or replace function net._enqueue(method text, url text, params jsonb, headers jsonb, body bytea,
                                        timeout_milliseconds int)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  select net._enqueue(method, url, params, headers, body, timeout_milliseconds, null, null, null)
$$;

-- pg_net.max_attempts for a request queued without max_attempts, in net._settings' order (so
-- net.settings shows what applies): the owner's role/database settings from the catalog (ALTER
-- ROLE … SET applies without reconnecting; an invalid value means the default), else the
-- session's value (SET pg_net.max_attempts = 3), else 1. This runs for every queued request, so
-- the catalog answer is cached for the rest of the transaction (keyed by its start time, now()).
create or replace function net._default_max_attempts()
returns int
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  cached  text := current_setting('pg_net_edge.max_attempts_cache', true);
  stamp   text := now()::text || '|';
  catalog text;
  raw     text;
begin
  if starts_with(cached, stamp) then
    catalog := nullif(substr(cached, length(stamp) + 1), '');
  else
    select btrim(substr(c, length('pg_net.max_attempts=') + 1)) into catalog
      from pg_db_role_setting s
      cross join lateral unnest(s.setconfig) as c
     -- The owner of net's settings (v3: the API runs as the caller, not as the owner any more).
     where s.setrole in (0, (select n.nspowner from pg_namespace n where n.nspname = 'net'))
       and s.setdatabase in (0, (select d.oid from pg_database d where d.datname = current_database()))
       and c like 'pg\_net.max\_attempts=%'
     order by (s.setrole <> 0) desc, (s.setdatabase <> 0) desc
     limit 1;
    -- A session-level set_config outlives this function's own SET clause (a LOCAL one would not).
    perform set_config('pg_net_edge.max_attempts_cache', stamp || coalesce(catalog, ''), false);
  end if;
  raw := coalesce(catalog, btrim(current_setting('pg_net.max_attempts', true)));
  if raw ~ '^[0-9]{1,2}$' and raw::int between 1 and 50 then
    return raw::int;
  end if;
  return 1;
end
$$;

-- Settings as the given role sees them in this database: pg_db_role_setting (role+database,
-- role, database, all), then the session's own value (only for current_user), then the default.
-- Reading the catalog (not just current_setting) makes ALTER ROLE … SET take effect without
-- reconnecting, even through a pooler. Invalid values fall back to the default.
-- Plain SQL, one statement, and the role looked up with to_regrole (a cache lookup), not the
-- pg_roles view: every drain calls this first thing on a fresh connection, where a PL/pgSQL loop
-- of three catalog queries, planned cold, made net._config() take 8.5-10 ms (now ~6 ms).
-- Only the interval check needs PL/pgSQL (to catch a value that doesn't parse).
create or replace function net._positive_interval(raw text)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return raw::interval > interval '0';
exception when others then
  return false;
end
$$;

create or replace function net._settings(for_role name)
returns table (name text, setting text, source text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  with wanted (name, fallback, ord) as (
    values ('pg_net.ttl', '6 hours', 1), ('pg_net.batch_size', '200', 2), ('pg_net.max_attempts', '1', 3)
  ), scope as (
    select coalesce(to_regrole(quote_ident(for_role))::oid, 0) as role_oid,
           (select d.oid from pg_database d where d.datname = current_database()) as db_oid
  ), given as (
    select w.name, w.fallback, w.ord,
           nullif(btrim(coalesce(c.raw, case when for_role = current_user then current_setting(w.name, true) end)), '') as raw,
           coalesce(c.raw_source, 'SET in this session') as raw_source
    from wanted w
    left join lateral (
      -- The most specific catalog entry: role+database, role, database, all.
      -- The statement that set it, so the view tells where to change it.
      select substr(v, length(w.name) + 2) as raw,
             case when s.setrole <> 0 and s.setdatabase <> 0
                    then format('ALTER ROLE %s IN DATABASE %s', quote_ident(for_role), quote_ident(current_database()))
                  when s.setrole <> 0 then format('ALTER ROLE %s', quote_ident(for_role))
                  when s.setdatabase <> 0 then format('ALTER DATABASE %s', quote_ident(current_database()))
                  else 'ALTER ROLE ALL' end as raw_source
      from scope
      join pg_db_role_setting s on s.setrole in (0, scope.role_oid) and s.setdatabase in (0, scope.db_oid)
      cross join lateral unnest(s.setconfig) as v
      where v like w.name || '=%'
      order by (s.setrole <> 0) desc, (s.setdatabase <> 0) desc
      limit 1
    ) c on true
  )
  select g.name,
         case when v.ok then g.raw else g.fallback end,
         case when v.ok then g.raw_source
              when g.raw is null then 'default'
              else format('default (invalid value %s from %s ignored)', quote_literal(g.raw), g.raw_source) end
  from given g
  cross join lateral (
    select case when g.raw is null then false
                when g.name = 'pg_net.ttl' then net._positive_interval(g.raw)
                -- Digits checked first, so the cast can't fail; numeric, so a huge value can't overflow.
                when g.raw !~ '^[+]?[0-9]+$' then false
                when g.name = 'pg_net.max_attempts' then g.raw::numeric between 1 and 50
                else g.raw::numeric between 1 and 2147483647 end as ok
  ) v
  order by g.ord
$$;

-------------------------------------------------------------------------------------------------
-- Destination policy (issue 14 item 7; SPEC §7). The same rules as src/core/destination.ts,
-- checked here at call time for the URL as written; the drain checks again before every send
-- and every redirect hop (and, in Node, the addresses a name resolves to). Refused:
--   * the built-in list, whatever the settings say: 0.0.0.0/8, 169.254.0.0/16 (cloud metadata),
--     100.100.100.200, 192.0.0.192, ::, fe80::/10, fd00:ec2::254 and metadata host names;
--   * pg_net.denied_destinations: comma-separated CIDRs, addresses, host names or *.domain;
--   * when pg_net.allowed_destinations is set, everything not in it;
--   * any URL with a path segment cdn-cgi (Cloudflare's and wrangler's control paths, e.g.
--     /cdn-cgi/handler/scheduled, on whatever host names the Worker answers to).
-- Addresses count in every spelling the runtimes accept (2130706433, 0x7f000001, 0177.0.0.1,
-- 127.1, [::ffff:127.0.0.1]). The settings are read only from the catalog settings of the owner
-- of net (ALTER ROLE <owner> SET … / ALTER DATABASE … SET …): a session's SET can't loosen them.
-------------------------------------------------------------------------------------------------

-- A setting of the owner of net in this database (role+database, role, database, all), or null.
create or replace function net._destination_setting(setting_name text)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select nullif(btrim(substr(v, length(setting_name) + 2)), '')
  from pg_db_role_setting s
  cross join lateral unnest(s.setconfig) as v
  where s.setrole in (0, (select n.nspowner from pg_namespace n where n.nspname = 'net'))
    and s.setdatabase in (0, (select d.oid from pg_database d where d.datname = current_database()))
    and starts_with(v, setting_name || '=')
  order by (s.setrole <> 0) desc, (s.setdatabase <> 0) desc
  limit 1
$$;

-- An IPv4 address in any inet_aton / WHATWG URL spelling (1-4 parts, each decimal, 0x hex or
-- 0-led octal; the last part fills the remaining bytes), or null if host is not one.
create or replace function net._parse_ipv4(host text)
returns inet
language plpgsql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  parts  text[];
  n      int;
  vals   numeric[] := '{}';
  part   text;
  v      numeric;
  base   int;
  digits text;
  total  numeric := 0;
begin
  if host ~ '.\.$' then host := left(host, -1); end if;  -- a trailing dot, as in a full name
  parts := string_to_array(host, '.');
  n := coalesce(cardinality(parts), 0);
  if n < 1 or n > 4 then return null; end if;
  foreach part in array parts loop
    if part ~* '^0x[0-9a-f]*$' then base := 16; digits := substr(lower(part), 3);
    elsif part ~ '^0[0-7]+$' then base := 8; digits := substr(part, 2);
    elsif part ~ '^(0|[1-9][0-9]*)$' then base := 10; digits := part;
    else return null;
    end if;
    if length(digits) > 40 then return null; end if;
    v := 0;
    for i in 1 .. length(digits) loop
      v := v * base + (strpos('0123456789abcdef', substr(digits, i, 1)) - 1);
    end loop;
    vals := vals || v;
  end loop;
  for i in 1 .. n - 1 loop
    if vals[i] > 255 then return null; end if;
    total := total + vals[i] * (256::numeric ^ (4 - i));
  end loop;
  if vals[n] >= 256::numeric ^ (5 - n) then return null; end if;
  return '0.0.0.0'::inet + (total + vals[n])::bigint;
end
$$;

-- A URL host or policy entry → address (IPv4 spellings above; IPv6 with or without brackets),
-- or null for a host name.
create or replace function net._parse_address(host text)
returns inet
language plpgsql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  h text := btrim(host);
begin
  if h ~ '^\[.*\]$' then h := substr(h, 2, length(h) - 2);
  elsif h !~ ':' then return net._parse_ipv4(h);
  end if;
  if h !~ '^[0-9A-Fa-f:.]+$' then return null; end if;
  begin
    return host(h::inet)::inet;
  exception when others then
    return null;
  end;
end
$$;

-- The IPv4 address an IPv6 one carries and reaches (IPv4-mapped, NAT64 64:ff9b::/96,
-- IPv4-compatible ::/96), else null.
create or replace function net._embedded_ipv4(address inet)
returns inet
language sql
immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select case
    when family(address) <> 6 then null
    when address <<= '::ffff:0:0/96' then '0.0.0.0'::inet + (address - '::ffff:0:0'::inet)
    when address <<= '64:ff9b::/96' then '0.0.0.0'::inet + (address - '64:ff9b::'::inet)
    when address <<= '::/96' and address > '::1'::inet then '0.0.0.0'::inet + (address - '::'::inet)
  end
$$;

-- Whether host (a URL host, lowercased) matches one policy entry; raises for an invalid entry.
create or replace function net._destination_matches(host text, address inet, entry text, setting_name text)
returns boolean
language plpgsql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  e       text := lower(btrim(entry));
  slash   int := strpos(e, '/');
  network inet;
  prefix  text;
  bits    int;
  name    text;
  mapped  inet := net._embedded_ipv4(address);
begin
  network := net._parse_address(case when slash > 0 then left(e, slash - 1) else e end);
  if network is not null then
    bits := case family(network) when 4 then 32 else 128 end;
    prefix := case when slash > 0 then substr(e, slash + 1) else bits::text end;
    if prefix !~ '^[0-9]{1,3}$' or prefix::int > bits then
      raise exception '% has an invalid entry "%": the prefix length must be 0 to %', setting_name, entry, bits
        using errcode = 'invalid_parameter_value';
    end if;
    network := network(set_masklen(network, prefix::int));
    -- (<<= is false, not an error, across families.)
    return address is not null and (address <<= network or coalesce(mapped <<= network, false));
  end if;
  if slash > 0 then
    raise exception '% has an invalid entry "%": "%" is not an IP address', setting_name, entry, left(e, slash - 1)
      using errcode = 'invalid_parameter_value';
  end if;
  name := regexp_replace(regexp_replace(e, '\.$', ''), '^(\*\.|\.)', '');
  if name !~ '^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$' then
    raise exception '% has an invalid entry "%": expected a CIDR (10.0.0.0/8), an address, a host name or *.domain',
      setting_name, entry using errcode = 'invalid_parameter_value';
  end if;
  -- *.domain (or .domain) covers the domain and every name under it.
  return address is null
     and (host = name or (e ~ '^(\*\.|\.)' and right(host, length(name) + 1) = '.' || name));
end
$$;

-- Raises 42501 (insufficient_privilege) when url's destination is refused (see above).
create or replace function net._check_destination(url text)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  host_port text := regexp_replace(substring(url from '^[A-Za-z]+://([^/?#]*)'), '^.*@', '');
  path      text := replace(coalesce(substring(url from '^[A-Za-z]+://[^/?#]*([^?#]*)'), ''), '\', '/');
  host      text;
  shown     text;
  address   inet;
  mapped    inet;
  entry     text;
  hex       text;
  denied    text := net._destination_setting('pg_net.denied_destinations');
  allowed   text := net._destination_setting('pg_net.allowed_destinations');
begin
  if url is null or host_port is null then
    return;  -- net._check_url reports malformed URLs
  end if;
  host := lower(case when host_port ~ '^\[' then substring(host_port from '^(\[[^\]]*\])')
                     else split_part(host_port, ':', 1) end);
  shown := btrim(host, '[]');
  host := regexp_replace(host, '(.)\.$', '\1');
  -- Percent-escapes decoded (so %63dn-cgi is seen), then any cdn-cgi path segment refused.
  for hex in select distinct m[1] from regexp_matches(path, '%([0-9A-Fa-f]{2})', 'g') as m where strpos(path, '%') > 0 loop
    path := replace(path, '%' || hex, chr(('x' || lpad(hex, 8, '0'))::bit(32)::int));
  end loop;
  if path ~* '(^|/)cdn-cgi(/|$)' then
    raise exception 'refused destination: % is a /cdn-cgi/ control path', url
      using errcode = 'insufficient_privilege',
            hint = 'Cloudflare and wrangler answer /cdn-cgi/ paths themselves; they are never a destination.';
  end if;
  address := net._parse_address(host);
  mapped := net._embedded_ipv4(address);
  -- The built-in list as literals (no per-entry parsing: this runs for every queued request).
  select b into entry
    from unnest(array['0.0.0.0/8', '169.254.0.0/16', '100.100.100.200/32', '192.0.0.192/32', '::/128',
                      'fe80::/10', 'fd00:ec2::254/128']::inet[]) as b
   where address <<= b or mapped <<= b
   limit 1;
  if entry is null and address is null
     and host in ('metadata.google.internal', 'metadata.goog', 'metadata', 'instance-data',
                  'instance-data.ec2.internal', 'metadata.azure.internal') then
    entry := host;
  end if;
  if entry is not null then
    raise exception 'refused destination: % is denied (%, built-in)', shown, entry
      using errcode = 'insufficient_privilege',
            hint = 'Cloud metadata, link-local and 0.0.0.0/8 addresses are never a destination.';
  end if;
  for entry in select btrim(e) from unnest(string_to_array(coalesce(denied, ''), ',')) as e where btrim(e) <> '' loop
    if net._destination_matches(host, address, entry, 'pg_net.denied_destinations') then
      raise exception 'refused destination: % is denied (%, pg_net.denied_destinations)', shown, entry
        using errcode = 'insufficient_privilege',
              hint = 'The database owner sets pg_net.denied_destinations; ask them, or use another destination.';
    end if;
  end loop;
  if allowed is not null and not exists (
       select from unnest(string_to_array(allowed, ',')) as e
       where btrim(e) <> '' and net._destination_matches(host, address, btrim(e), 'pg_net.allowed_destinations')) then
    raise exception 'refused destination: % is not in pg_net.allowed_destinations', shown
      using errcode = 'insufficient_privilege',
            hint = format('Allowed: %s', allowed);
  end if;
end
$$;

-------------------------------------------------------------------------------------------------
-- 3b. Security (SPEC section 7): who sees which rows, and the call-time limits.
-------------------------------------------------------------------------------------------------

-- True when the current role sees every request: superusers and BYPASSRLS roles (row-level
-- security doesn't apply to them anyway; e.g. Supabase's service_role), the owner of schema net
-- (the worker's role) and members of net_edge_admin. SECURITY INVOKER on purpose: as a SECURITY
-- DEFINER function current_user would be the owner of net, and everyone would see all.
create or replace function net._sees_all()
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((select r.rolsuper or r.rolbypassrls from pg_roles r where r.rolname = current_user), false)
      or coalesce(pg_has_role(current_user, (select n.nspowner from pg_namespace n where n.nspname = 'net'), 'MEMBER'), false)
      or coalesce(pg_has_role(current_user, to_regrole('net_edge_admin')::oid, 'MEMBER'), false)
$$;

-- The call-time limits (bytes) in force: pg_net.max_body_bytes (request body; default 2 MiB, so
-- a drain's concurrent bodies fit a Worker's 128 MB; at most 100 MiB, Cloudflare's request body
-- limit on Free/Pro), pg_net.max_url_bytes (16 KiB, what Cloudflare accepts for a URL) and
-- pg_net.max_header_bytes (request headers, names + values; default 32 KiB, at most 128 KiB).
-- Read from the catalog settings of the owner of net in this database (role+database, role,
-- database, all roles) and never from the caller's session, nor cached where a caller could
-- write (a session variable): anyone could SET those. Missing or invalid: the default; above
-- the ceiling: the ceiling. One statement: it runs for every queued row.
create or replace function net._limits(out max_body_bytes bigint, out max_url_bytes bigint, out max_header_bytes bigint)
language plpgsql  -- not sql: a SQL function's query is planned again on every call (~300 µs)
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  with given as (
    select distinct on (split_part(v, '=', 1))
           split_part(v, '=', 1) as name, btrim(substr(v, strpos(v, '=') + 1)) as raw
    from pg_namespace n
    join pg_db_role_setting s on s.setrole in (0, n.nspowner)
                             and s.setdatabase in (0, (select d.oid from pg_database d where d.datname = current_database()))
    cross join lateral unnest(s.setconfig) as v
    where n.nspname = 'net' and v ~ '^pg_net\.max_(body|url|header)_bytes='
    order by split_part(v, '=', 1), (s.setrole <> 0) desc, (s.setdatabase <> 0) desc
  ), parsed as (
    select g.name, case when g.raw ~ '^[+]?[0-9]{1,15}$' then nullif(g.raw::bigint, 0) end as bytes
    from given g
  )
  select least(coalesce(max(p.bytes) filter (where p.name = 'pg_net.max_body_bytes'), 2097152), 104857600),
         least(coalesce(max(p.bytes) filter (where p.name = 'pg_net.max_url_bytes'), 16384), 16384),
         least(coalesce(max(p.bytes) filter (where p.name = 'pg_net.max_header_bytes'), 32768), 131072)
    into max_body_bytes, max_url_bytes, max_header_bytes
  from parsed p;
end
$$;

-- How to raise a limit, for the error messages.
create or replace function net._limit_hint(setting_name text, ceiling bigint)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select format('The owner of schema net (%s) can raise it, up to %s: ALTER DATABASE %s SET %s = <bytes>;',
                (select pg_get_userbyid(n.nspowner) from pg_namespace n where n.nspname = 'net'),
                ceiling, quote_ident(current_database()), setting_name)
$$;

-- BEFORE INSERT on net.http_request_queue: every check a queued row must pass, so a row that
-- would fail later (or stall the queue) is refused in the caller's transaction, whether it comes
-- through the API, net.retry or a direct INSERT. A null url is left to the NOT NULL constraint
-- (23502 "null value in column "url"", as pg_net).
create or replace function net._check_queue_row()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  lim          record;
  item         record;
  bad          text;
  headers_text text;
  head_bytes   bigint;
begin
  select * into lim from net._limits();
  if new.url is not null then
    -- Length first: a 10 MB URL is refused without being scanned or echoed.
    if octet_length(new.url) > lim.max_url_bytes then
      raise exception 'URL is % bytes; the limit is pg_net.max_url_bytes = % bytes', octet_length(new.url), lim.max_url_bytes
        using errcode = 'program_limit_exceeded',
              hint = 'Send long data in the body (POST) instead of the query string.';
    end if;
    perform net._check_url(new.url);
    -- Destination policy (its block above): literal addresses and names refused at call time.
    perform net._check_destination(new.url);
    -- (plain ~ tests on the fast path: substring(... from pattern) costs ~25 µs a row)
    if new.url ~ '^[A-Za-z]+://[^/?#]*@' then
      raise exception 'URL must not contain credentials (user:password@host): they would be stored and sent in clear'
        using errcode = 'invalid_parameter_value',
              hint = 'Remove them from the URL and send an Authorization header instead, e.g. headers := jsonb_build_object(''Authorization'', ''Basic '' || encode(convert_to(''user:password'', ''UTF8''), ''base64'')).';
    end if;
  end if;
  if new.method not in ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') then  -- (null: NOT NULL says so)
    raise exception 'unknown HTTP method "%": use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS', new.method
      using errcode = 'invalid_parameter_value';
  end if;
  new.headers := net._check_headers(new.headers);
  headers_text := new.headers::text;
  -- jsonb's text form escapes control characters as \u00XX (\b, \f, \t, \n, \r for some) and
  -- leaves DEL as it is: only when one may be there are the values looked at one by one.
  if headers_text ~ '\\(u00[01]|u007[fF]|[bf])|\x7f' then
    for item in select key, value #>> '{}' as value from jsonb_each(new.headers) loop
      -- Control characters other than tab are refused by fetch at send time; refuse them now.
      if item.value ~ '[\x01-\x08\x0a-\x1f\x7f]' then
        bad := substring(item.value from '[\x01-\x08\x0a-\x1f\x7f]');
        raise exception 'header "%" value contains the control character U+%; header values may only hold visible characters, spaces and tabs',
                        item.key, lpad(upper(to_hex(ascii(bad))), 4, '0')
          using errcode = 'invalid_parameter_value',
                hint = 'Remove it, or encode the value (e.g. base64 or percent-encoding).';
      end if;
    end loop;
  end if;
  -- The JSON text is longer than the headers on the wire (name: value CRLF), so only a long one
  -- needs counting.
  if octet_length(headers_text) > lim.max_header_bytes then
    select coalesce(sum(octet_length(e.key) + octet_length(e.value) + 4), 0) into head_bytes  -- ": " and CRLF
      from jsonb_each_text(new.headers) e;
    if head_bytes > lim.max_header_bytes then
      raise exception 'request headers are % bytes; the limit is pg_net.max_header_bytes = % bytes', head_bytes, lim.max_header_bytes
        using errcode = 'program_limit_exceeded', hint = net._limit_hint('pg_net.max_header_bytes', 131072);
    end if;
  end if;
  if octet_length(new.body) > lim.max_body_bytes then
    raise exception 'request body is % bytes; the limit is pg_net.max_body_bytes = % bytes', octet_length(new.body), lim.max_body_bytes
      using errcode = 'program_limit_exceeded',
            hint = 'Send a smaller body (or several requests). ' || net._limit_hint('pg_net.max_body_bytes', 104857600);
  end if;
  if new.timeout_milliseconds is not null and (new.timeout_milliseconds <= 0 or new.timeout_milliseconds > 300000) then
    raise exception 'timeout_milliseconds must be between 1 and 300000 (5 minutes), got %', new.timeout_milliseconds
      using errcode = 'invalid_parameter_value';
  end if;
  if new.max_attempts < 1 or new.max_attempts > 50 then
    raise exception 'max_attempts must be between 1 and 50, got %', new.max_attempts using errcode = 'invalid_parameter_value';
  end if;
  if new.retry_max_delay_ms < 0 or new.retry_max_delay_ms > 86400000 then
    raise exception 'retry_max_delay_ms must be between 0 and 86400000 (1 day), got %', new.retry_max_delay_ms
      using errcode = 'invalid_parameter_value';
  end if;
  -- 'infinity' or a far date would hold the row (and a sync collect) for ever.
  if new.not_before is not null and (not isfinite(new.not_before) or new.not_before > clock_timestamp() + interval '1 year') then
    raise exception 'not_before must be a finite time within 1 year from now, got %', new.not_before
      using errcode = 'invalid_parameter_value',
            hint = 'Use a time (or delay) within a year; for later, queue it from a scheduled job (e.g. pg_cron) nearer the time.';
  end if;
  return new;
end
$$;

-------------------------------------------------------------------------------------------------
-- 4. User-facing API (pg_net's signatures). SECURITY INVOKER: the request belongs to the caller
--    (current_user), and row-level security decides what it sees; PUBLIC may insert the request
--    columns of the queue (section 6). search_path pinned so callers can't hijack names.
-------------------------------------------------------------------------------------------------

create or replace function net.http_get(
  url                  text,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{}'::jsonb,
  timeout_milliseconds int   default 2000
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
begin
  return net._enqueue('GET', url, params, headers, null, timeout_milliseconds);
end
$$;
comment on function net.http_get(text, jsonb, jsonb, int) is
  'Queues an HTTP GET, sent by the pg-net-edge worker after this transaction commits. Returns the request id.';

create or replace function net.http_post(
  url                  text,
  body                 jsonb default '{}'::jsonb,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int   default 2000
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  clean jsonb := net._check_headers(headers);
  item  record;
  found_type boolean := false;
begin
  perform net._check_url(url);
  -- The body is JSON, so the only Content-Type that tells the truth is application/json.
  for item in select key, value #>> '{}' as value from jsonb_each(clean) where lower(key) = 'content-type' loop
    found_type := true;
    if item.value !~* '^[[:space:]]*application/json[[:space:]]*(;.*)?$' then
      raise exception 'net.http_post sends JSON: Content-Type must be application/json, got "%"', item.value
        using errcode = 'invalid_parameter_value',
              hint = 'Leave Content-Type out (application/json is added) or set it to application/json.';
    end if;
  end loop;
  if not found_type then
    clean := clean || '{"Content-Type": "application/json"}'::jsonb;
  end if;
  -- pg_net raises here too (same text); a POST without a body is net.http_request('POST', url).
  if body is null then
    raise exception 'body must not be null'
      using hint = 'Pass a JSON body (e.g. ''{}''::jsonb), or use net.http_request(''POST'', url) for a POST without one.';
  end if;
  return net._enqueue('POST', url, params, clean,
                      convert_to(body::text, 'UTF8'), timeout_milliseconds);
end
$$;
comment on function net.http_post(text, jsonb, jsonb, jsonb, int) is
  'Queues an HTTP POST with a JSON body, sent by the pg-net-edge worker after this transaction commits. Returns the request id.';

create or replace function net.http_delete(
  url                  text,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{}'::jsonb,
  timeout_milliseconds int   default 2000,
  body                 jsonb default null
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
begin
  return net._enqueue('DELETE', url, params, headers,
                      convert_to(body::text, 'UTF8'), timeout_milliseconds);
end
$$;
comment on function net.http_delete(text, jsonb, jsonb, int, jsonb) is
  'Queues an HTTP DELETE, sent by the pg-net-edge worker after this transaction commits. Returns the request id.';

-------------------------------------------------------------------------------------------------
-- 4b. Beyond pg_net: any method and body, form posts, retries, delays, request status.
-------------------------------------------------------------------------------------------------

-- The one place that builds a request from a body of any type: checks the method, refuses a
-- body on GET/HEAD, adds the body type's Content-Type unless the caller gave one, validates the
-- schedule, queues.
create or replace function net._request(method text, url text, body bytea, default_type text, params jsonb,
                                        headers jsonb, timeout_milliseconds int, max_attempts int,
                                        not_before timestamptz, delay interval, retry_max_delay_ms int)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  verb  text := upper(btrim(method));
  clean jsonb;
  due   timestamptz := not_before;
begin
  if method is null then
    raise exception 'method must not be null' using errcode = 'null_value_not_allowed';
  end if;
  if verb not in ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') then
    raise exception 'unknown HTTP method "%": use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS', method
      using errcode = 'invalid_parameter_value';
  end if;
  if body is not null and verb in ('GET', 'HEAD') then
    raise exception 'a % request cannot carry a body', verb
      using errcode = 'invalid_parameter_value',
            hint = 'Pass the data as params (the query string), or use POST, PUT or PATCH.';
  end if;
  if delay is not null and not_before is not null then
    raise exception 'give either not_before or delay, not both' using errcode = 'invalid_parameter_value';
  end if;
  if delay < interval '0' then
    raise exception 'delay must not be negative, got %', delay using errcode = 'invalid_parameter_value';
  end if;
  if delay is not null then
    due := clock_timestamp() + delay;
  end if;
  perform net._check_url(url);
  clean := net._check_headers(headers);
  if body is not null and default_type is not null
     and not exists (select from jsonb_object_keys(clean) k where lower(k) = 'content-type') then
    clean := clean || jsonb_build_object('Content-Type', default_type);
  end if;
  return net._enqueue(verb, url, params, clean, body, timeout_milliseconds, max_attempts, due, retry_max_delay_ms);
end
$$;

-- Four overloads (jsonb, json, text, bytea), told apart by the body's type. Only the jsonb one has a default body, so a
-- call without a body is never ambiguous; an untyped literal ('hello') resolves to text (the
-- preferred string type); cast to ::jsonb or ::bytea for the others.
create or replace function net.http_request(
  method               text,
  url                  text,
  body                 jsonb       default null,
  params               jsonb       default '{}'::jsonb,
  headers              jsonb       default '{}'::jsonb,
  timeout_milliseconds int         default 2000,
  max_attempts         int         default null,
  not_before           timestamptz default null,
  delay                interval    default null,
  retry_max_delay_ms   int         default null
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._request(method, url, convert_to(body::text, 'UTF8'), 'application/json', params, headers,
                      timeout_milliseconds, max_attempts, not_before, delay, retry_max_delay_ms)
$$;
comment on function net.http_request(text, text, jsonb, jsonb, jsonb, int, int, timestamptz, interval, int) is
  'Queues an HTTP request with a JSON body (Content-Type application/json unless given). Returns the request id.';

create or replace function net.http_request(
  method               text,
  url                  text,
  body                 text,
  params               jsonb       default '{}'::jsonb,
  headers              jsonb       default '{}'::jsonb,
  timeout_milliseconds int         default 2000,
  max_attempts         int         default null,
  not_before           timestamptz default null,
  delay                interval    default null,
  retry_max_delay_ms   int         default null
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._request(method, url, convert_to(body, 'UTF8'), 'text/plain; charset=utf-8', params, headers,
                      timeout_milliseconds, max_attempts, not_before, delay, retry_max_delay_ms)
$$;
comment on function net.http_request(text, text, text, jsonb, jsonb, int, int, timestamptz, interval, int) is
  'Queues an HTTP request with a text body sent as UTF-8 (Content-Type text/plain; charset=utf-8 unless given). Returns the request id.';

-- json (row_to_json, to_json, json columns): sent exactly as written, as application/json.
create or replace function net.http_request(
  method               text,
  url                  text,
  body                 json,
  params               jsonb       default '{}'::jsonb,
  headers              jsonb       default '{}'::jsonb,
  timeout_milliseconds int         default 2000,
  max_attempts         int         default null,
  not_before           timestamptz default null,
  delay                interval    default null,
  retry_max_delay_ms   int         default null
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._request(method, url, convert_to(body::text, 'UTF8'), 'application/json', params, headers,
                      timeout_milliseconds, max_attempts, not_before, delay, retry_max_delay_ms)
$$;
comment on function net.http_request(text, text, json, jsonb, jsonb, int, int, timestamptz, interval, int) is
  'Queues an HTTP request with a json body sent exactly as written (Content-Type application/json unless given). Returns the request id.';

create or replace function net.http_request(
  method               text,
  url                  text,
  body                 bytea,
  params               jsonb       default '{}'::jsonb,
  headers              jsonb       default '{}'::jsonb,
  timeout_milliseconds int         default 2000,
  max_attempts         int         default null,
  not_before           timestamptz default null,
  delay                interval    default null,
  retry_max_delay_ms   int         default null
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._request(method, url, body, 'application/octet-stream', params, headers,
                      timeout_milliseconds, max_attempts, not_before, delay, retry_max_delay_ms)
$$;
comment on function net.http_request(text, text, bytea, jsonb, jsonb, int, int, timestamptz, interval, int) is
  'Queues an HTTP request with a binary body sent byte for byte (Content-Type application/octet-stream unless given). Returns the request id.';

-- http_put / http_patch: http_post's shape and rules (JSON body, Content-Type application/json).
create or replace function net._json_request(method text, url text, body jsonb, params jsonb, headers jsonb,
                                             timeout_milliseconds int)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  clean jsonb := net._check_headers(headers);
  item  record;
  found_type boolean := false;
begin
  perform net._check_url(url);
  for item in select key, value #>> '{}' as value from jsonb_each(clean) where lower(key) = 'content-type' loop
    found_type := true;
    if item.value !~* '^[[:space:]]*application/json[[:space:]]*(;.*)?$' then
      raise exception 'net.http_% sends JSON: Content-Type must be application/json, got "%"', lower(method), item.value
        using errcode = 'invalid_parameter_value',
              hint = 'Leave Content-Type out (application/json is added), or use net.http_request for other bodies.';
    end if;
  end loop;
  if not found_type then
    clean := clean || '{"Content-Type": "application/json"}'::jsonb;
  end if;
  return net._enqueue(method, url, params, clean, convert_to(body::text, 'UTF8'), timeout_milliseconds);
end
$$;

create or replace function net.http_put(
  url                  text,
  body                 jsonb default '{}'::jsonb,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int   default 2000
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._json_request('PUT', url, body, params, headers, timeout_milliseconds)
$$;
comment on function net.http_put(text, jsonb, jsonb, jsonb, int) is
  'Queues an HTTP PUT with a JSON body, like net.http_post. Returns the request id.';

create or replace function net.http_patch(
  url                  text,
  body                 jsonb default '{}'::jsonb,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int   default 2000
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._json_request('PATCH', url, body, params, headers, timeout_milliseconds)
$$;
comment on function net.http_patch(text, jsonb, jsonb, jsonb, int) is
  'Queues an HTTP PATCH with a JSON body, like net.http_post. Returns the request id.';

-- A JSON object as an application/x-www-form-urlencoded body: name=value pairs joined by &,
-- RFC 3986-encoded (spaces as %20, which every form decoder accepts). An array value repeats
-- its name (tag=a&tag=b); a null value leaves the name out. Keys come in jsonb's order.
create or replace function net.form_urlencode(form jsonb)
returns text
language plpgsql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  item  record;
  elem  jsonb;
  pairs text[] := '{}';
begin
  if form is null or form = 'null'::jsonb then
    return '';
  end if;
  if jsonb_typeof(form) <> 'object' then
    raise exception 'form must be a JSON object of name/value pairs, got a JSON %', jsonb_typeof(form)
      using errcode = 'invalid_parameter_value';
  end if;
  for item in select * from jsonb_each(form) loop
    for elem in select case when jsonb_typeof(item.value) = 'array' then e else item.value end
                from jsonb_array_elements(case when jsonb_typeof(item.value) = 'array' then item.value
                                               else '[null]'::jsonb end) e loop
      case jsonb_typeof(elem)
        when 'null' then continue;
        when 'string' then pairs := pairs || (net._urlencode(item.key) || '=' || net._urlencode(elem #>> '{}'));
        when 'number', 'boolean' then pairs := pairs || (net._urlencode(item.key) || '=' || net._urlencode(elem::text));
        else
          raise exception 'form field "%" must be a string, number, boolean or an array of them, got a JSON %',
                          item.key, jsonb_typeof(elem)
            using errcode = 'invalid_parameter_value';
      end case;
    end loop;
  end loop;
  return array_to_string(pairs, '&');
end
$$;

-- A form post: the body is net.form_urlencode(form), Content-Type
-- application/x-www-form-urlencoded unless the caller gives one.
create or replace function net.http_post_form(
  url                  text,
  form                 jsonb default '{}'::jsonb,
  params               jsonb default '{}'::jsonb,
  headers              jsonb default '{}'::jsonb,
  timeout_milliseconds int   default 2000
)
returns bigint
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._request('POST', url, convert_to(net.form_urlencode(form), 'UTF8'), 'application/x-www-form-urlencoded',
                      params, headers, timeout_milliseconds, null, null, null, null)
$$;
comment on function net.http_post_form(text, jsonb, jsonb, jsonb, int) is
  'Queues an HTTP POST of a form (application/x-www-form-urlencoded) built from a JSON object. Returns the request id.';

-- A finished request failed when no HTTP response came back (error_msg) or its status was 4xx/5xx.
create or replace function net._failed(status_code int, error_msg text)
returns boolean
language sql
immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select error_msg is not null or coalesce(status_code >= 400, false)
$$;

-- Where a request stands: 'queued', 'in flight', 'waiting to retry', 'succeeded', 'failed',
-- 'cancelled' (net.cancel) or 'unknown' (never queued, not yet committed, or its response was
-- swept after pg_net.ttl).
create or replace function net.request_status(request_id bigint)
returns text
language sql
stable
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select case
           when q.id is not null then
             case when q.lease_expires > clock_timestamp() then 'in flight'
                  when q.last_error is not null then 'waiting to retry'
                  else 'queued' end
           when r.id is not null then
             case when r.error_kind = 'cancelled' then 'cancelled'
                  when net._failed(r.status_code, r.error_msg) then 'failed'
                  else 'succeeded' end
           else 'unknown'
         end
  from (select request_id) as wanted(id)
  left join net.http_request_queue q on q.id = wanted.id
  left join net._http_response r on r.id = wanted.id
$$;
comment on function net.request_status(bigint) is
  'queued / in flight / waiting to retry / succeeded / failed / cancelled / unknown';

-- Requests that failed for good, newest first, with what net.retry() would send again. A
-- cancelled request (net.cancel) did not fail: it is not listed (net.retry still queues it again).
-- A view runs with its owner's rights, which row-level security does not restrict: it filters
-- with the same rule itself (current_user is the querying role here).
create or replace view net.failed_requests as
  select r.id, r.method, r.url, r.status_code, r.error_msg, r.timed_out, r.attempts, r.created
  from net._http_response r
  where (r.error_msg is not null or r.status_code >= 400)
    and r.error_kind is distinct from 'cancelled'
    -- (the policies' expression: (select …) runs once per query, not once per row)
    and (coalesce(pg_catalog.pg_has_role(current_user, r.owner::oid, 'MEMBER'), false) or (select net._sees_all()))
  order by r.created desc, r.id desc;
comment on view net.failed_requests is
  'Finished requests with an error or a 4xx/5xx status; net.retry(id) queues one again';

-- Queues a failed request again under the same id (its response row is removed, so
-- net.request_status and net.http_collect_response follow the new attempt). Its method, url,
-- headers, body, timeout and retry policy are the stored ones; max_attempts (at most 10) may be
-- overridden, and delay (at most 1 day) postpones it. SECURITY INVOKER: the caller proves it may
-- see the request with an UPDATE that row-level security gates (it also locks the row: of two
-- concurrent retries the second finds it gone); net._requeue then moves it back to the queue.
create or replace function net.retry(request_id bigint, max_attempts int default null, delay interval default null)
returns bigint
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  r record;
begin
  update net._http_response x set retry_claim = clock_timestamp()
   where x.id = request_id
  returning x.status_code, x.error_msg, (x.method is not null and x.url is not null) as resendable into r;
  if not found then
    if exists (select from net.http_request_queue q where q.id = request_id) then
      raise exception 'request % is still %; only finished requests can be retried', request_id,
                      net.request_status(request_id)
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    raise exception 'request % not found (never queued, or its response was deleted after pg_net.ttl)', request_id
      using errcode = 'no_data_found';
  end if;
  if not net._failed(r.status_code, r.error_msg) then
    raise exception 'request % succeeded (HTTP %); only failed requests can be retried', request_id, r.status_code
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  if not r.resendable then
    raise exception 'request % has no stored request to send again (it finished before pg-net-edge schema v2)', request_id
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  if max_attempts is not null and (max_attempts < 1 or max_attempts > 10) then
    raise exception 'max_attempts must be between 1 and 10 for a retry, got %', max_attempts
      using errcode = 'invalid_parameter_value';
  end if;
  if delay < interval '0' or delay > interval '1 day' then
    raise exception 'delay must be between 0 and 1 day, got %', delay using errcode = 'invalid_parameter_value';
  end if;
  return net._requeue(request_id, max_attempts, delay);
end
$$;

-- True when a row version with this xmin was written by the current transaction (or one of its
-- subtransactions): a visible row version whose writer is still in progress can only be ours.
create or replace function net._written_by_current_transaction(row_xid xid)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  mine    bigint := pg_current_xact_id_if_assigned()::text::bigint;
  widened bigint;
begin
  if mine is null or row_xid is null then
    return false;
  end if;
  -- xmin is 32 bits; widen it to a full xid8 using the epoch of our own xid.
  widened := (mine & ~4294967295::bigint) | row_xid::text::bigint;
  if widened > mine + 2147483648 then
    widened := widened - 4294967296;
  elsif widened < mine - 2147483648 then
    widened := widened + 4294967296;
  end if;
  return pg_xact_status(widened::text::xid8) = 'in progress';
exception when others then
  return false;
end
$$;

-- net.retry's second half, as the owner of net (PUBLIC can't write the queue's lease columns or
-- delete responses). Anyone may call it, so it checks itself that the caller's transaction has
-- just written the response row (net.retry's RLS-gated UPDATE): another role's id answers
-- exactly like an unknown one.
create or replace function net._requeue(request_id bigint, max_attempts int, delay interval)
returns bigint
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r       net._http_response%rowtype;
  row_xid xid;
begin
  select x.xmin into row_xid from net._http_response x where x.id = request_id for update;
  if not net._written_by_current_transaction(row_xid) then
    raise exception 'request % not found (never queued, or its response was deleted after pg_net.ttl)', request_id
      using errcode = 'no_data_found';
  end if;
  if max_attempts is not null and (max_attempts < 1 or max_attempts > 10) then
    raise exception 'max_attempts must be between 1 and 10 for a retry, got %', max_attempts
      using errcode = 'invalid_parameter_value';
  end if;
  if delay < interval '0' or delay > interval '1 day' then
    raise exception 'delay must be between 0 and 1 day, got %', delay using errcode = 'invalid_parameter_value';
  end if;
  select * into r from net._http_response x where x.id = request_id;
  if not net._failed(r.status_code, r.error_msg) or r.method is null or r.url is null then
    raise exception 'request % cannot be retried (it succeeded or has no stored request)', request_id
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  insert into net.http_request_queue (id, method, url, headers, body, timeout_milliseconds, max_attempts,
                                      retry_max_delay_ms, not_before, owner)
  values (r.id, r.method, r.url, coalesce(r.request_headers, '{}'), r.request_body,
          coalesce(r.timeout_milliseconds, 2000), least(coalesce(max_attempts, r.max_attempts, 1), 50),
          coalesce(r.retry_max_delay_ms, 60000), clock_timestamp() + delay, r.owner);
  delete from net._http_response x where x.id = request_id;
  perform pg_notify('pg_net_edge_wake', '');
  return request_id;
end
$$;

-- Cancels a request that is still waiting: queued, delayed (not_before) or waiting to retry, and
-- held by no drain. It leaves the queue and ends with a response row (error_kind 'cancelled',
-- error_msg 'Request cancelled …', the request kept so net.retry can queue it again), so collect
-- and net.request_status answer at once. True when cancelled. False when a drain holds it (in
-- flight: it can't be recalled), and for a finished, unknown or another role's id alike.
-- SECURITY INVOKER, as net.retry: the caller proves it may see the request with an UPDATE that
-- row-level security gates (own_requests, and cancel_unclaimed: no drain holds it). Its row lock
-- is what keeps a claim and a cancel from both happening: net._claim skips a row this locked,
-- and a claim that locked the row first leaves it held, so this UPDATE (which waits for that
-- claim, then looks at the row again) finds nothing. net._cancel then ends it as the owner of net.
create or replace function net.cancel(request_id bigint)
returns boolean
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
begin
  update net.http_request_queue q set cancel_claim = clock_timestamp()
   where q.id = request_id and q.lease_owner is null;
  if not found then
    return false;
  end if;
  return net._cancel(request_id);
end
$$;
comment on function net.cancel(bigint) is
  'Cancels a request that is queued, delayed or waiting to retry (not one a drain holds). True when cancelled.';

-- net.cancel's second half, as the owner of net (PUBLIC can't delete from the queue nor write
-- responses). Anyone may call it, so it checks itself that the caller's transaction has just
-- written the queue row (net.cancel's RLS-gated UPDATE): another role's id answers false, exactly
-- like an unknown one. SKIP LOCKED: a row locked by another transaction was not proven by this
-- one, and nobody waits on it here.
create or replace function net._cancel(request_id bigint)
returns boolean
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  q record;
begin
  select x.xmin as row_xid, x.lease_owner, x.attempts, x.max_attempts, x.last_error into q
    from net.http_request_queue x where x.id = request_id
     for update skip locked;
  if not found or not net._written_by_current_transaction(q.row_xid) or q.lease_owner is not null then
    return false;
  end if;
  perform net._finish_poisoned(request_id,
    case when q.last_error is null then 'Request cancelled before it was sent'
         else format('Request cancelled while waiting to retry (attempt %s of %s failed: %s)',
                     q.attempts, q.max_attempts, q.last_error) end,
    'cancelled');
  return true;
end
$$;

-- True when the queue row for request_id was inserted by this transaction (or one of its
-- subtransactions): such a row is only sent after commit, so waiting for it inside this
-- transaction would never end. A row we can see whose inserting transaction is still in
-- progress can only be ours (other transactions' uncommitted rows are invisible).
create or replace function net._queued_by_current_transaction(request_id bigint)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  mine    bigint := pg_current_xact_id_if_assigned()::text::bigint;
  row_xid bigint;
  widened bigint;
begin
  if mine is null then
    return false;  -- this transaction has written nothing
  end if;
  select q.xmin::text::bigint into row_xid from net.http_request_queue q where q.id = request_id;
  if row_xid is null then
    return false;
  end if;
  -- xmin is 32 bits; widen it to a full xid8 using the epoch of our own xid.
  widened := (mine & ~4294967295::bigint) | row_xid;
  if widened > mine + 2147483648 then
    widened := widened - 4294967296;
  elsif widened < mine - 2147483648 then
    widened := widened + 4294967296;
  end if;
  return pg_xact_status(widened::text::xid8) = 'in progress';
exception when others then
  return false;  -- e.g. an xid too old for the commit log: certainly not ours
end
$$;

-- When a worker last checked in (net._worker_status is not readable by PUBLIC: it holds drain stats).
create or replace function net._worker_last_seen()
returns timestamptz
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.last_seen from net._worker_status s where s.id = 1
$$;

-- pg_net's collect_response: SUCCESS with the response, ERROR with the worker's error message,
-- PENDING while queued (also while waiting to retry), ERROR 'request matching request_id not
-- found' when unknown (pg_net can't tell those two apart). async := false waits for the final
-- response, up to the request's own budget: from when it is due, max_attempts × (timeout + 65 s,
-- a cron period and some) + (max_attempts − 1) × retry_max_delay_ms.
create or replace function net._http_collect_response(request_id bigint, async boolean default true)
returns net.http_response_result
language plpgsql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
declare
  response net._http_response%rowtype;
  queued   net.http_request_queue%rowtype;
  status   text;
  budget   bigint;
  deadline timestamptz;
  seen     timestamptz;
  due_at   timestamptz;
begin
  loop
    -- Each statement takes a fresh snapshot (READ COMMITTED), so the loop sees the worker's commits.
    select * into response from net._http_response r where r.id = request_id;
    if found then
      if response.error_msg is not null then
        return row('ERROR', response.error_msg, null)::net.http_response_result;
      end if;
      return row('SUCCESS', 'ok',
                 row(response.status_code, response.headers, response.content)::net.http_response
                )::net.http_response_result;
    end if;
    select * into queued from net.http_request_queue q where q.id = request_id;
    if not found then
      status := net.request_status(request_id);
      if status in ('succeeded', 'failed', 'cancelled') then
        continue;  -- recorded between our two reads: read the response again
      end if;
      return row('ERROR', 'request matching request_id not found', null)::net.http_response_result;
    end if;
    if async or async is null then
      if queued.last_error is not null and (queued.lease_expires is null or queued.lease_expires <= clock_timestamp()) then
        return row('PENDING', format('request is pending: waiting to retry at %s after attempt %s of %s failed: %s',
                                     queued.not_before, queued.attempts, queued.max_attempts, queued.last_error),
                   null)::net.http_response_result;
      end if;
      return row('PENDING', 'request is pending', null)::net.http_response_result;
    end if;
    if deadline is null then
      if net._queued_by_current_transaction(request_id) then
        raise exception 'request % was queued by the current transaction; requests are sent only after commit, so it cannot be waited for here', request_id
          using errcode = 'object_not_in_prerequisite_state',
                hint = 'Commit first, then call net.http_collect_response(id, async := false) in a new transaction.';
      end if;
      -- No worker has checked in lately and none holds the request: waiting would only end in
      -- the same answer minutes later, so answer now. Only a request that just came due gets a
      -- few seconds, for a drain the relay woke at its commit to claim it (a drain checks in
      -- when it ends; on a fresh install that is after this request).
      if not coalesce(queued.lease_expires > clock_timestamp(), false) then
        seen := net._worker_last_seen();
        if seen is null or seen < clock_timestamp() - interval '2 minutes' then
          due_at := coalesce(queued.not_before, queued.created);
          if due_at > clock_timestamp() or clock_timestamp() > due_at + interval '5 seconds' then
            return row('PENDING', format('request is pending, and %s', net._worker_down_message(seen)),
                       null)::net.http_response_result;
          end if;
          perform pg_sleep(0.05);
          continue;
        end if;
      end if;
      budget := greatest(queued.max_attempts, 1)::bigint * (queued.timeout_milliseconds + 65000)
                + (greatest(queued.max_attempts, 1) - 1)::bigint * queued.retry_max_delay_ms;
      deadline := greatest(clock_timestamp(), queued.not_before) + make_interval(secs => budget / 1000.0);
    elsif clock_timestamp() > deadline then
      return row('PENDING', format('request is still pending after waiting %s ms; is the worker running? see net.check_worker_is_up()',
                                   budget), null)::net.http_response_result;
    end if;
    perform pg_sleep(0.05);
  end loop;
end
$$;

create or replace function net.http_collect_response(request_id bigint, async boolean default true)
returns net.http_response_result
language sql
volatile
security invoker
set search_path = pg_catalog, pg_temp
as $$
  select net._http_collect_response(request_id, async)
$$;

-- Asks the worker to notice new settings (it reads net._config() on every drain anyway) by
-- waking it. Only a NOTIFY: no row lock, so the worker's check-in is never blocked by a
-- transaction that called this (pg_net's `begin; select net.worker_restart(); select
-- net.wait_until_running(); commit;` must not wait on itself). restart_requested is no longer
-- stamped for that reason.
create or replace function net.worker_restart()
returns boolean
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_notify('pg_net_edge_wake', '');
  return true;
end
$$;

-- Wakes the worker (through the relay) at commit.
create or replace function net.wake()
returns void
language sql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
  select pg_notify('pg_net_edge_wake', '')
$$;

-- The advice both checks give when the worker is silent.
create or replace function net._worker_down_message(last_seen timestamptz)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select format('no pg-net-edge worker has checked in %s; check that the Worker is deployed with its '
                || 'cron triggers (* * * * *) and that its DATABASE_URL secret or Hyperdrive binding '
                || 'reaches this database (%s)',
                case when last_seen is null then 'yet'
                     else format('since %s (%s ago)', last_seen, date_trunc('second', clock_timestamp() - last_seen)) end,
                current_database())
$$;

create or replace function net.check_worker_is_up()
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  seen timestamptz;
begin
  select s.last_seen into seen from net._worker_status s where s.id = 1;
  if seen is null or seen < clock_timestamp() - interval '2 minutes' then
    raise exception '%', net._worker_down_message(seen) using errcode = 'object_not_in_prerequisite_state';
  end if;
end
$$;

-- Waits until a worker has checked in within 2 minutes. A wake sent from an open transaction is
-- delivered only at commit, so while waiting the session shows itself in pg_stat_activity with
-- application_name 'pg-net-edge: waiting for the worker' (visible to every role): the relay
-- looks for such sessions every second and wakes the Worker. Without a relay the every-minute
-- cron checks in regardless. The caller's application_name is restored afterwards (an error
-- rolls the change back with the transaction).
create or replace function net.wait_until_running(timeout_seconds int default 70)
returns void
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(coalesce(timeout_seconds, 70), 0));
  seen     timestamptz;
  app_name text := current_setting('application_name');
  flagged  boolean := false;
begin
  perform net.wake();
  loop
    select s.last_seen into seen from net._worker_status s where s.id = 1;
    if seen >= clock_timestamp() - interval '2 minutes' then
      if flagged then
        perform set_config('application_name', app_name, false);
      end if;
      return;
    end if;
    if clock_timestamp() >= deadline then
      raise exception 'waited % s: %', greatest(coalesce(timeout_seconds, 70), 0), net._worker_down_message(seen)
        using errcode = 'object_not_in_prerequisite_state';
    end if;
    if not flagged then
      perform set_config('application_name', 'pg-net-edge: waiting for the worker', false);
      flagged := true;
    end if;
    perform pg_sleep(0.2);
  end loop;
end
$$;

-- Effective settings as the worker (the owner of schema net) sees them. pg_settings cannot list
-- placeholder variables such as pg_net.ttl on PostgreSQL 15+, so look here instead.
-- A Worker variable (TTL, BATCH_SIZE) beats the database's value: the Worker's last check-in
-- says which it overrode (last_drain.overrides), and the view shows that value and why.
create or replace view net.settings as
  select s.name,
         coalesce(o.value, s.setting) as setting,
         case when o.value is null then s.source
              else format('worker variable %s (overrides %s)', o.variable, s.source) end as source
  from pg_catalog.pg_namespace n
  cross join lateral net._settings(pg_catalog.pg_get_userbyid(n.nspowner)) s
  left join lateral (
    select w.last_drain -> 'overrides' -> s.name ->> 'variable' as variable,
           w.last_drain -> 'overrides' -> s.name ->> 'value' as value
    from net._worker_status w where w.id = 1
  ) o on true
  where n.nspname = 'net';
comment on view net.settings is 'pg_net.ttl, pg_net.batch_size and pg_net.max_attempts as pg-net-edge sees them';

-------------------------------------------------------------------------------------------------
-- 5. Worker-facing API (EXECUTE revoked from PUBLIC; the worker connects as the owner)
-------------------------------------------------------------------------------------------------

-- Claims up to max_rows free and due requests (not_before passed), oldest first, skipping rows
-- another drain has locked, and stamps a lease long enough for the request's timeout plus a margin.
-- after_id (a drain's hint: the highest id it has claimed) starts the id-ordered scan there. The
-- rows it has already recorded stay in the index as dead entries until vacuum, and while any
-- transaction in the database is older than them (a long report, pg_dump) none can be skipped
-- cheaply: each claim from the start walked them all, slower with every row drained (10,000
-- rows: 2.5 ms per claim at first, 18-25 ms at the end). A drain claims without the hint now and
-- then, and before it concludes the queue is empty, for rows below it freed by an expired lease.
drop function if exists net._claim(text, int, int, int);
drop function if exists net._claim(text, int, int, int, bigint);
-- Poison-proofing (SPEC section 7): a row that can't be claimed safely ends here with an error
-- response instead of stalling the queue or being sent for ever:
--   * its body alone is over max_bytes (the claiming worker's memory budget per claim);
--   * its lease expired for the 3rd time (each time the drain that held it died);
--   * it has used up max_attempts.
-- The claim stops adding rows once their bodies total more than max_bytes (always at least one).
-- A re-claim after an expired lease is a re-send of the same attempt: attempts is not increased.
create or replace function net._claim(owner text, max_rows int, lease_margin_ms int default 30000,
                                      max_timeout_ms int default null, after_id bigint default null,
                                      max_bytes bigint default null)
returns setof net._claimed
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted   int := greatest(coalesce(max_rows, 0), 0);
  c        record;
  total    bigint := 0;
  taken    bigint[] := '{}';
  expired  bigint[] := '{}';
  finished int;
begin
  if wanted = 0 then
    return;
  end if;
  -- A claim whose rows were all finished as poison looks again (a few times), so a drain doesn't
  -- take the empty answer for an empty queue.
  for round in 1..5 loop  -- (the loop body is not indented, to keep the claim query readable)
  finished := 0;
  -- Two index paths, so rows scheduled for later are never scanned: rows without not_before
  -- (the usual case; claiming clears it) in id order, and rows whose not_before has passed.
  -- Each locks at most max_rows; rows locked but not picked are released when this statement's
  -- transaction ends (other drains skip them meanwhile and get them next time).
  for c in
    with plain as (
      select q.id
      from net.http_request_queue q
      where q.not_before is null
        and q.id > coalesce(after_id, 0)
        and (q.lease_expires is null or q.lease_expires <= clock_timestamp())
        and (max_timeout_ms is null or q.timeout_milliseconds <= max_timeout_ms)
      order by q.id
      limit wanted
      for update skip locked
    ), due as (
      select q.id
      from net.http_request_queue q
      -- statement_timestamp(), not clock_timestamp(): only a stable value can drive the index scan.
      where q.not_before <= statement_timestamp()
        and (q.lease_expires is null or q.lease_expires <= clock_timestamp())
        and (max_timeout_ms is null or q.timeout_milliseconds <= max_timeout_ms)
      -- Earliest due first, in not_before order: ordered by id, the planner walked the primary key
      -- and filtered every queued row (20,000 rows read per claim under a deep queue).
      order by q.not_before
      limit wanted
      for update skip locked
    ), picked as (
      select u.id from (select id from plain union all select id from due) u
      order by u.id
      limit wanted
    )
    -- octet_length of a bytea reads its stored size: the body itself is not loaded here.
    select q.id, coalesce(octet_length(q.body), 0)::bigint as bytes,
           (q.lease_owner is not null and q.lease_expires is not null) as lease_expired,
           q.expired_leases, q.attempts, q.max_attempts
    from net.http_request_queue q
    join picked p on p.id = q.id
    order by q.id
  loop
    if c.lease_expired and c.expired_leases + 1 >= 3 then
      perform net._finish_poisoned(c.id, format(
        'request abandoned: its lease expired %s times (its drain died 3 times while sending it, '
        || 'e.g. the response was too large for the worker''s memory or the worker was stopped); it is not sent again',
        c.expired_leases + 1), 'internal');
      finished := finished + 1;
    elsif max_bytes is not null and c.bytes > max_bytes then
      perform net._finish_poisoned(c.id, format(
        'request not sent: its body is %s bytes, more than this worker claims at once (%s bytes); '
        || 'lower pg_net.max_body_bytes or raise the worker''s claim limit', c.bytes, max_bytes), 'too_large');
      finished := finished + 1;
    elsif not c.lease_expired and c.attempts >= c.max_attempts then
      perform net._finish_poisoned(c.id, format(
        'request not sent again: it already used its %s of %s attempts', c.attempts, c.max_attempts), 'other');
      finished := finished + 1;
    elsif max_bytes is not null and total + c.bytes > max_bytes and cardinality(taken) > 0 then
      exit;  -- the rest waits for the next claim
    else
      taken := taken || c.id;
      total := total + c.bytes;
      if c.lease_expired then
        expired := expired || c.id;
      end if;
    end if;
  end loop;
  exit when cardinality(taken) > 0 or finished = 0;
  end loop;
  if cardinality(taken) = 0 then
    return;
  end if;
  return query
    with claimed as (
      update net.http_request_queue q
         set lease_owner    = _claim.owner,
             not_before     = null,
             lease_expires  = clock_timestamp()
                              + make_interval(secs => (q.timeout_milliseconds + coalesce(lease_margin_ms, 30000)) / 1000.0),
             attempts       = case when q.id = any(expired) then greatest(q.attempts, 1) else q.attempts + 1 end,
             expired_leases = case when q.id = any(expired) then q.expired_leases + 1 else q.expired_leases end
       where q.id = any(taken)
      returning q.id, q.method, q.url, q.headers, q.body, q.timeout_milliseconds, q.attempts
    )
    select c2.id, c2.method, c2.url, c2.headers, c2.body, c2.timeout_milliseconds, c2.attempts
    from claimed c2
    order by c2.id;
end
$$;

-- Ends a queued request with an error response (kept with its request, so net.retry can send it
-- again once the cause is fixed). Used by net._claim for rows that must not be claimed; kind is
-- the row's error_kind (v4).
drop function if exists net._finish_poisoned(bigint, text);
create or replace function net._finish_poisoned(request_id bigint, message text, kind text)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with gone as (
    delete from net.http_request_queue q where q.id = request_id
    returning q.id, q.method, q.url, q.headers, q.body, q.timeout_milliseconds, q.attempts, q.max_attempts,
              q.retry_max_delay_ms, q.owner
  )
  insert into net._http_response (id, timed_out, error_msg, attempts, method, url, request_headers, request_body,
                                  timeout_milliseconds, max_attempts, retry_max_delay_ms, owner, error_kind)
  select g.id, false, message, g.attempts, g.method, g.url, g.headers, g.body, g.timeout_milliseconds,
         g.max_attempts, g.retry_max_delay_ms, g.owner, kind
  from gone g
  on conflict (id) do update
    set status_code = null, content_type = null, headers = null, content = null, content_bytes = null,
        headers_all = null, timed_out = excluded.timed_out, error_msg = excluded.error_msg,
        created = excluded.created, attempts = excluded.attempts, method = excluded.method, url = excluded.url,
        request_headers = excluded.request_headers, request_body = excluded.request_body,
        timeout_milliseconds = excluded.timeout_milliseconds, max_attempts = excluded.max_attempts,
        retry_max_delay_ms = excluded.retry_max_delay_ms, owner = excluded.owner, error_kind = excluded.error_kind
$$;

-- Gives back rows a drain claimed but has not started (its fetch slots are all held by slow
-- requests, and another drain can send them now): free at once, as if never claimed (the claim's
-- attempt is taken back). They are marked due now (not_before), so net._claim finds them on its
-- due path even when the claiming drain's after_id hint is past them. Rows this owner no longer
-- holds are left alone. Returns how many.
create or replace function net._release(owner text, ids text)
returns int
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with released as (
    update net.http_request_queue q
       set lease_owner   = null,
           lease_expires = null,
           not_before    = clock_timestamp(),
           attempts      = greatest(q.attempts - 1, 0)
     where q.id = any(string_to_array(ids, ',')::bigint[])
       and q.lease_owner = _release.owner  -- qualified: the queue has an owner column (v3)
    returning 1
  )
  select count(*)::int from released
$$;

-- Records finished requests in one statement: deletes the queue rows this owner still holds
-- and inserts one response per deleted row (a drain whose lease was taken over records nothing).
-- An outcome with retry_in_ms (the drain judged it retryable and chose the delay) whose request
-- has attempts left is not a response: its row is released, due again after that delay (capped
-- by the request's retry_max_delay_ms). Returns how many outcomes were taken (both kinds).
create or replace function net._record(owner text, responses jsonb)
returns int
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with incoming as (
    select distinct on (r.id) r.*
    from jsonb_to_recordset(coalesce(responses, '[]'::jsonb)) as r(
      id bigint, status_code int, content_type text, headers jsonb, content text,
      content_base64 text, timed_out boolean, error_msg text, headers_all jsonb, retry_in_ms bigint, error_kind text)
    where r.id is not null
    order by r.id
  ), retried as (
    update net.http_request_queue q
       set lease_owner   = null,
           lease_expires = null,
           not_before    = clock_timestamp()
                           + make_interval(secs => least(greatest(i.retry_in_ms, 0), q.retry_max_delay_ms) / 1000.0),
           last_error    = coalesce(i.error_msg, 'HTTP ' || i.status_code, 'failed')
      from incoming i
     where q.id = i.id and q.lease_owner = _record.owner  -- qualified: the queue has an owner column (v3)
       and i.retry_in_ms is not null and q.attempts < q.max_attempts
    returning q.id
  ), done as (
    -- The complement of "retried" (same snapshot, so no row is in both).
    delete from net.http_request_queue q
    using incoming i
    where q.id = i.id and q.lease_owner = _record.owner
      and not (i.retry_in_ms is not null and q.attempts < q.max_attempts)
    returning q.id, q.method, q.url, q.headers, q.body, q.timeout_milliseconds, q.attempts, q.max_attempts,
              q.retry_max_delay_ms, q.owner  -- v3: the response keeps the request's owner
  ), inserted as (
    insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg, content_bytes,
                                    attempts, headers_all, method, url, request_headers, request_body,
                                    timeout_milliseconds, max_attempts, retry_max_delay_ms, owner, error_kind)
    select i.id, i.status_code, i.content_type, nullif(i.headers, 'null'::jsonb), i.content, i.timed_out, i.error_msg,
           decode(i.content_base64, 'base64'), d.attempts, nullif(i.headers_all, 'null'::jsonb),
           -- The request itself is kept only when it failed, for net.retry().
           case when f.failed then d.method end, case when f.failed then d.url end,
           case when f.failed then d.headers end, case when f.failed then d.body end,
           case when f.failed then d.timeout_milliseconds end, case when f.failed then d.max_attempts end,
           case when f.failed then d.retry_max_delay_ms end, d.owner,
           -- A failure without a kind (an older worker) is "other"; a response without error none.
           case when i.error_msg is not null then coalesce(i.error_kind, 'other') end
    from incoming i
    join done d on d.id = i.id
    -- net._failed(), inlined: a function with SET search_path is called per row, not inlined.
    cross join lateral (select i.error_msg is not null or coalesce(i.status_code >= 400, false) as failed) f
    -- A stale row with the same id (e.g. after a sequence reset) must not block the new result.
    on conflict (id) do update
      set status_code = excluded.status_code, content_type = excluded.content_type,
          headers = excluded.headers, content = excluded.content, timed_out = excluded.timed_out,
          error_msg = excluded.error_msg, created = excluded.created, content_bytes = excluded.content_bytes,
          attempts = excluded.attempts, headers_all = excluded.headers_all, method = excluded.method,
          url = excluded.url, request_headers = excluded.request_headers, request_body = excluded.request_body,
          timeout_milliseconds = excluded.timeout_milliseconds, max_attempts = excluded.max_attempts,
          retry_max_delay_ms = excluded.retry_max_delay_ms, owner = excluded.owner, error_kind = excluded.error_kind
    returning 1
  )
  select ((select count(*) from inserted) + (select count(*) from retried))::int
$$;

-- Milliseconds until the next request that is not due yet (delayed, or waiting to retry) becomes
-- due, or null when there is none: a drain about to stop waits for it if that fits its budget.
-- Only requests whose timeout is at most max_timeout_ms count (when given), as in net._claim.
create or replace function net._next_due_ms(max_timeout_ms int default null)
returns bigint
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select ceil(extract(epoch from (min(q.not_before) - clock_timestamp())) * 1000)::bigint
  from net.http_request_queue q
  where q.not_before > clock_timestamp()
    and (q.lease_expires is null or q.lease_expires <= clock_timestamp())
    and (max_timeout_ms is null or q.timeout_milliseconds <= max_timeout_ms)
$$;

-- {"ttl": "<interval>", "batch_size": <int>} for the calling role in this database, plus
-- "denied_destinations" / "allowed_destinations" (text) when set.
create or replace function net._config()
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'ttl',        max(s.setting) filter (where s.name = 'pg_net.ttl'),
    'batch_size', (max(s.setting) filter (where s.name = 'pg_net.batch_size'))::int)
    -- Only when set: the owner of net's catalog settings (see net._destination_setting).
    || jsonb_strip_nulls(jsonb_build_object(
         'denied_destinations',  net._destination_setting('pg_net.denied_destinations'),
         'allowed_destinations', net._destination_setting('pg_net.allowed_destinations')))
  from net._settings(current_user) s
$$;

-- Deletes up to max_rows responses older than ttl (oldest first); returns how many.
create or replace function net._sweep(ttl interval, max_rows int default 10000)
returns int
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with doomed as (
    delete from net._http_response r
    where r.ctid = any (array(
      select o.ctid from net._http_response o
      where o.created < now() - ttl
      order by o.created
      limit greatest(coalesce(max_rows, 0), 0)
      for update skip locked))
    returning 1
  )
  select count(*)::int from doomed
$$;

-- The worker checks in after each drain; null last_drain keeps the previous one.
create or replace function net._heartbeat(last_drain jsonb)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  insert into net._worker_status as s (id, last_seen, last_drain)
  values (1, now(), last_drain)
  on conflict (id) do update
    set last_seen = excluded.last_seen,
        last_drain = coalesce(excluded.last_drain, s.last_drain)
$$;

-- What GET /health reports about the database side.
create or replace function net._health()
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'queue_depth',          q.depth,
    'in_flight',            q.in_flight,
    'oldest_queued_age_ms', (extract(epoch from (clock_timestamp() - q.oldest)) * 1000)::bigint,
    'last_seen',            w.last_seen,
    'last_drain',           w.last_drain,
    'schema_version',       (select max(m.version) from net._migrations m))
  from (select count(*)::int as depth,
               (count(*) filter (where lease_expires > clock_timestamp()))::int as in_flight,
               -- Delayed requests and ones waiting to retry count from when they became due.
               min(greatest(created, coalesce(not_before, created)))
                 filter (where not_before is null or not_before <= clock_timestamp()) as oldest
        from net.http_request_queue) q
  left join net._worker_status w on w.id = 1
$$;

-------------------------------------------------------------------------------------------------
-- 6. Privileges: anyone may queue and read its own results, through the API or the tables
--    (row-level security); only the owner (the worker's role) writes the worker's columns and
--    calls the worker-facing functions.
-------------------------------------------------------------------------------------------------

grant usage on schema net to public;

revoke all on all tables in schema net from public;
revoke all on all sequences in schema net from public;

revoke execute on all functions in schema net from public;
grant execute on function
  net.http_get(text, jsonb, jsonb, int),
  net.http_post(text, jsonb, jsonb, jsonb, int),
  net.http_delete(text, jsonb, jsonb, int, jsonb),
  net._http_collect_response(bigint, boolean),
  net.http_collect_response(bigint, boolean),
  net.worker_restart(),
  net.wake(),
  net.check_worker_is_up(),
  net.wait_until_running(int),
  net.http_request(text, text, jsonb, jsonb, jsonb, int, int, timestamptz, interval, int),
  net.http_request(text, text, text, jsonb, jsonb, int, int, timestamptz, interval, int),
  net.http_request(text, text, json, jsonb, jsonb, int, int, timestamptz, interval, int),
  net.http_request(text, text, bytea, jsonb, jsonb, int, int, timestamptz, interval, int),
  net.http_put(text, jsonb, jsonb, jsonb, int),
  net.http_patch(text, jsonb, jsonb, jsonb, int),
  net.http_post_form(text, jsonb, jsonb, jsonb, int),
  net.form_urlencode(jsonb),
  net.request_status(bigint),
  net.retry(bigint, int, interval),
  net.cancel(bigint),
  -- net.settings calls it as the querying role; it only reads pg_db_role_setting (public anyway).
  net._settings(name),
  net._positive_interval(text),
  -- The API is SECURITY INVOKER (v3): its helpers run as the caller. None of them reaches a row
  -- the caller couldn't reach with a plain statement; net._requeue checks for itself.
  net._enqueue(text, text, jsonb, jsonb, bytea, int, int, timestamptz, int),
  net._enqueue(text, text, jsonb, jsonb, bytea, int),
  net._request(text, text, bytea, text, jsonb, jsonb, int, int, timestamptz, interval, int),
  net._json_request(text, text, jsonb, jsonb, jsonb, int),
  net._check_url(text),
  net._check_headers(jsonb),
  net._with_params(text, jsonb),
  net._urlencode(text),
  net._default_max_attempts(),
  net._failed(int, text),
  net._queued_by_current_transaction(bigint),
  net._written_by_current_transaction(xid),
  net._worker_down_message(timestamptz),
  net._worker_last_seen(),
  net._requeue(bigint, int, interval),
  net._cancel(bigint),
  net._sees_all(),
  net._limits(),
  net._limit_hint(text, bigint),
  -- The destination check runs in the insert trigger, as the caller.
  net._destination_setting(text),
  net._parse_ipv4(text),
  net._parse_address(text),
  net._embedded_ipv4(inet),
  net._destination_matches(text, inet, text, text),
  net._check_destination(text),
  -- pg_net's URL helpers: pure functions, callable as in pg_net.
  net._urlencode_string(varchar),
  net._encode_url_with_params_array(text, text[])
to public;
grant select on net.settings, net.failed_requests to public;

-- Row-level security (v3, SPEC section 7). Every role may read both tables, as with pg_net, but
-- sees only the rows of roles it is a member of (or all: net._sees_all); it may queue requests directly
-- (only the request's own columns: owner defaults to current_user, leases stay the worker's),
-- stamp retry_claim on its own responses (net.retry's proof of visibility) and cancel_claim on
-- its own requests that no drain holds (net.cancel's).
grant select on net.http_request_queue, net._http_response to public;
grant insert (method, url, headers, body, timeout_milliseconds, not_before, max_attempts, retry_max_delay_ms)
  on net.http_request_queue to public;
grant update (retry_claim) on net._http_response to public;
grant update (cancel_claim) on net.http_request_queue to public;
grant usage on sequence net.http_request_queue_id_seq to public;

drop policy if exists own_requests on net.http_request_queue;
create policy own_requests on net.http_request_queue
  using (coalesce(pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER'), false) or (select net._sees_all()));
drop policy if exists own_responses on net._http_response;
create policy own_responses on net._http_response
  using (coalesce(pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER'), false) or (select net._sees_all()));
-- A role may lock (UPDATE, or SELECT … FOR UPDATE, which needs the same privilege) only queue rows
-- no drain holds (lease_owner null): a lock held in an open transaction then never blocks the
-- worker, whose net._record and net._release touch only rows their drain holds, and whose
-- net._claim skips locked rows. Restrictive: on top of own_requests. (A row whose lease expired
-- still has lease_owner: the next claim sends it again, and it can't be cancelled meanwhile.)
drop policy if exists cancel_unclaimed on net.http_request_queue;
create policy cancel_unclaimed on net.http_request_queue as restrictive for update
  using (lease_owner is null);
-- Enabled on every run (not only by migration 3), so a re-install restores it. The worker
-- (owner of net) must keep bypassing these policies: never FORCE ROW LEVEL SECURITY.
alter table net.http_request_queue enable row level security, no force row level security;
alter table net._http_response enable row level security, no force row level security;

-- Every queued row passes the call-time checks (net._check_queue_row), however it is inserted.
drop trigger if exists http_request_queue_check on net.http_request_queue;
create trigger http_request_queue_check
  before insert on net.http_request_queue
  for each row execute function net._check_queue_row();

commit;
