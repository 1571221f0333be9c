/**
 * The legacy stream format (torch <= 1.5, and `_use_new_zipfile_serialization=False` since), torch-format.md §4.
 *
 *   pickle 1  magic number      80 02 8A 0A 6C FC 9C 46 F9 20 6A A8 50 19 2E  (LONG1 0x1950A86A20F9469CFC6C)
 *   pickle 2  protocol version  1001
 *   pickle 3  sys_info          {'protocol_version', 'little_endian', 'type_sizes'}
 *   pickle 4  the object        persistent ids ('storage', <Class>, key, location, numel, view_metadata)
 *   pickle 5  storage keys      a list of key strings, in the order their bytes follow
 *   then, per key in that order: int64 LE element count, count × element size bytes (little-endian)
 *
 * The pickles have no length prefix, so they are decoded from a window of the file that grows
 * (up to LIMITS.legacyPrefixBytes) whenever a pickle runs past its end.
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { unpickle, type UnpickleResult } from '../../pickle/unpickler.js';
import { PyDict, PyList, type PyValue } from '../../pickle/value.js';
import { TorchDecoder } from '../torch-rebuild.js';
import type { StorageRecord, StorageRef } from '../../tensor/tensor-ref.js';
import type { Checkpoint, OpenOptions } from '../checkpoint.js';
import { TAR_BLOCK, isTarToPython, tarRefusal } from '../tar-header.js';

export const LEGACY_MAGIC = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
const PROTOCOL_VERSION = 1001;
/** The pickles have no length prefix: start small so that little beyond them (tensor data) is read. */
const FIRST_WINDOW = 64 << 10;
const COUNT_BYTES = 8;

export function isLegacyMagic(head: Uint8Array): boolean {
  return head.length >= LEGACY_MAGIC.length && LEGACY_MAGIC.every((b, i) => head[i] === b);
}

export async function openLegacy(source: ByteSource, options: OpenOptions): Promise<Checkpoint> {
  const path = source.path;
  const window = new GrowingWindow(source);
  // torch.load tries tarfile before the legacy stream: a legacy file whose first block is also a valid
  // tar header (a pickled string can hold one) is a tar archive to torch.
  if (isTarToPython(await window.head(TAR_BLOCK))) throw tarRefusal(path, true);
  let pos = LEGACY_MAGIC.length;

  const protocol = await window.unpickleAt(pos);
  if (protocol.value !== PROTOCOL_VERSION) {
    throw new CheckpointError('UNSUPPORTED_FORMAT', path, `legacy protocol version ${String(protocol.value)}, expected ${PROTOCOL_VERSION}`);
  }
  const sysInfo = await window.unpickleAt(protocol.end);
  if (sysInfo.value instanceof PyDict && sysInfo.value.entries.get('little_endian') === false) {
    throw new CheckpointError('UNSUPPORTED_FORMAT', path, 'big-endian legacy checkpoint is not supported');
  }
  pos = sysInfo.end;

  // The object pickle is decoded with a fresh decoder each time the window has to grow.
  let decoder!: TorchDecoder;
  const object = await window.unpickleAt(pos, () => {
    decoder = new TorchDecoder(path, options.strict !== false);
    return decoder.hooks();
  });
  const keysResult = await window.unpickleAt(object.end);
  const keys = keyList(path, keysResult.value);

  const byKey = new Map(decoder.storages.map((s) => [s.key, s]));
  const records = new Map<string, StorageRecord>();
  const headers = new HeaderReader(source);
  pos = keysResult.end;
  checkComplete(path, source.size, pos, keys.map((k) => byKey.get(k)));
  for (const key of keys) {
    const storage = byKey.get(key);
    if (!storage) throw new CheckpointError('BAD_TENSOR', path, `storage key ${key} is listed but no tensor uses it`);
    const count = await headers.int64At(pos);
    if (count !== storage.numel) {
      throw new CheckpointError('BAD_TENSOR', path, `storage ${key} declares ${count} elements at byte ${pos}, the pickle says ${storage.numel}`);
    }
    const dataOffset = pos + COUNT_BYTES;
    const length = storage.byteLength;
    if (dataOffset + length > source.size) {
      throw new CheckpointError('TRUNCATED', path, `storage ${key} needs bytes ${dataOffset}..${dataOffset + length} but the file has ${source.size}`);
    }
    records.set(key, { name: `storage ${key}`, length, crc32: null, resolve: async () => ({ source, offset: dataOffset }) });
    pos = dataOffset + length;
  }
  decoder.attachRecords((ref) => records.get(ref.key) ?? null);

  return {
    path,
    format: 'legacy',
    formatDetail: 'legacy (torch < 1.6 or _use_new_zipfile_serialization=False)',
    source,
    root: object.value,
    globals: mergeGlobals([protocol, sysInfo, object, keysResult]),
    storages: decoder.storages,
    problems: decoder.problems,
    close: () => source.close(),
  };
}

