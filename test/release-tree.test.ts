import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/open.js';
import { findStateDict } from '../src/model/state-dict.js';
import { readTensorBytes } from '../src/model/read-bytes.js';

describe('Checkpoint.releaseTree', () => {
  it('lets a zip checkpoint\'s tree go while the tensors taken from it stay readable', async () => {
    const c = await openCheckpoint('fixtures/backbone_head10.pth');
    const sd = findStateDict(c.root, c.path);
    const before = await Promise.all(sd.refs.map((t) => readTensorBytes(t!, c.path)));
    expect(c.releaseTree).toBeTypeOf('function');
    c.releaseTree!();
    expect(c.root).toBeNull();
    // No record was read before the release: the first read locates them all after it.
    const fresh = await openCheckpoint('fixtures/backbone_head10.pth');
    const refs = findStateDict(fresh.root, fresh.path).refs;
    fresh.releaseTree!();
    const after = await Promise.all(refs.map((t) => readTensorBytes(t!, fresh.path)));
    expect(after).toEqual(before);
    expect(Object.keys(c)).toContain('root');
    await Promise.all([c.close(), fresh.close()]);
  });
});
