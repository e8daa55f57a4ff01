// wrangler dev's local Hyperdrive (CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_<BINDING>)
// rejects a connection string without a password ("You must provide a password"), even for a
// server with trust authentication. Such a server ignores the password, so a placeholder is
// given; a server that asks for one would have refused the URL without it anyway.
export function hyperdriveLocalUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) return databaseUrl;
    if (!url.username) url.username = 'postgres';
    url.password = 'unused';
    return url.toString();
  } catch {
    return databaseUrl;
  }
}
