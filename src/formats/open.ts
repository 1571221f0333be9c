/**
 * Sniff, then dispatch (torch-format.md §1, §9): zip local-header magic at offset 0 (what torch.load
 * checks first); the legacy magic-number pickle; a safetensors file (8-byte header length, then `{` after
 * JSON white space). torch.load hands every non-zip file to Python's tarfile before the legacy stream, so
 * a file tarfile would open is refused (tar-header.ts): the legacy reader checks its first window, and any
 * other file is checked here (torch's 0.1.x tar format). safetensors files are not torch.load's to read.
 * A path to a `.json` index of shard files opens the shards as one checkpoint (sharded.ts). An http(s)
 * URL goes wherever a path goes (http-source.ts).
 */
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CheckpointError } from '../io/errors.js';
import { type ByteSource, FileSource } from '../io/source.js';
import { isUrl, siblingUrl, urlFileName } from '../io/url.js';
import { openArchive } from './torch-zip/read.js';
import type { Checkpoint, OpenOptions } from './checkpoint.js';

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];
/** Enough for the zip local-header magic and the 15-byte legacy magic number. */
const MAGIC_BYTES = 16;

export async function openCheckpoint(path: string, options: OpenOptions = {}): Promise<Checkpoint> {
  return openFile(path, options, true);
}

async function openFile(path: string, options: OpenOptions, allowIndex: boolean): Promise<Checkpoint> {
  const source = await openPathOrUrl(path, options);
  try {
    if (allowIndex && isIndexName(isUrl(path) ? urlFileName(path) : path)) {
      const { looksLikeJsonObject, openSharded } = await import('./sharded/read.js');
      if (looksLikeJsonObject(await source.read(0, Math.min(MAGIC_BYTES, source.size)))) {
        // Shards live beside their index: in its folder, or at the same place on its server.
        const locate = (name: string) => (isUrl(path) ? siblingUrl(path, name) : join(dirname(path), name));
        return await openSharded(source, options, (name, o) => openFile(locate(name), o, false));
      }
    }
    return await openSource(source, options);
  } catch (e) {
    await source.close();
    throw e;
  }
}

/**
 * A sharded checkpoint's index is a `.json` file (`model.safetensors.index.json`, `pytorch_model.bin.index.json`),
 * checked by name first so that other files cost no extra read.
 */
function isIndexName(path: string): boolean {
  return path.toLowerCase().endsWith('.json');
}

/**
 * A few bytes decide zip, legacy and safetensors; only a file that is none of them is read further. The
 * zip reader (torch >= 1.6, nearly every file) is loaded up front; the other readers and the diagnosis of
 * a refused file only when needed: each module costs start-up time (`ckpt inspect` is ~0.2 s in all).
 */
export async function openSource(source: ByteSource, options: OpenOptions = {}): Promise<Checkpoint> {
  if (source.size === 0) throw new CheckpointError('NOT_A_CHECKPOINT', source.path, 'file is empty');
  const head = await source.read(0, Math.min(MAGIC_BYTES, source.size));
  if (ZIP_MAGIC.every((b, i) => head[i] === b)) {
    return openArchive(source, options).catch(async (e: unknown) => {
      if (!(e instanceof CheckpointError)) throw e;
      const { diagnoseZip } = await import('./diagnose.js');
      throw await diagnoseZip(source, e);
    });
  }
  const legacy = await import('./torch-legacy/read.js');
  if (legacy.isLegacyMagic(head)) return legacy.openLegacy(source, options);
  const safetensors = await import('./safetensors/read.js');
  if (await safetensors.looksLikeSafetensors(source, head)) return safetensors.openSafetensors(source, options);
  const [tar, { diagnoseUnknown }] = await Promise.all([import('./tar-header.js'), import('./diagnose.js')]);
  if (tar.isTarToPython(await source.read(0, Math.min(tar.TAR_BLOCK, source.size)))) throw tar.tarRefusal(source.path, false);
  throw await diagnoseUnknown(source);
}

/**
 * An http(s) URL is read with range requests (one session per command: its budget and its costs). The
 * HTTP client is loaded only then: a local file does not pay for its modules at start-up.
 */
async function openPathOrUrl(path: string, options: OpenOptions): Promise<ByteSource> {
  if (!isUrl(path)) return openRegularFile(path);
  const [{ HttpSource }, { RemoteSession }] = await Promise.all([import('../io/http-source.js'), import('../io/remote-session.js')]);
  options.remote ??= new RemoteSession();
  return HttpSource.open(path, options.remote);
}

/** FileSource.open, with a hint for a folder (only once opening failed: no extra stat on the way in). */
async function openRegularFile(path: string): Promise<FileSource> {
  try {
    return await FileSource.open(path);
  } catch (e) {
    if (e instanceof CheckpointError && e.code === 'NOT_FOUND' && isFolder(path)) throw new CheckpointError('NOT_FOUND', path, folderHint(path));
    throw e;
  }
}

function isFolder(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Checkpoint-looking names in preference order: a sharded index first (a model folder's usual entry point). */
const CHECKPOINT_SUFFIXES = ['.index.json', '.safetensors', '.pth', '.pt', '.bin', '.ckpt'];

/** A model folder (transformers' save_pretrained writes one) is a common thing to pass: say what to pass instead. */
function folderHint(path: string): string {
  let names: string[] = [];
  try {
    names = readdirSync(path);
  } catch {
    return 'is a folder, not a checkpoint file';
  }
  for (const suffix of CHECKPOINT_SUFFIXES) {
    const found = names.filter((n) => n.endsWith(suffix)).sort();
    if (found.length) return `is a folder; pass a checkpoint file or sharded index in it, such as ${join(path, found[0] as string)}`;
  }
  return 'is a folder with no checkpoint file in it';
}

