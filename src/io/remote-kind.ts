/**
 * What code that handles local and remote sources alike needs to know about remote ones, without loading
 * the HTTP client (http-source.ts and its dependencies are a third of `ckpt inspect`'s module loading;
 * a local file never needs them).
 */
import type { ByteSource } from './source.js';

/** Smallest request: a local header or an end record costs one block; 64 KiB over a link costs little more than 1 byte. */
export const BLOCK_BYTES = 64 << 10;

/** True for sources whose bytes come over the network (each read may cost a request). */
export function isRemoteSource(source: ByteSource): boolean {
  return (source as { remote?: unknown }).remote === true;
}
