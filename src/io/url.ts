/**
 * URLs given where a file goes: recognising them, showing them without secrets, and resolving a shard
 * file name next to an index URL.
 */
import { CheckpointError } from './errors.js';

/** `http://` and `https://` arguments are URLs; everything else (including `file:`) is a local path. */
export function isUrl(path: string): boolean {
  return /^https?:\/\//i.test(path);
}

/** Parses a URL argument; anything `new URL` refuses is a usage error naming the (redacted) argument. */
export function parseUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CheckpointError('USAGE', redactText(text), 'not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CheckpointError('USAGE', redactUrl(url), 'only http:// and https:// URLs are read');
  return url;
}

/**
 * The URL as shown in reports and errors: user name and password become `***`, the query string (signed
 * URLs carry their signature there) becomes `?<redacted>`, the fragment is dropped.
 */
export function redactUrl(url: URL): string {
  const auth = url.username || url.password ? '***@' : '';
  return `${url.protocol}//${auth}${url.host}${url.pathname}${url.search ? '?<redacted>' : ''}`;
}

/** For text that did not even parse as a URL: cut at the first `?` or `#`, hide anything before an `@`. */
function redactText(text: string): string {
  const cut = text.search(/[?#]/);
  const head = cut < 0 ? text : `${text.slice(0, cut)}?<redacted>`;
  return head.replace(/^([a-z]+:\/\/)[^/]*@/i, '$1***@');
}

/**
 * A shard of a sharded index at `indexUrl`: the plain file name (sharded/read.ts already refused names
 * with `/`, `\` or `..`) percent-encoded, in the index's own folder. The index's query string is not
 * carried over: a signature for one object never covers another.
 */
export function siblingUrl(indexUrl: string, name: string): string {
  return new URL(encodeURIComponent(name), parseUrl(indexUrl)).href;
}

/** The path part of a URL argument (decoded), for rules that look at a file name such as `.json`. */
export function urlFileName(text: string): string {
  const path = parseUrl(text).pathname;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}