/**
 * Every storage's size is known from the pickle once the key list is read: a file shorter than the
 * records need was cut short (a truncated download). Say where it ends and how much is missing, before
 * reading any record. Unknown keys are left to the loop's own error.
 */
function checkComplete(path: string, size: number, start: number, storages: ReadonlyArray<StorageRef | undefined>): void {
  let end = start;
  let cutIndex = -1;
  let cutStart = 0;
  for (let i = 0; i < storages.length; i++) {
    const s = storages[i];
    if (!s) return;
    const next = end + COUNT_BYTES + s.byteLength;
    if (cutIndex < 0 && next > size) {
      cutIndex = i;
      cutStart = end;
    }
    end = next;
  }
  if (cutIndex < 0) return;
  const s = storages[cutIndex] as StorageRef;
  const n = (x: number) => x.toLocaleString('en-US');
  throw new CheckpointError('TRUNCATED', path, `truncated download: the file has ${n(size)} bytes but its ${storages.length} storages end at byte ${n(end)} (${n(end - size)} bytes missing); it ends inside storage ${s.key} (${cutIndex + 1} of ${storages.length}, bytes ${n(cutStart)}..${n(cutStart + COUNT_BYTES + s.byteLength)}); download it again`);
}

function keyList(path: string, v: PyValue): string[] {
  if (!(v instanceof PyList)) throw new CheckpointError('BAD_PICKLE', path, 'legacy storage key list is not a list');
  return v.items.map((k) => {
    if (typeof k !== 'string') throw new CheckpointError('BAD_PICKLE', path, 'legacy storage key is not a string');
    return k;
  });
}

function mergeGlobals(results: UnpickleResult[]): UnpickleResult['globals'] {
  const seen = new Map<string, UnpickleResult['globals'][number]>();
  for (const r of results) for (const g of r.globals) if (!seen.has(g.qualname)) seen.set(g.qualname, g);
  return [...seen.values()];
}

/** The first bytes of the file, re-read larger whenever a pickle runs off the end of what is held. */
class GrowingWindow {
  private bytes: Uint8Array = new Uint8Array(0);

  constructor(private readonly source: ByteSource) {}

  /** The first `n` bytes (fewer if the file is shorter), from the first window. */
  async head(n: number): Promise<Uint8Array> {
    await this.fill();
    return this.bytes.subarray(0, n);
  }

  private async fill(): Promise<void> {
    if (this.bytes.length === 0) this.bytes = await this.source.read(0, Math.min(this.source.size, LIMITS.legacyPrefixBytes, FIRST_WINDOW));
  }

  async unpickleAt(start: number, makeHooks?: () => ReturnType<TorchDecoder['hooks']>): Promise<UnpickleResult> {
    const limit = Math.min(this.source.size, LIMITS.legacyPrefixBytes);
    await this.fill();
    for (;;) {
      try {
        return unpickle(this.bytes, { path: this.source.path, start, hooks: makeHooks?.() });
      } catch (e) {
        if (!(e instanceof CheckpointError) || e.code !== 'TRUNCATED' || this.bytes.length >= limit) {
          if (e instanceof CheckpointError && e.code === 'TRUNCATED' && this.source.size > LIMITS.legacyPrefixBytes) {
            throw new CheckpointError('LIMIT', this.source.path, `legacy pickle runs past ${LIMITS.legacyPrefixBytes} bytes (legacyPrefixBytes)`);
          }
          if (e instanceof CheckpointError && e.code === 'TRUNCATED' && this.bytes.length === this.source.size) {
            // The whole file is held and a pickle still runs off its end: the file was cut short.
            throw new CheckpointError('TRUNCATED', this.source.path, `truncated download: the legacy checkpoint ends at byte ${this.source.size.toLocaleString('en-US')}, inside its pickles, before any tensor data (${e.detail}); download it again`);
          }
          throw e;
        }
        this.bytes = await this.source.read(0, Math.min(limit, this.bytes.length * 4));
      }
    }
  }
}

/**
 * Reads the 8-byte element count in front of each storage: exactly those 8 bytes, never the tensor data
 * around them (positional reads are synchronous and cost ~2 µs, so 100k storages cost ~0.2 s).
 */
class HeaderReader {
  constructor(private readonly source: ByteSource) {}

  async int64At(offset: number): Promise<number> {
    if (offset + COUNT_BYTES > this.source.size) {
      throw new CheckpointError('TRUNCATED', this.source.path, `file ends at byte ${this.source.size} before the storage header at ${offset}`);
    }
    const bytes = await this.source.read(offset, COUNT_BYTES);
    const value = new DataView(bytes.buffer, bytes.byteOffset, COUNT_BYTES).getBigInt64(0, true);
    if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CheckpointError('BAD_TENSOR', this.source.path, `storage header at byte ${offset} declares ${value} elements`);
    }
    return Number(value);
  }
}
