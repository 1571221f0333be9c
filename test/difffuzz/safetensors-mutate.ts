/**
 * safetensors files for the differential fuzzer, rebuilt from a seed's tensors with a header written the
 * ways a JSON parser and the Rust crate may disagree on: numbers as floats / exponents / with leading zeros
 * / beyond 2^53 / beyond u64, whitespace before and inside the header and padding after it, duplicate names
 * and duplicate fields (also duplicates that only appear after unescaping), escapes and surrogates in names,
 * unknown fields, dtype spellings, shapes whose product overflows, offsets with holes, overlaps, reversed
 * order, bytes after the last tensor, header lengths that cut the JSON or reach into the data, metadata of
 * other types. The oracle is safetensors 0.4.5 (safe_open) in the trixie root.
 */
import type { Rng } from '../fuzz/rng.js';

export interface StTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

export interface StSeedShape {
  name: string;
  tensors: StTensor[];
  metadata: Record<string, string> | null;
}

export interface StMutation {
  bytes: Uint8Array;
  step: string;
}

const te = new TextEncoder();
const cat = (...p: Uint8Array[]) => new Uint8Array(Buffer.concat(p));

export function parseSafetensors(name: string, bytes: Uint8Array): StSeedShape | null {
  try {
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
    const tensors: StTensor[] = [];
    let metadata: Record<string, string> | null = null;
    for (const [k, v] of Object.entries(header)) {
      if (k === '__metadata__') {
        metadata = v as Record<string, string>;
        continue;
      }
      const e = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
      tensors.push({ name: k, dtype: e.dtype, shape: e.shape, data: bytes.slice(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) });
    }
    return { name, tensors, metadata };
  } catch {
    return null;
  }
}

type Num = number | string;

interface Plan {
  entries: Array<{ name: string; rawName?: string; fields: Array<[string, string]> }>;
  metadata: string | null;
  metadataFirst: boolean;
  leading: string;
  sep: string;
  padding: string;
  data: Uint8Array;
  lengthDelta: number;
  trailingData: Uint8Array;
}

function num(n: Num): string {
  return typeof n === 'number' ? String(n) : n;
}

function jsonString(s: string): string {
  return JSON.stringify(s);
}

