/**
 * What one command may do over HTTP, and what it did: the user's headers and which hosts get them, the
 * Hugging Face token, the byte budget (--max-bytes), the timeout, and the running cost (requests, bytes).
 * Every remote file a command opens (both sides of a diff, every shard of an index) shares one session,
 * so the budget bounds the command, not each file.
 */
import { CheckpointError } from './errors.js';

export interface RemoteOptions {
  /** `NAME: VALUE` headers (--header, repeatable), sent only to the host of the URL the user gave. */
  headers?: readonly string[];
  /** Bytes one command may fetch (--max-bytes); default DEFAULT_MAX_BYTES. */
  maxBytes?: number;
  /** Accept a server that ignores Range by downloading the whole file (still bounded by maxBytes). */
  allowDownload?: boolean;
  /** Seconds without progress (connecting, waiting for headers, or between body bytes) before giving up. */
  timeoutSeconds?: number;
  /** Environment for HF_TOKEN and HF_ENDPOINT (tests pass their own). */
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_MAX_BYTES = 64 << 20;
export const DEFAULT_TIMEOUT_SECONDS = 30;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The Hugging Face Hub's hosts: huggingface_hub's HF_URL_HOSTS without the staging host (constants.py). */
const HF_HOSTS = new Set(['huggingface.co', 'hf.co']);

/** Headers ckpt sets itself: a user value would break range reads (or, for Host, the request). */
const RESERVED_HEADERS = new Set(['range', 'accept-encoding', 'host', 'content-length', 'transfer-encoding', 'connection']);

/** RFC 9110 token characters, for header names. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The cost of a command's remote reads, as reports show it: `fetched 3 requests, 1.1 MB of 9.9 GB`. */
export interface FetchedReport {
  requests: number;
  /** Body bytes received (tensor and metadata bytes; retried and redirect responses included). */
  bytes: number;
  /** Total size of the remote files opened. */
  file_bytes: number;
}

export class RemoteSession {
  readonly maxBytes: number;
  readonly allowDownload: boolean;
  readonly timeoutMs: number;
  private readonly userHeaders: Array<[string, string]>;
  private readonly token: string | null;
  /** Origin of HF_ENDPOINT (a mirror or self-hosted hub), which gets the token like huggingface.co does. */
  private readonly hfEndpoint: string | null;
  private requestCount = 0;
  private received = 0;
  /** Bytes asked for so far (ranges requested, or a whole body announced): what the budget counts. */
  private committed = 0;
  private fileBytes = 0;
  private files = 0;

