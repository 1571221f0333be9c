import { describe, expect, it } from 'vitest';
import { LeafDict, PyDict } from '../src/pickle/value.js';
import { pickleValue } from '../src/pickle/pickler.js';
import { load, p, u32 } from './helpers/pickle-bytes.js';
import { describePy, hex, runPy } from './helpers/pickle-py.js';

const str = (s: string) => [0x58, ...u32(s.length), ...Buffer.from(s, 'latin1')];
/** {'version': n}, put in memo slot `slot` (BINPUT) as torch writes each module's metadata. */
const versionDict = (n: number, slot: number) => ['}', 'q', slot, ...str('version'), 0x4b, n, 's'];
const entries = (d: PyDict) => [...d.pairs()];

/** The pickle of {'a': leaf, 'b': leaf} for one LeafDict {'version': 1}. */
function oneLeafInTwoPlaces(ordered: boolean): Uint8Array {
  const d = new PyDict(ordered);
  const leaf = new LeafDict('version', 1);
  d.entries.set('a', leaf);
  d.entries.set('b', leaf);
  return pickleValue(d, { path: 'x', storageKey: () => '0' });
}

describe('one-entry {str: int} dicts shared by the unpickler (torch _metadata)', () => {
  it('equal dicts that nothing else can reach become one read-only LeafDict', () => {
    // {'a': {'version': 1}, 'b': {'version': 1}, 'c': {'version': 2}}, every dict BINPUT, none fetched
    const d = load(p(0x80, 2, '}', 'q', 0, '(', ...str('a'), ...versionDict(1, 1), ...str('b'), ...versionDict(1, 2), ...str('c'), ...versionDict(2, 3), 'u', '.')) as PyDict;
    const [a, b, c] = ['a', 'b', 'c'].map((k) => d.get(k) as PyDict);
    expect(a).toBeInstanceOf(LeafDict);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect([entries(a!), entries(c!)]).toEqual([[['version', 1]], [['version', 2]]]);
    expect(() => a!.entries.set('x', 1)).toThrow(/read-only/);
  });

  it('a dict that a later GET reaches and changes is not shared: the change shows where it is held', () => {
    // d = {}; m = {'version': 1} (memo 1); d['a'] = m; then GET 1 and m['more'] = 2: d['a'] has both
    const d = load(p(0x80, 2, '}', ...str('a'), ...versionDict(1, 1), 's', 'h', 1, ...str('more'), 0x4b, 2, 's', '0', '.')) as PyDict;
    const a = d.get('a') as PyDict;
    expect(a).not.toBeInstanceOf(LeafDict);
    expect(entries(a)).toEqual([['version', 1], ['more', 2]]);
  });

  it('a DUP\'d dict is not shared either', () => {
    // d = {}; m = {} DUP'd, m['version'] = 1 through the copy, then the copy is popped and m put in d
    const d = load(p(0x80, 2, '}', ...str('a'), '}', '2', '(', ...str('version'), 0x4b, 1, 'u', '0', 's', '.')) as PyDict;
    expect(d.get('a')).not.toBeInstanceOf(LeafDict);
    expect(entries(d.get('a') as PyDict)).toEqual([['version', 1]]);
  });

  it('the pickler writes a LeafDict anew at each place, without a memo slot', () => {
    const bytes = oneLeafInTwoPlaces(true);
    const leafBytes = Buffer.from([0x7d, ...str('version'), 0x4b, 1, 0x73]).toString('hex');
    expect(hex(bytes).split(leafBytes).length - 1).toBe(2);
  });
});

describePy('LeafDicts as Python loads them', () => {
  it('two places holding one LeafDict load as two distinct, equal dicts', () => {
    const bytes = oneLeafInTwoPlaces(false);
    const out = runPy("import pickle,sys; d = pickle.loads(bytes.fromhex(sys.stdin.read())); print(d, d['a'] is d['b'])", hex(bytes));
    expect(out.trim()).toBe("{'a': {'version': 1}, 'b': {'version': 1}} False");
  });
});
