/**
 * The zip format torch has written since 1.6 (torch-format.md §2): `<prefix>/data.pkl` holds the pickle,
 * `<prefix>/data/<key>` one storage each, `<prefix>/version` the format version. Only the central
 * directory, `version`, `byteorder` and `data.pkl` are read here; storage records are located lazily.
 *
 * Records are found the way torch finds them (caffe2/serialize/inline_container.cc, checked against
 * torch 1.13 and 2.6 with fixtures/differentials/): the prefix is the first central-directory entry's
 * name up to its first '/' ("file in archive is not in a subdirectory" without one); every entry must
 * start with that prefix and '/' (get_all_records, run on every load, refuses the archive otherwise);
 * `<prefix>/` + record is looked up case-insensitively (miniz); `.data/version` is read before
 * `version`; an entry named exactly `<prefix>/constants.pkl` makes it a TorchScript archive.
 * data.pkl, version and byteorder may be deflated: torch reads them with get_record (inflating) in every
 * mode. A storage record may not (see attachRecords below).
 */
import { CheckpointError } from '../../io/errors.js';
import { LIMITS } from '../../io/limits.js';
import type { ByteSource } from '../../io/source.js';
import { unpickle } from '../../pickle/unpickler.js';
import { latin1 } from '../../pickle/text.js';
import { TorchDecoder } from '../torch-rebuild.js';
import { type Checkpoint, type OpenOptions, withReleasableTree } from '../checkpoint.js';
import { storageNumber } from '../../tensor/tensor-ref.js';
import { prefetchDataOffsets, readEntryBytes, withEntryBytes } from '../../zip/entry-data.js';
import { type ZipDirectory, type ZipEntry, findEntry, readZipDirectory } from '../../zip/reader.js';

/** torch's reader accepts versions 1..kMaxSupportedFileFormatVersion (10 in 1.13 and 2.10). */
const MIN_VERSION = 1;
const MAX_VERSION = 10;
const SMALL_RECORD = 64;
/** get_all_records() copies names into a 512-byte buffer (MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE): a longer prefix never matches in torch 2.x. */
const MAX_PREFIX_BYTES = 511 - 1;

export async function openArchive(source: ByteSource, options: OpenOptions): Promise<Checkpoint> {
  const path = source.path;
  const dir = await readZipDirectory(source);
  const prefix = checkArchiveFolder(path, dir);
  const find = (record: string): ZipEntry | undefined => findEntry(dir, `${prefix}/${record}`);

  // torch: 'constants.pkl' in get_all_records(), an exact comparison (CONSTANTS.PKL is an ordinary entry).
  const constants = `${prefix}/constants.pkl`;
  if (find('constants.pkl')?.name === constants) {
    throw new CheckpointError('UNSUPPORTED_FORMAT', path, 'a TorchScript archive (torch.jit.save: constants.pkl and code/), not a torch.save checkpoint; load it with torch.jit.load, or save model.state_dict() with torch.save');
  }
  const pickleEntry = find('data.pkl');
  if (!pickleEntry) {
    throw new CheckpointError('BAD_ZIP', path, `zip archive has no ${prefix}/data.pkl; not a torch.save checkpoint`);
  }
  const version = await readVersion(source, find('.data/version') ?? find('version'));
  const byteorderEntry = find('byteorder');
  if (byteorderEntry) {
    // torch 2.x compares the bytes with b"little" / b"big" exactly (ValueError otherwise); 1.13 ignores
    // the record, so "big" (2.x swaps bytes, 1.13 does not) and anything else are refused.
    const byteorder = text(await readEntryBytes(source, byteorderEntry, SMALL_RECORD));
    if (byteorder === 'big') throw new CheckpointError('UNSUPPORTED_FORMAT', path, 'big-endian checkpoint (byteorder "big") is not supported');
    if (byteorder !== 'little') throw new CheckpointError('BAD_ZIP', path, `byteorder record says ${JSON.stringify(byteorder.slice(0, 20))}, which torch 2.x refuses ("Unknown endianness type"); torch 1.13 ignores it`);
  }

  // Each record but data.pkl, version and byteorder is normally one storage.
  const decoder = new TorchDecoder(path, options.strict !== false, true, dir.entries.length);
  // The unpickler copies every string and bytes value out of the pickle, so its bytes can be lent.
  const { value, globals } = await withEntryBytes(source, pickleEntry, LIMITS.pickleBytes, (bytes) => unpickle(bytes, { path, hooks: decoder.hooks() }));
  if (dir.shared) dir.shared.locateAll = recordLocator(source, dir.entries, prefix);
  const byName = dir.byName;
  decoder.attachRecords((ref) => {
    // torch's own keys "0", "1", ... are kept as numbers: their records are found by number, no name made.
    const n = storageNumber(ref);
    const entry = (n >= 0 ? byName.record(n) : undefined) ?? find(`data/${ref.key}`);
    if (entry && entry.method !== 0) {
      // torch 2.x with mmap=True slices the storage from the file at the record's data offset
      // (get_record_offset) without inflating it; torch 1.13 and mmap=False inflate (get_storage_from_record).
      // torch reads such a file two ways, so it is refused (fixtures/deflated.pth).
      throw new CheckpointError('BAD_ZIP', path, `storage record ${entry.name} is compressed (method ${entry.method}): torch 2.x with mmap=True loads its compressed bytes as the tensor data while torch 1.13 and mmap=False inflate them; torch.save always stores storages uncompressed`);
    }
    // The entry is the record (entry.ts): no object of its own per storage.
    return entry ?? null;
  });
  return withReleasableTree({
    path,
    format: 'zip',
    formatDetail: `zip (torch >= 1.6), version ${version}, prefix "${prefix}"${pickleEntry.method === 8 ? ', deflated' : ''}`,
    source,
    root: value,
    globals,
    storages: decoder.storages,
    problems: decoder.problems,
    // The entries only: the name table (two Int32Arrays of twice the entry count) is not needed once the records are attached.
    zip: { entries: dir.entries, prefix: dir.prefix },
    // Not an arrow function here: it would keep this scope, and with it the name table, alive.
    close: source.close.bind(source),
  });
}

