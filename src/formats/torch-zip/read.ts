/**
 * The zip format torch has written since 1.6 (torch-format.md §2): `<prefix>/data.pkl` holds the pickle,
 * `<prefix>/data/<key>` one storage each, `<prefix>/version` the format version. Only the central
 * directory, `version`, `byteorder` and `data.pkl` are read here; storage records are located lazily.
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { BufferSource } from '../../io/source.js';
import { unpickle } from '../../pickle/unpickler.js';
import { latin1 } from '../../pickle/text.js';
import { TorchDecoder } from '../torch-rebuild.js';
import type { StorageRecord } from '../../model/tensor-ref.js';
import type { Checkpoint, OpenOptions } from '../checkpoint.js';
import { type ZipEntry, entryDataOffset, prefetchDataOffsets, readEntryBytes, readZipDirectory } from '../../zip/reader.js';

/** torch's reader accepts versions 1..kMaxSupportedFileFormatVersion (10 in 1.13 and 2.10). */
const MIN_VERSION = 1;
const MAX_VERSION = 10;
const SMALL_RECORD = 64;

export async function openArchive(source: ByteSource, options: OpenOptions): Promise<Checkpoint> {
  const path = source.path;
  const dir = await readZipDirectory(source);
  const prefix = dir.prefix;
  const find = (record: string): ZipEntry | undefined => dir.byName.get(`${prefix}/${record}`);

  if (find('constants.pkl')) {
    throw new CheckpointError('UNSUPPORTED_FORMAT', path, 'a TorchScript archive (torch.jit.save: constants.pkl and code/), not a torch.save checkpoint; load it with torch.jit.load, or save model.state_dict() with torch.save');
  }
  const pickleEntry = find('data.pkl');
  if (!pickleEntry) {
    throw new CheckpointError('BAD_ZIP', path, `zip archive has no ${prefix}/data.pkl; not a torch.save checkpoint`);
  }
  const version = await readVersion(source, find('version') ?? find('.data/version'));
  const byteorderEntry = find('byteorder');
  if (byteorderEntry) {
    const byteorder = text(await readEntryBytes(source, byteorderEntry, SMALL_RECORD)).trim();
    if (byteorder === 'big') throw new CheckpointError('UNSUPPORTED_FORMAT', path, 'big-endian checkpoint (byteorder "big") is not supported');
    if (byteorder !== 'little') throw new CheckpointError('BAD_ZIP', path, `byteorder record says "${byteorder.slice(0, 20)}"`);
  }

  const decoder = new TorchDecoder(path, options.strict !== false);
  const pickleBytes = await readEntryBytes(source, pickleEntry, LIMITS.pickleBytes);
  const { value, globals } = unpickle(pickleBytes, { path, hooks: decoder.hooks() });
  // The first record to be read locates all of them in a few batched reads (one read per record would
  // cost ~50 µs each: seconds for a 100k-tensor file).
  let located: Promise<void> | null = null;
  const locateAll = () => (located ??= prefetchDataOffsets(source, dir.entries.filter((e) => e.name.startsWith(`${prefix}/data/`))));
  decoder.attachRecords((key) => {
    const entry = find(`data/${key}`);
    return entry ? storageRecord(source, entry, locateAll) : null;
  });
  return {
    path,
    format: 'zip',
    formatDetail: `zip (torch >= 1.6), version ${version}, prefix "${prefix}"${pickleEntry.method === 8 ? ', deflated' : ''}`,
    source,
    root: value,
    globals,
    storages: decoder.storages,
    problems: decoder.problems,
    zip: dir,
    close: () => source.close(),
  };
}

async function readVersion(source: ByteSource, entry: ZipEntry | undefined): Promise<number> {
  if (!entry) throw new CheckpointError('BAD_VERSION', source.path, 'zip archive has no version record');
  const raw = text(await readEntryBytes(source, entry, SMALL_RECORD)).trim();
  const version = /^\d{1,6}$/.test(raw) ? Number(raw) : NaN;
  if (!(version >= MIN_VERSION && version <= MAX_VERSION)) {
    throw new CheckpointError('BAD_VERSION', source.path, `version record "${raw.slice(0, 20)}" is outside torch's supported range ${MIN_VERSION}..${MAX_VERSION}`);
  }
  return version;
}

/** A storage record: stored entries are read in place; deflated ones are inflated once, on first use. */
function storageRecord(source: ByteSource, entry: ZipEntry, locateAll: () => Promise<void>): StorageRecord {
  let located: Promise<{ source: ByteSource; offset: number }> | null = null;
  return {
    name: entry.name,
    length: entry.size,
    crc32: entry.crc32,
    resolve() {
      located ??=
        entry.method === 0
          ? locateAll()
              .then(() => entryDataOffset(source, entry))
              .then((offset) => ({ source, offset }))
          : readEntryBytes(source, entry, LIMITS.inflatedStorageBytes).then((bytes) => ({ source: new BufferSource(source.path, bytes), offset: 0 }));
      return located;
    },
  };
}

function text(bytes: Uint8Array): string {
  return latin1(bytes, 0, bytes.length);
}
