/**
 * One remote file read with HTTP range requests (RFC 9110 §14), one single range per request, through
 * Node's built-in fetch:
 *
 *   GET <url>  Range: bytes=<first>-<last>  Accept-Encoding: identity
 *   -> 206 Partial Content, Content-Range: bytes <first>-<last>/<size>, exactly last-first+1 body bytes
 *
 * Redirects are followed here (fetch's `redirect: 'manual'`), not by fetch, so that the user's headers
 * and the Hugging Face token go to the user's own host only and never after a hop to another host
 * (remote-session.ts decides). After the first chain, requests go straight to where it ended (a hub's
 * CDN), and back through the original URL once if that target stops answering (signed URLs expire).
 *
 * Never a mixed view: the first response's ETag (or, without one, its Last-Modified) and size must be
 * those of every later response. A 200 to a range request means the server ignores Range; it is only
 * accepted when it is the whole file and no larger than what was asked for, or with --allow-download.
 * Connection resets, truncated bodies, 429 and 5xx are retried with backoff a bounded number of times;
 * a request that makes no progress for --timeout seconds fails.
 */
import { CheckpointError } from './errors.js';
import { LIMITS } from './limits.js';
import { type RemoteSession, formatBudget, sameHost } from './remote-session.js';
import { redactUrl } from './url.js';
import { downloadBody } from './http-download.js';

/** Attempts per range (the first and two retries), with backoff 250 ms, then 500 ms. */
const ATTEMPTS = 3;
const BACKOFF_MS = 250;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Network errors worth another attempt (undici names a dropped connection UND_ERR_SOCKET). */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ETIMEDOUT', 'ECONNABORTED']);
/** The target of a cached redirect may have expired: go through the original URL again on these. */
const STALE_TARGET_STATUSES = new Set([401, 403, 404, 410]);

export type ProbeResult =
  | { kind: 'range'; size: number; head: Uint8Array }
  | { kind: 'download'; size: number; file: string; cleanup: () => void };

/** A failure that another attempt may not repeat; carries the error to throw if it does. */
class Transient extends Error {
  constructor(readonly error: CheckpointError) {
    super(error.message);
  }
}

interface Validator {
  etag: string | null;
  lastModified: string | null;
}

export class RemoteFile {
  readonly display: string;
  /** Known after the probe. */
  size = -1;
  private validator: Validator | null = null;
  /** Where the last redirect chain ended, and whether it left the user's host on the way. */
  private target: { url: URL; leftHost: boolean } | null = null;
  /** Requests in flight, aborted by abortAll() when the source closes (a failed read leaves others running). */
  private readonly active = new Set<AbortController>();
  private aborted = false;

  constructor(
    private readonly original: URL,
    private readonly session: RemoteSession,
  ) {
    this.display = redactUrl(original);
  }

  /**
   * The first request: bytes 0..length-1, which also tells the file's size. A server that ignores
   * Range is refused unless the file is no larger than what was asked for, or --allow-download.
   */
  async probe(length: number): Promise<ProbeResult> {
    const head = Buffer.allocUnsafe(length);
    const result = await this.withRetries(length, (signal, arm) => this.once(0, length, head, signal, arm, true));
    if (result.kind === 'download') return result;
    return { kind: 'range', size: this.size, head: head.subarray(0, result.bytes) };
  }

  /** Exactly the bytes [start, end) into `into` (length end - start). */
  async fetchRange(start: number, end: number, into: Uint8Array): Promise<void> {
    await this.withRetries(end - start, (signal, arm) => this.once(start, end, into, signal, arm, false));
  }

  /** Stops every request in flight and refuses new ones. */
  abortAll(): void {
    this.aborted = true;
    for (const c of this.active) c.abort();
  }

  private fail(code: CheckpointError['code'], detail: string): CheckpointError {
    return new CheckpointError(code, this.display, detail);
  }

