/**
 * A local HTTP server for the remote-reading tests, on 127.0.0.1 only (no other network). It serves
 * registered files (any size: the big ones are sparse files under /tmp, read with positional reads, never
 * whole) and misbehaves on request, by the first path component:
 *
 *   /f/NAME            single byte ranges (206, ETag, Last-Modified), 200 with the whole file without Range
 *   /redirect/NAME     302 to http://localhost:PORT/f/NAME (another host name for the same server)
 *   /same/NAME         302 to /f/NAME (a relative redirect: same host)
 *   /norange/NAME      200 with the whole file whatever the Range
 *   /changing/NAME     like /f but the ETag changes with every request
 *   /slow/NAME         like /f after `slowMs` without a byte sent
 *   /stall/NAME        headers and half the body, then nothing
 *   /short/NAME        a chunked 206 body that ends cleanly after half the announced range
 *   /cut/NAME          a 206 with Content-Length whose connection is destroyed after half the body
 *   /reset/NAME        destroys the first `resets` connections without an answer, then serves like /f
 *   /gzip/NAME         a 206 marked Content-Encoding: gzip
 *   /range416/NAME     416 to every range
 *   /status/CODE/NAME  that status code
 *   /expiring/NAME     302 to http://localhost:PORT/signed/GEN/NAME, which answers like /f while GEN is
 *                      the current generation and 403 once expire() has moved on (a signed CDN URL)
 *
 * Every request is logged (mode, host, method, range, headers, body bytes written).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface LoggedRequest {
  mode: string;
  name: string;
  host: string;
  range: string | null;
  headers: IncomingMessage['headers'];
  /** Body bytes written for this request, and the [start, end) they covered. */
  bytes: number;
  start: number;
  end: number;
}

export class TestServer {
  readonly log: LoggedRequest[] = [];
  slowMs = 20_000;
  resets = 2;
  private readonly files = new Map<string, string>();
  private readonly resetCount = new Map<string, number>();
  private changing = 0;
  private generation = 0;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  /** Serves `path` as NAME (NAME may contain '/', for a sharded folder). */
  add(name: string, path: string): void {
    this.files.set(name, path);
  }

  url(mode: string, name: string, host = '127.0.0.1'): string {
    return `http://${host}:${this.port}/${mode}/${name.split('/').map(encodeURIComponent).join('/')}`;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server!.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  /** Signed URLs handed out so far stop working. */
  expire(): void {
    this.generation++;
  }

  clear(): void {
    this.log.length = 0;
    this.resetCount.clear();
  }

  /** Requests and body bytes for one name (all modes), for cost assertions. */
  served(name?: string): { requests: number; bytes: number; ranges: Array<[number, number]> } {
    const rows = this.log.filter((r) => name === undefined || r.name === name);
    return { requests: rows.length, bytes: rows.reduce((n, r) => n + r.bytes, 0), ranges: rows.filter((r) => r.bytes > 0).map((r) => [r.start, r.end]) };
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const parts = (req.url ?? '/').split('?')[0]!.split('/').slice(1).map(decodeURIComponent);
    let mode = parts[0] ?? '';
    let status = 0;
    if (mode === 'status') {
      status = Number(parts[1]);
      parts.splice(1, 1);
    }
    if (mode === 'signed') {
      if (Number(parts[1]) !== this.generation) status = 403;
      parts.splice(1, 1);
    }
    const name = parts.slice(1).join('/');
    const entry: LoggedRequest = { mode, name, host: req.headers.host ?? '', range: req.headers.range ?? null, headers: req.headers, bytes: 0, start: 0, end: 0 };
    this.log.push(entry);
    const path = this.files.get(name);
    if (status) return void res.writeHead(status, { 'content-length': 0 }).end();
    if (!path) return void res.writeHead(404, { 'content-length': 0 }).end();
    if (mode === 'redirect') return void res.writeHead(302, { location: this.url('f', name, 'localhost') }).end();
    if (mode === 'expiring') return void res.writeHead(302, { location: this.url(`signed/${this.generation}`, name, 'localhost') }).end();
    if (mode === 'same') return void res.writeHead(302, { location: `/f/${parts.slice(1).map(encodeURIComponent).join('/')}` }).end();
    if (mode === 'reset') {
      const n = this.resetCount.get(name) ?? 0;
      if (n < this.resets) {
        this.resetCount.set(name, n + 1);
        return void req.socket.destroy();
      }
      mode = 'f';
    }
    if (mode === 'resetalways') return void req.socket.destroy();
    if (mode === 'signed') mode = 'f';

    const stat = statSync(path);
    const size = stat.size;
    const etag = mode === 'changing' ? `"v${this.changing++}"` : `"${size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
    const headers: Record<string, string | number> = { etag, 'last-modified': stat.mtime.toUTCString(), 'accept-ranges': 'bytes' };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (mode === 'range416' || (range && Number(range[1]) >= size)) {
      return void res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': 0 }).end();
    }
    if (mode === 'norange' || !range) {
      return void this.send(res, entry, path, 0, size, 200, { ...headers, 'content-length': size });
    }
    const start = Number(range[1]);
    const end = Math.min(size, range[2] ? Number(range[2]) + 1 : size);
    const partial = { ...headers, 'content-range': `bytes ${start}-${end - 1}/${size}` };
    const go = () => {
      if (mode === 'short') return this.send(res, entry, path, start, start + Math.floor((end - start) / 2), 206, partial);
      if (mode === 'gzip') return this.send(res, entry, path, start, end, 206, { ...partial, 'content-length': end - start, 'content-encoding': 'gzip' });
      const half = mode === 'cut' || mode === 'stall' ? start + Math.floor((end - start) / 2) : end;
      this.send(res, entry, path, start, half, 206, { ...partial, 'content-length': end - start }, mode === 'cut' ? 'destroy' : mode === 'stall' ? 'stall' : 'end');
    };
    if (mode === 'slow') setTimeout(go, this.slowMs).unref();
    else go();
  }

  /** Streams [start, end) of the file in 1 MiB pieces, respecting backpressure. */
  private send(res: ServerResponse, entry: LoggedRequest, path: string, start: number, end: number, status: number, headers: Record<string, string | number>, finish: 'end' | 'destroy' | 'stall' = 'end'): void {
    res.writeHead(status, headers);
    entry.start = start;
    entry.end = end;
    const fd = openSync(path, 'r');
    const chunk = Buffer.allocUnsafe(1 << 20);
    let at = start;
    const pump = () => {
      while (at < end) {
        const n = readSync(fd, chunk, 0, Math.min(chunk.length, end - at), at);
        at += n;
        entry.bytes += n;
        if (!res.write(Buffer.from(chunk.subarray(0, n)))) return void res.once('drain', pump);
      }
      closeSync(fd);
      if (finish === 'end') res.end();
      else if (finish === 'destroy') setTimeout(() => res.socket?.destroy(), 20);
    };
    res.on('close', () => {
      if (at < end) {
        try {
          closeSync(fd);
        } catch {
          // already closed
        }
      }
    });
    pump();
  }
}