/** Lays tensors out in order (offsets consistent), then applies one mutation to the plan, then renders. */
export function mutateSafetensors(seed: StSeedShape, rng: Rng): StMutation {
  const tensors = seed.tensors.map((t) => ({ ...t }));
  const order = tensors.map((_, i) => i);
  let offset = 0;
  const offsets: Array<[Num, Num]> = [];
  const parts: Uint8Array[] = [];
  for (const i of order) {
    const t = tensors[i]!;
    offsets[i] = [offset, offset + t.data.length];
    parts.push(t.data);
    offset += t.data.length;
  }
  const fieldsOf = (i: number): Array<[string, string]> => {
    const t = tensors[i]!;
    return [['dtype', jsonString(t.dtype)], ['shape', `[${t.shape.map((s) => num(s)).join(',')}]`], ['data_offsets', `[${num(offsets[i]![0])},${num(offsets[i]![1])}]`]];
  };
  const plan: Plan = {
    entries: tensors.map((t, i) => ({ name: t.name, fields: fieldsOf(i) })),
    metadata: seed.metadata ? `{${Object.entries(seed.metadata).map(([k, v]) => `${jsonString(k)}:${jsonString(v)}`).join(',')}}` : null,
    metadataFirst: true,
    leading: '',
    sep: '',
    padding: '',
    data: cat(...parts),
    lengthDelta: 0,
    trailingData: new Uint8Array(0),
  };
  const what = rng.weighted([
    [10, 'numbers'], [8, 'whitespace'], [10, 'duplicates'], [8, 'names'], [6, 'fields'], [6, 'dtype'], [10, 'shape'], [12, 'offsets'],
    [6, 'length'], [6, 'metadata'], [5, 'order'], [4, 'trailing'], [4, 'encoding'], [5, 'plain'],
  ] as const);
  const e = plan.entries.length ? rng.int(plan.entries.length) : -1;
  const ent = e >= 0 ? plan.entries[e]! : null;
  const setField = (name: string, value: string) => {
    if (!ent) return;
    const f = ent.fields.find(([k]) => k === name);
    if (f) f[1] = value;
  };
  const t = e >= 0 ? tensors[e]! : null;
  const [b0, b1] = e >= 0 ? (offsets[e]! as [number, number]) : [0, 0];
  let step: string = what;
  switch (what) {
    case 'plain':
      break;
    case 'numbers': {
      const style = rng.pick(['float', 'exp', 'EXP', 'plus-exp', 'neg-zero', 'leading-zero', 'frac-zero-exp']);
      const fmt = (n: number) => (style === 'float' ? `${n}.0` : style === 'exp' ? `${n}e0` : style === 'EXP' ? `${n}E0` : style === 'plus-exp' ? `${n}e+0` : style === 'neg-zero' ? (n === 0 ? '-0' : `${n}`) : style === 'leading-zero' ? `0${n}` : `${n}.000e0`);
      const where = rng.pick(['shape', 'offsets', 'both']);
      if (ent && t) {
        if (where !== 'offsets') setField('shape', `[${t.shape.map((s) => fmt(s)).join(',')}]`);
        if (where !== 'shape') setField('data_offsets', `[${fmt(b0)},${fmt(b1)}]`);
      }
      step = `numbers ${style} in ${where}`;
      break;
    }
    case 'whitespace': {
      const how = rng.pick(['leading-space', 'leading-newline', 'leading-tab', 'inner', 'padding-spaces', 'padding-newline', 'padding-nul', 'padding-tab']);
      if (how.startsWith('leading')) plan.leading = how === 'leading-space' ? ' ' : how === 'leading-newline' ? '\n' : '\t';
      else if (how === 'inner') plan.sep = rng.pick([' ', '\n', '\t', '\r\n', '  ']);
      else plan.padding = how === 'padding-spaces' ? ' '.repeat(rng.small(16)) : how === 'padding-newline' ? '\n' : how === 'padding-nul' ? '\u0000' : '\t';
      step = `whitespace ${how}`;
      break;
    }
    case 'duplicates': {
      if (!ent) break;
      const how = rng.pick(['name', 'name-escaped', 'field', 'metadata', 'name-other-data']);
      if (how === 'name' || how === 'name-other-data') {
        const other = plan.entries[rng.int(plan.entries.length)]!;
        plan.entries.push({ name: ent.name, fields: how === 'name' ? ent.fields.map(([k, v]) => [k, v]) : other.fields.map(([k, v]) => [k, v]) });
      } else if (how === 'name-escaped') {
        const other = plan.entries.find((x) => x !== ent);
        if (other && ent.name.length) {
          // The same name, spelt with a \u escape: equal only after unescaping.
          const c = other.name.charCodeAt(0);
          other.rawName = `"\\u${c.toString(16).padStart(4, '0')}${JSON.stringify(other.name).slice(2)}`;
          const copy = plan.entries.indexOf(other);
          plan.entries.splice(copy + 1, 0, { name: other.name, fields: ent.fields.map(([k, v]) => [k, v]) });
        }
      } else if (how === 'field') {
        const f = rng.pick(ent.fields);
        const alt = f[0] === 'dtype' ? jsonString(rng.pick(['F32', 'I64', 'F16', 'U8'])) : f[0] === 'shape' ? `[${t!.data.length}]` : `[0,${t!.data.length}]`;
        ent.fields.push([f[0], alt]);
        if (rng.chance(0.5)) ent.fields.reverse();
      } else {
        plan.metadata = `${plan.metadata ?? '{}'}`;
        plan.entries.push({ name: '__metadata__', fields: [['format', jsonString('pt')]] });
      }
      step = `duplicate ${how} ${JSON.stringify(ent.name).slice(0, 40)}`;
      break;
    }
    case 'names': {
      if (!ent) break;
      const how = rng.pick(['escape-all', 'escape-slash', 'surrogate-pair', 'lone-surrogate', 'nul', 'empty', 'metadata-name', 'long', 'bad-escape']);
      if (how === 'escape-all') ent.rawName = `"${[...ent.name].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`;
      else if (how === 'escape-slash') (ent.name = `${ent.name}/x`), (ent.rawName = JSON.stringify(ent.name).replace('/', '\\/'));
      else if (how === 'surrogate-pair') ent.rawName = `${JSON.stringify(ent.name).slice(0, -1)}\\ud83d\\ude00"`;
      else if (how === 'lone-surrogate') ent.rawName = `${JSON.stringify(ent.name).slice(0, -1)}\\ud800"`;
      else if (how === 'nul') ent.name = `${ent.name}\u0000`;
      else if (how === 'empty') ent.name = '';
      else if (how === 'metadata-name') ent.name = '__metadata__';
      else if (how === 'long') ent.name = 'x'.repeat(70000);
      else ent.rawName = `${JSON.stringify(ent.name).slice(0, -1)}\\x41"`;
      step = `name ${how}`;
      break;
    }
    case 'fields': {
      if (!ent) break;
      const how = rng.pick(['unknown', 'missing-dtype', 'missing-shape', 'null', 'nested', 'string-number']);
      if (how === 'unknown') ent.fields.push([rng.pick(['foo', 'offsets', 'Dtype']), '1']);
      else if (how === 'missing-dtype') ent.fields = ent.fields.filter(([k]) => k !== 'dtype');
      else if (how === 'missing-shape') ent.fields = ent.fields.filter(([k]) => k !== 'shape');
      else if (how === 'null') setField(rng.pick(['dtype', 'shape', 'data_offsets']), 'null');
      else if (how === 'nested') setField('shape', `[[${t!.shape.join(',')}]]`);
      else setField('data_offsets', `["${b0}","${b1}"]`);
      step = `fields ${how}`;
      break;
    }
    case 'dtype': {
      if (!ent || !t) break;
      const v = rng.pick([t.dtype.toLowerCase(), 'F8_E4M3', 'F8_E5M2', 'BF16', 'U16', 'C64', 'F4', 'F6_E2M3', 'bool', 'Float32', 'F32 ', 'I8', 'U64', 'F64']);
      setField('dtype', jsonString(v));
      step = `dtype ${t.dtype} -> ${v}`;
      break;
    }
    case 'shape': {
      if (!ent || !t) break;
      const how = rng.pick(['overflow', 'overflow-zero', 'negative', 'big', 'extra-1', 'zero', 'swap', 'u64max', 'float-frac', 'add-empty', 'add-empty', 'add-empty']);
      if (how === 'add-empty') {
        // A new zero-byte tensor at the end whose shape has a 0 and dimensions whose product overflows u64.
        const total = plan.data.length;
        const shape = rng.pick(['[4503599627370496,4503599627370496,0]', '[0,18446744073709551615,2]', '[18446744073709551615,18446744073709551615,0]', '[0,4294967296,4294967296]', '[9007199254740993,0]', '[0]']);
        plan.entries.push({ name: 'empty_overflow', fields: [['dtype', '"F32"'], ['shape', shape], ['data_offsets', `[${total},${total}]`]] });
        step = `shape: zero-byte tensor ${shape}`;
        break;
      }
      const shapes: Record<string, string> = {
        overflow: '[4503599627370496,4503599627370496,0]',
        'overflow-zero': '[0,18446744073709551615,18446744073709551615]',
        negative: `[-1,${-t.data.length}]`,
        big: '[18446744073709551616]',
        'extra-1': `[${[...t.shape, 1].join(',')}]`,
        zero: '[0]',
        swap: `[${[...t.shape].reverse().join(',')}]`,
        u64max: '[18446744073709551615]',
        'float-frac': `[${t.shape.map((s) => `${s}.5`).join(',')}]`,
      };
      setField('shape', shapes[how]!);
      step = `shape ${how}`;
      break;
    }
    case 'offsets': {
      if (!ent || !t) break;
      const how = rng.pick(['hole', 'overlap', 'reverse-pair', 'past-end', 'shift-all', 'begin-nonzero', 'big', 'swap-two', 'same-range']);
      const total = plan.data.length;
      if (how === 'hole') setField('data_offsets', `[${b0 + 1},${b1 + 1}]`);
      else if (how === 'overlap') setField('data_offsets', `[${Math.max(0, b0 - 1)},${b1 - 1}]`);
      else if (how === 'reverse-pair') setField('data_offsets', `[${b1},${b0}]`);
      else if (how === 'past-end') setField('data_offsets', `[${b0},${total + 8}]`);
      else if (how === 'begin-nonzero') {
        for (const [i, en] of plan.entries.entries()) {
          const [a, b] = offsets[i] as [number, number];
          en.fields = en.fields.map(([k, v]) => (k === 'data_offsets' ? [k, `[${a + 4},${b + 4}]`] : [k, v]));
        }
        plan.data = cat(new Uint8Array(4), plan.data);
      } else if (how === 'big') setField('data_offsets', `[${b0},18446744073709551616]`);
      else if (how === 'swap-two' && plan.entries.length >= 2) {
        const j = (e + 1) % plan.entries.length;
        const fo = (x: typeof ent) => x.fields.find(([k]) => k === 'data_offsets')!;
        const a = fo(ent)[1];
        fo(ent)[1] = fo(plan.entries[j]!)[1];
        fo(plan.entries[j]!)[1] = a;
      } else if (how === 'same-range' && plan.entries.length >= 2) {
        const j = (e + 1) % plan.entries.length;
        const other = plan.entries[j]!.fields.find(([k]) => k === 'data_offsets')![1];
        setField('data_offsets', other);
      } else {
        plan.trailingData = new Uint8Array(rng.pick([1, 4, 8]));
      }
      step = `offsets ${how}`;
      break;
    }
    case 'length': {
      const how = rng.pick(['minus', 'plus', 'plus-pad']);
      if (how === 'minus') plan.lengthDelta = -rng.small(4);
      else if (how === 'plus') plan.lengthDelta = rng.small(8);
      else plan.padding = ' '.repeat(rng.small(8));
      step = `header length ${how} ${plan.lengthDelta}`;
      break;
    }
    case 'metadata': {
      const how = rng.pick(['number', 'nested', 'null', 'empty', 'absent', 'last', 'list']);
      plan.metadata = how === 'number' ? '{"format":1}' : how === 'nested' ? '{"a":{"b":"c"}}' : how === 'null' ? 'null' : how === 'empty' ? '{}' : how === 'list' ? '["pt"]' : how === 'absent' ? null : (plan.metadata ?? '{"format":"pt"}');
      if (how === 'last') plan.metadataFirst = false;
      step = `metadata ${how}`;
      break;
    }
    case 'order': {
      plan.entries.reverse();
      plan.metadataFirst = rng.chance(0.5);
      step = 'entries in reverse order';
      break;
    }
    case 'trailing':
      plan.trailingData = new Uint8Array(rng.pick([1, 7, 8, 4096])).fill(rng.pick([0, 0x7b]));
      step = `${plan.trailingData.length} bytes after the last tensor`;
      break;
    case 'encoding': {
      const how = rng.pick(['bom', 'latin1-name', 'utf16']);
      if (how === 'bom') plan.leading = '\ufeff';
      else if (how === 'latin1-name' && ent) ent.rawName = '"\u00ff"';
      else plan.leading = '\u0000';
      step = `encoding ${how}`;
      break;
    }
  }
  return { bytes: render(plan, rng), step: `safetensors: ${step}` };
}

function render(plan: Plan, rng: Rng): Uint8Array {
  const s = plan.sep;
  const members: string[] = plan.entries.map((en) => `${en.rawName ?? jsonString(en.name)}${s}:${s}{${en.fields.map(([k, v]) => `${jsonString(k)}${s}:${s}${v}`).join(`,${s}`)}}`);
  if (plan.metadata !== null) {
    const m = `"__metadata__"${s}:${s}${plan.metadata}`;
    if (plan.metadataFirst) members.unshift(m);
    else members.push(m);
  }
  let json = `${plan.leading}{${s}${members.join(`,${s}`)}${s}}`;
  // Writers pad the header to a multiple of 8 with spaces.
  const body = te.encode(json);
  const pad = (8 - ((body.length + te.encode(plan.padding).length) % 8)) % 8;
  json = `${json}${plan.padding}${rng.chance(0.8) ? ' '.repeat(pad) : ''}`;
  const header = te.encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(Math.max(0, header.length + plan.lengthDelta)), true);
  return cat(len, header, plan.data, plan.trailingData);
}