  constructor(options: RemoteOptions = {}) {
    const env = options.env ?? process.env;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.allowDownload = Boolean(options.allowDownload);
    // setTimeout takes at most 2^31-1 ms (and fires at once beyond): ~24 days is "no timeout".
    this.timeoutMs = Math.min(MAX_TIMER_MS, Math.max(1, Math.round((options.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000)));
    this.userHeaders = (options.headers ?? []).map(parseHeader);
    this.token = env.HF_TOKEN?.trim() || null;
    this.hfEndpoint = endpointOrigin(env.HF_ENDPOINT);
  }

  /**
   * Headers for a request to `url`, given the URL the user named. The user's headers and credentials
   * written into the URL go to the user's own host only (same scheme, host and port, or the same host
   * upgraded from http to https, as requests and httpx keep them); HF_TOKEN goes to the Hub only. A
   * redirect elsewhere (a CDN, a bucket) gets none of them, and `leftHost` keeps it that way for the rest
   * of the redirect chain.
   */
  headersFor(url: URL, original: URL, leftHost: boolean): Record<string, string> {
    const headers: Record<string, string> = {};
    if (leftHost || !sameHost(original, url)) return headers;
    if (this.token && this.isHubOrigin(original)) headers.authorization = `Bearer ${this.token}`;
    if (original.username || original.password) {
      const user = decodeURIComponent(original.username);
      const password = decodeURIComponent(original.password);
      headers.authorization = `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
    }
    for (const [name, value] of this.userHeaders) headers[name.toLowerCase()] = value;
    return headers;
  }

  private isHubOrigin(url: URL): boolean {
    if (this.hfEndpoint !== null && url.origin === this.hfEndpoint) return true;
    return url.protocol === 'https:' && url.port === '' && HF_HOSTS.has(url.hostname.toLowerCase());
  }

  /** Called before every request: refuses one that could take the command past --max-bytes. */
  commit(path: string, bytes: number): void {
    if (this.committed + bytes > this.maxBytes) {
      throw new CheckpointError(
        'LIMIT',
        path,
        `reading on would fetch more than --max-bytes ${formatBudget(this.maxBytes)} (${formatBudget(this.committed)} fetched, ${formatBudget(bytes)} more asked); raise --max-bytes`,
      );
    }
    this.committed += bytes;
  }

  /**
   * A command's check before it reads tensor bytes: `bytes` of tensor data (worked out from metadata),
   * plus up to `locate` bytes of blocks read to find the records (zip local headers), plus what was
   * already fetched must fit the budget; else nothing more is fetched and the error says what is needed.
   */
  ensureBudget(path: string, bytes: number, locate: number, what: string): void {
    const need = bytes + locate;
    if (bytes === 0 || this.committed + need <= this.maxBytes) return;
    const parts = `${formatBudget(bytes)} of tensor data${locate ? `, up to ${formatBudget(locate)} of record headers` : ''}; ${formatBudget(this.committed)} fetched so far`;
    throw new CheckpointError(
      'LIMIT',
      path,
      `${what} needs ${locate ? 'up to ' : ''}${formatBudget(need)} more from remote files (${parts}), over --max-bytes ${formatBudget(this.maxBytes)}; pass --max-bytes ${Math.ceil((this.committed + need) / (1 << 20))}MiB or more`,
    );
  }

  countRequest(): void {
    this.requestCount++;
  }

  countBytes(n: number): void {
    this.received += n;
  }

  countFile(size: number): void {
    this.files++;
    this.fileBytes += size;
  }

  /** The cost so far, or undefined when the command opened no remote file (local reports stay unchanged). */
  fetched(): FetchedReport | undefined {
    if (this.files === 0 && this.requestCount === 0) return undefined;
    return { requests: this.requestCount, bytes: this.received, file_bytes: this.fileBytes };
  }
}

/** Same scheme, host and port; or http upgraded to https on the same host with default ports. */
export function sameHost(original: URL, next: URL): boolean {
  if (original.origin === next.origin) return true;
  return original.protocol === 'http:' && next.protocol === 'https:' && original.hostname === next.hostname && original.port === '' && next.port === '';
}

function parseHeader(text: string): [string, string] {
  const colon = text.indexOf(':');
  const name = colon < 0 ? '' : text.slice(0, colon).trim();
  const value = colon < 0 ? '' : text.slice(colon + 1).trim();
  if (!TOKEN.test(name)) throw new CheckpointError('USAGE', '', `--header expects 'NAME: VALUE', got "${text.slice(0, 40)}"`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new CheckpointError('USAGE', '', `--header ${name}: the value holds a control character`);
  if (RESERVED_HEADERS.has(name.toLowerCase())) throw new CheckpointError('USAGE', '', `--header ${name}: ckpt sets this header itself`);
  return [name, value];
}

function endpointOrigin(endpoint: string | undefined): string | null {
  if (!endpoint) return null;
  try {
    return new URL(endpoint).origin;
  } catch {
    return null;
  }
}

/** Budget amounts in binary units (the option's own unit), e.g. `64 MiB`. */
export function formatBudget(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}

/** `--max-bytes`: a byte count with an optional unit (K/M/G/T decimal, Ki/Mi/Gi/Ti binary, B optional). */
export function parseByteCount(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$/i.exec(text);
  if (!m) throw new CheckpointError('USAGE', '', `expected a byte count such as 64MiB, 2GB or 1000000, got "${text.slice(0, 40)}"`);
  const unit = (m[2] ?? '').toLowerCase();
  const power = unit ? 'kmgt'.indexOf(unit[0] as string) + 1 : 0;
  const base = unit.endsWith('i') ? 1024 : 1000;
  const n = Math.floor(Number(m[1]) * base ** power);
  if (!Number.isSafeInteger(n)) throw new CheckpointError('USAGE', '', `byte count "${text.slice(0, 40)}" is too large`);
  return n;
}