  private async withRetries<T>(length: number, run: (signal: AbortSignal, arm: () => void) => Promise<T>): Promise<T> {
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      if (this.aborted) throw this.fail('IO', 'read after close');
      this.session.commit(this.display, length);
      const controller = new AbortController();
      this.active.add(controller);
      let timedOut = false;
      let timer: NodeJS.Timeout | undefined;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          controller.abort();
        }, this.session.timeoutMs);
      };
      arm();
      try {
        return await run(controller.signal, arm);
      } catch (e) {
        if (timedOut) throw this.fail('REMOTE', `no response for ${this.session.timeoutMs / 1000} s (--timeout)`);
        if (this.aborted) throw this.fail('IO', 'read after close');
        if (e instanceof StaleTarget && !refreshed) {
          // A cached redirect target refused: resolve the original URL again, once, without using an attempt.
          refreshed = true;
          this.target = null;
          attempt--;
          continue;
        }
        const error = e instanceof StaleTarget ? e.error : e instanceof Transient ? e : networkError(this.display, e);
        if (!(error instanceof Transient)) throw error;
        if (attempt >= ATTEMPTS) throw new CheckpointError(error.error.code, this.display, `${error.error.detail} (${ATTEMPTS} attempts)`);
        await new Promise((resolve) => setTimeout(resolve, BACKOFF_MS * 2 ** (attempt - 1)));
      } finally {
        clearTimeout(timer);
        this.active.delete(controller);
      }
    }
  }

  /** One request for [start, end), redirects included; for the probe, `end` is only an upper bound. */
  private async once(start: number, end: number, into: Uint8Array, signal: AbortSignal, arm: () => void, probe: boolean): Promise<{ kind: 'range'; bytes: number } | Extract<ProbeResult, { kind: 'download' }>> {
    // Whether this request starts at the end of an earlier redirect chain rather than at the URL given.
    const fromCachedTarget = this.target !== null && this.target.url.href !== this.original.href;
    const response = await this.send(`bytes=${start}-${end - 1}`, signal, arm);
    const status = response.status;
    if (status === 206) {
      const range = parseContentRange(response.headers.get('content-range'));
      if (!range) return this.refuse(response, `answered 206 without a usable Content-Range (${clip(response.headers.get('content-range'))})`);
      this.checkEncoding(response);
      this.checkSame(response, range.total);
      const last = Math.min(end, range.total) - 1;
      if (range.first !== start || range.last !== last) {
        return this.refuse(response, `asked for bytes ${start}-${end - 1}, the server sent ${range.first}-${range.last}`);
      }
      const bytes = await readBody(response, into.subarray(0, last - start + 1), arm, this.session, this.display);
      if (bytes < last - start + 1) throw new Transient(this.fail('REMOTE', `response ended after ${bytes} of ${last - start + 1} bytes`));
      return { kind: 'range', bytes };
    }
    if (status === 200) {
      if (!probe) return this.refuse(response, 'answered a range request with the whole file (200) after answering ranges before');
      return this.wholeFile(response, into, arm);
    }
    if (status === 416) {
      const total = /^bytes \*\/(\d+)$/.exec(response.headers.get('content-range') ?? '');
      await discard(response);
      if (probe && total && Number(total[1]) === 0) {
        this.checkSame(response, 0);
        return { kind: 'range', bytes: 0 };
      }
      throw this.fail('REMOTE', `HTTP 416 Range Not Satisfiable for bytes ${start}-${end - 1}${this.size >= 0 ? ` of a ${this.size}-byte file` : ''}`);
    }
    await discard(response);
    const what = `HTTP ${status}${response.statusText ? ` ${response.statusText}` : ''}`;
    if (STALE_TARGET_STATUSES.has(status) && fromCachedTarget) throw new StaleTarget(this.statusError(status, what));
    if (status === 429 || status >= 500) throw new Transient(this.fail('REMOTE', what));
    throw this.statusError(status, what);
  }

  private statusError(status: number, what: string): CheckpointError {
    if (status === 404 || status === 410) return this.fail('NOT_FOUND', what);
    if (status === 401 || status === 403) {
      return this.fail('REMOTE', `${what}: the server wants credentials (--header 'Authorization: Bearer ...'; HF_TOKEN is sent to huggingface.co only)`);
    }
    return this.fail('REMOTE', what);
  }

  /** The request, following redirects by hand so that credentials never follow a hop to another host. */
  private async send(range: string, signal: AbortSignal, arm: () => void): Promise<Response> {
    let url = this.target?.url ?? this.original;
    let leftHost = this.target?.leftHost ?? false;
    for (let hop = 0; ; hop++) {
      const headers = { ...this.session.headersFor(url, this.original, leftHost), range, 'accept-encoding': 'identity' };
      this.session.countRequest();
      const response = await fetch(withoutCredentials(url), { headers, redirect: 'manual', signal });
      arm();
      if (!REDIRECT_STATUSES.has(response.status)) {
        this.target = { url, leftHost };
        return response;
      }
      const location = response.headers.get('location');
      await discard(response);
      if (location === null) throw this.fail('REMOTE', `HTTP ${response.status} redirect without a Location header`);
      if (hop + 1 > LIMITS.httpRedirects) throw this.fail('LIMIT', `more than ${LIMITS.httpRedirects} redirects (httpRedirects)`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw this.fail('REMOTE', `HTTP ${response.status} redirect to an invalid URL`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw this.fail('REMOTE', `redirect to a ${next.protocol} URL`);
      if (!sameHost(this.original, next)) leftHost = true;
      url = next;
    }
  }

  /** A 200 to the probe: the server ignores Range. */
  private async wholeFile(response: Response, into: Uint8Array, arm: () => void): Promise<{ kind: 'range'; bytes: number } | Extract<ProbeResult, { kind: 'download' }>> {
    this.checkEncoding(response);
    const declared = response.headers.get('content-length');
    const length = declared !== null && /^\d+$/.test(declared) ? Number(declared) : null;
    if (length !== null && length <= into.length) {
      // The whole file is no more than the first range would have been: nothing to protect against.
      this.checkSame(response, length);
      const bytes = await readBody(response, into.subarray(0, length), arm, this.session, this.display);
      if (bytes < length) throw new Transient(this.fail('REMOTE', `response ended after ${bytes} of ${length} bytes`));
      return { kind: 'range', bytes };
    }
    const size = length === null ? 'of unknown size' : formatBudget(length);
    if (!this.session.allowDownload) {
      return this.refuse(response, `the server ignores Range requests (it answered 200 with the whole file, ${size}); pass --allow-download to download it (bounded by --max-bytes)`);
    }
    if (length !== null) this.session.commit(this.display, length - into.length);
    const download = await downloadBody(response, { path: this.display, session: this.session, arm, declared: length, committed: into.length });
    this.checkSame(response, download.size);
    return { kind: 'download', ...download };
  }

  /** Range bodies must arrive as stored: fetch would silently inflate a gzip body and break every offset. */
  private checkEncoding(response: Response): void {
    const encoding = response.headers.get('content-encoding');
    if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') {
      void discard(response);
      throw this.fail('REMOTE', `the server sent the bytes with Content-Encoding ${clip(encoding)} although identity was asked for`);
    }
  }

  /** Size, ETag and Last-Modified of the first response hold for every later one. */
  private checkSame(response: Response, total: number): void {
    const seen: Validator = { etag: response.headers.get('etag'), lastModified: response.headers.get('last-modified') };
    if (this.size < 0) {
      this.size = total;
      this.validator = seen;
      return;
    }
    const changed = (what: string) => {
      void discard(response);
      return this.fail('REMOTE', `the file changed while it was being read (${what}); nothing is reported from a mix of two versions`);
    };
    const first = this.validator as Validator;
    if (first.etag !== null) {
      if (seen.etag !== first.etag) throw changed(`ETag ${clip(first.etag)}, then ${seen.etag === null ? 'none' : clip(seen.etag)}`);
    } else if (first.lastModified !== null && seen.lastModified !== first.lastModified) {
      throw changed(`Last-Modified ${clip(first.lastModified)}, then ${seen.lastModified === null ? 'none' : clip(seen.lastModified)}`);
    }
    if (total !== this.size) throw changed(`${this.size} bytes, then ${total}`);
  }

  private async refuse(response: Response, detail: string): Promise<never> {
    await discard(response);
    throw this.fail('REMOTE', detail);
  }
}

