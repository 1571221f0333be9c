/**
 * Every limit that guards a reader against a hostile or broken file, in one place, each with its reason.
 * A value read from a file is never trusted to size an allocation or a loop until it has passed the
 * matching limit here; a file that exceeds one fails with CheckpointError('LIMIT', path, '<name> ...').
 */
export const LIMITS = {
  /** Entries in one zip central directory. Torch writes one per storage plus ~5; 10M storages is far beyond any real model. */
  zipEntries: 10_000_000,
  /** Length of one zip entry name. Torch names are `<prefix>/data/<n>`; 64 KiB is the format's own ceiling. */
  zipNameLength: 0xffff,
  /** How far from the end the end-of-central-directory record may sit (22-byte record + 64 KiB comment). */
  zipEocdSearch: 22 + 0xffff,
  /** Size of the central directory read into memory at once. 10M entries of ~60 bytes each. */
  zipCentralDirectoryBytes: 1 << 30,
  /** Bytes of data.pkl (or a legacy file's object pickle) held in memory. A 100k-tensor state dict is ~12 MB. */
  pickleBytes: 1 << 30,
  /** Inflated size allowed for a deflated entry we must read into memory (data.pkl, version): stops deflate bombs. */
  inflatedBytes: 1 << 30,
  /**
   * Inflated/compressed ratio of a deflated entry. Pickles compress ~10x; deflate's ceiling is ~1032x,
   * which only crafted data reaches (a 1 MB file honestly declaring 1 GiB).
   */
  deflateRatio: 100,
  /** Pickle opcodes executed. Each opcode costs at least one byte, so this only bites on amplification tricks. */
  pickleOps: 200_000_000,
  /** Nesting depth of containers (MARK stack and nested values). Real checkpoints nest < 20 deep. */
  pickleDepth: 10_000,
  /** Memo slots. A memo index beyond this is refused instead of growing an array to it. */
  pickleMemo: 50_000_000,
  /** One string or bytes value inside a pickle. */
  pickleStringBytes: 256 << 20,
  /**
   * Values on the pickle stack at once. CPython batches APPENDS/SETITEMS by 1000, so a real stream holds a
   * few thousand; a crafted one pushes a million empty lists to nest them (hundreds of MB).
   */
  pickleStack: 100_000,
  /** Items in one container built by APPENDS/SETITEMS/TUPLE. */
  pickleContainerItems: 50_000_000,
  /** LONG1/LONG4 integer width in bytes; the legacy magic number needs 10, real ints < 64. */
  pickleLongBytes: 1024,
  /** Tensor rank. torch itself caps at 64 dimensions. */
  tensorRank: 64,
  /** Elements or bytes in one storage: values above 2^53 cannot be counted exactly in a JS number. */
  storageBytes: Number.MAX_SAFE_INTEGER,
  /** Tensors found in one state dict. */
  tensors: 10_000_000,
  /**
   * Bytes of one tensor gathered into memory (non-contiguous views, readTensorBytes). An expanded view
   * (stride 0) of a tiny storage can declare billions of elements; streaming paths never gather.
   */
  gatherBytes: 1 << 30,
  /**
   * float32 bytes of one tensor adapted in memory by `merge --adapt` (the pretrained value widened to
   * float32, and the result). Adapted tensors are stems, position tables and embeddings; a 1 GiB one is
   * a 256M-element vocabulary matrix.
   */
  adaptBytes: 1 << 30,
  /** Bytes of a `--select-rows PATTERN=@FILE` index list: 10M indexes, far beyond any class count. */
  indexFileBytes: 64 << 20,
  /** Bytes of a legacy file's pickled prefix (everything before the raw storages). */
  legacyPrefixBytes: 1 << 30,
  /** Bytes of a sharded checkpoint's index JSON. ~80 bytes per tensor: 64 MiB is 800k tensors. */
  shardIndexBytes: 64 << 20,
  /**
   * Shard files named by one index. Every shard stays open until the checkpoint is closed (tensors are
   * read lazily), and a process may hold 1024 files by default; the largest public models use < 200.
   */
  shards: 1000,
  /**
   * Bytes of a `check --against` manifest (`ckpt inspect --json` output, ~110 bytes per tensor pretty
   * printed): 1 GiB is ~10M tensors, the tensors limit; the file is parsed in memory.
   */
  manifestBytes: 1 << 30,
  /** Redirects followed for one request. Fetch's own limit is 20; a hub answers with one (to its CDN). */
  httpRedirects: 10,
} as const;

export type LimitName = keyof typeof LIMITS;