/**
 * How the first record to be read locates all of them in a few batched reads (one read per record would
 * cost ~50 µs each: seconds for a 100k-tensor file). A function of its own so that its closure holds the
 * entry list and not openArchive's scope (the directory's name table among it).
 */
function recordLocator(source: ByteSource, entries: readonly ZipEntry[], prefix: string): () => Promise<void> {
  let located: Promise<void> | null = null;
  const folder = `${prefix}/data/`;
  return () => (located ??= prefetchDataOffsets(source, entries, (e) => e.isIn(folder)));
}

/**
 * The archive folder torch uses: the first entry's name up to its first '/'. torch refuses an archive
 * whose first entry has no '/', and (get_all_records) one with any entry outside `<prefix>/`.
 */
function checkArchiveFolder(path: string, dir: ZipDirectory): string {
  const bad = (detail: string) => new CheckpointError('BAD_ZIP', path, detail);
  const first = dir.entries[0];
  if (!first) throw bad('zip archive has no entries');
  if (!first.name.includes('/')) throw bad(`first zip entry '${first.name}' is not in a folder; torch refuses such an archive ("file in archive is not in a subdirectory")`);
  const prefix = dir.prefix;
  if (Buffer.byteLength(prefix, 'utf8') > MAX_PREFIX_BYTES) throw bad(`archive folder name of ${Buffer.byteLength(prefix, 'utf8')} bytes is longer than torch 2.x can match (${MAX_PREFIX_BYTES})`);
  const folder = `${prefix}/`;
  const outside = dir.entries.find((e) => !e.isIn(folder));
  if (outside) throw bad(`zip entry '${outside.name}' is outside the archive folder '${folder}'; torch refuses such an archive ("file in archive is not in a subdirectory")`);
  return prefix;
}

/** C's isspace in the "C" locale: what std::stoull skips before the number. */
const LEADING_SPACE = /^[ \t\n\v\f\r]*/;

/** torch parses the record with std::stoull: leading white space, an optional sign, digits; the rest is ignored. */
async function readVersion(source: ByteSource, entry: ZipEntry | undefined): Promise<number> {
  if (!entry) throw new CheckpointError('BAD_VERSION', source.path, 'zip archive has no version record');
  const raw = text(await readEntryBytes(source, entry, SMALL_RECORD));
  const digits = /^\+?(\d+)/.exec(raw.replace(LEADING_SPACE, ''));
  // A '-' makes stoull wrap around to a huge value, and more than 19 digits overflow it: both refused by torch.
  const version = digits && digits[1]!.length <= 19 ? Number(digits[1]) : NaN;
  if (!(version >= MIN_VERSION && version <= MAX_VERSION)) {
    throw new CheckpointError('BAD_VERSION', source.path, `version record ${entry.name} says ${JSON.stringify(raw.slice(0, 20))}, outside torch's supported range ${MIN_VERSION}..${MAX_VERSION}`);
  }
  return version;
}

function text(bytes: Uint8Array): string {
  return latin1(bytes, 0, bytes.length);
}