/** A cached redirect target answered with a refusal: retry from the original URL. */
class StaleTarget extends Error {
  constructor(readonly error: CheckpointError) {
    super(error.message);
  }
}

/** Fills `into` from the body; returns the bytes received (fewer when the body ended early). */
async function readBody(response: Response, into: Uint8Array, arm: () => void, session: RemoteSession, path: string): Promise<number> {
  if (!response.body) return 0;
  const reader = response.body.getReader();
  let at = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return at;
      arm();
      session.countBytes(value.length);
      if (at + value.length > into.length) {
        throw new CheckpointError('REMOTE', path, `the server sent more than the ${into.length} bytes it announced`);
      }
      into.set(value, at);
      at += value.length;
    }
  } finally {
    reader.releaseLock();
    if (at !== into.length) await response.body.cancel().catch(() => undefined);
  }
}

/** Lets go of a response body we do not want (closing the connection rather than reading a large one). */
export async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // Already consumed, locked or broken: nothing to release.
  }
}

/** `bytes <first>-<last>/<total>`; a `*` total is refused (the size must be known). */
function parseContentRange(value: string | null): { first: number; last: number; total: number } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(value?.trim() ?? '');
  if (!m) return null;
  const [first, last, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (![first, last, total].every(Number.isSafeInteger) || first > last || last >= total) return null;
  return { first, last, total };
}

/** fetch refuses URLs with credentials in them; they travel as an Authorization header instead. */
function withoutCredentials(url: URL): URL {
  if (!url.username && !url.password) return url;
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy;
}

/** A network failure: a reset is worth another attempt, a refused connection or unknown host is not. */
function networkError(path: string, e: unknown): CheckpointError | Transient {
  if (e instanceof CheckpointError) return e;
  const code = errorCode(e);
  if (code !== null && RESET_CODES.has(code)) return new Transient(new CheckpointError('REMOTE', path, `connection closed or reset by the server (${code})`));
  if (e instanceof TypeError && e.message === 'terminated') return new Transient(new CheckpointError('REMOTE', path, 'connection closed mid-response'));
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new CheckpointError('REMOTE', path, `cannot resolve the host name (${code})`);
  if (code !== null) return new CheckpointError('REMOTE', path, `cannot connect (${code})`);
  return new CheckpointError('REMOTE', path, `request failed: ${e instanceof Error ? e.message : String(e)}`);
}

/** The first `code` along an error's cause chain (undici wraps socket errors in TypeError('fetch failed')). */
function errorCode(e: unknown): string | null {
  for (let cur = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return null;
}

/** A header value from the server, shortened for a one-line message (CheckpointError escapes control characters). */
function clip(value: string | null): string {
  if (value === null) return 'none';
  return value.length > 80 ? `${value.slice(0, 80)}...` : value;
}
