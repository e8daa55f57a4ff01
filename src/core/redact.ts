// Connection strings without their passwords, for anything printed or logged, in Node or workerd.

/** A connection string with the password replaced, safe to print. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable URL>';
  }
}

/** Text (an error message, say) with the credentials of every URL in it hidden. */
export function redactUrlsIn(text: string): string {
  return text.replace(/(:\/\/)[^\s/@]*@/g, '$1***@');
}
