/**
 * Adaptation decisions: which keys whose shapes differ get a value computed from the pretrained tensor,
 * by which rule, with which parameters (next-wave.md §1). Pure: names, shapes and dtypes in, decisions
 * out; the arithmetic is in src/tensor/adapt-ops.ts, the byte reading in the merge command.
 *
 * Rules, each applied only where its key pattern and its shape precondition hold (`--adapt` names them;
 * `auto` enables the first four, `rows` only on embedding-like keys):
 * - in-chans: a 4-D conv weight whose input channels differ, as timm's adapt_input_conv: pretrained
 *   [O, 3N, J, K] -> [O, N, J, K] sums each group of 3 (N = 1: R+G+B); pretrained [O, 3, J, K] ->
 *   [O, N, J, K], N != 3, tiles the RGB filters, keeps N, multiplies by 3/N.
 * - pos-embed: absolute position embeddings [1, p + H*W, D] (or [p + H*W, D]) to another grid: the p
 *   prefix tokens are kept, the grid is resampled bicubically in one of three conventions.
 * - rel-pos-bias: Swin's relative_position_bias_table [(2W-1)^2, heads] to another window, resampled per
 *   head as the official Swin load_pretrained does; the module's relative_position_index keeps the
 *   target's value (it is derived from the window size) and is listed with the same rule.
 * - rows: only the first dimension differs: the overlapping rows are copied, new rows keep the target's
 *   values or take the mean of the pretrained rows.
 * - select-rows (explicit, `--select-rows PATTERN=INDEXES`): the target's rows are the given pretrained
 *   rows, in order.
 */
import { CheckpointError } from '../io/errors.js';
import { canConvert } from '../tensor/convert.js';
import { dtypeByName } from '../tensor/dtype.js';
import { sameShape } from '../tensor/tensor-ref.js';
import type { LoadedKey, MismatchedKey, MissingKey, TensorInfo } from './match.js';
import { BENIGN_NOTES } from './benign.js';

export const ADAPT_RULES = ['in-chans', 'pos-embed', 'rel-pos-bias', 'rows'] as const;
export type AdaptRuleName = (typeof ADAPT_RULES)[number];
export type AdaptRule = AdaptRuleName | 'select-rows';
export const INTERP_CONVENTIONS = ['timm', 'mae', 'torchvision'] as const;
export type Interp = (typeof INTERP_CONVENTIONS)[number];

/** F.interpolate flags of each convention (all mode='bicubic'). */
export const INTERP_FLAGS: Record<Interp, { alignCorners: boolean; antialias: boolean }> = {
  timm: { alignCorners: false, antialias: true },
  mae: { alignCorners: false, antialias: false },
  torchvision: { alignCorners: true, antialias: false },
};

/** Largest prefix-token count tried when inferring it (cls, distillation and register tokens). */
const MAX_PREFIX_TOKENS = 8;

export interface SelectRows {
  /** The flag as given, for messages. */
  readonly spec: string;
  /** Matched against the whole target key. */
  readonly pattern: RegExp;
  readonly indexes: readonly number[];
}

export interface AdaptOptions {
  readonly rules: ReadonlySet<AdaptRuleName>;
  /** `--adapt auto`: rows only on embedding-like keys. */
  readonly auto: boolean;
  /** `--interp`; undefined: torchvision for torchvision key names, else timm. */
  readonly interp?: Interp;
  readonly prefixTokens?: number;
  readonly newRows: 'target' | 'mean';
  readonly selectRows: readonly SelectRows[];
}

export type AdaptParams =
  | { method: 'sum' | 'repeat'; from_channels: number; to_channels: number }
  | { interp: Interp; prefix_tokens: number; from_grid: [number, number]; to_grid: [number, number] }
  | { interp: 'swin'; heads: number; from_grid: [number, number]; to_grid: [number, number] }
  | { value: 'target' }
  | { copied: number; new_rows: 'target' | 'mean' | 'none' }
  | { indexes: number[] };

export interface AdaptedKey {
  key: string;
  /** The pretrained key (before the rules). */
  from: string;
  rule: AdaptRule;
  from_shape: readonly number[];
  to_shape: readonly number[];
  /** The target's dtype, which the written value has. */
  dtype: string;
  /** The pretrained dtype, when it differs. */
  cast_from?: string;
  params: AdaptParams;
}

export interface AdaptPlan {
  adapted: AdaptedKey[];
  /** The match's loaded and mismatched lists without the adapted keys (a note added where a rule's pattern fit but its precondition did not). */
  loaded: LoadedKey[];
  mismatched: MismatchedKey[];
}

const FLOAT_DTYPES = new Set(['float64', 'float32', 'float16', 'bfloat16']);
const POS_EMBED = /(^|\.)(pos_embed|pos_embedding|position_embeddings?(\.weight)?)$/;
const REL_POS_TABLE = /(^|\.)relative_position_bias_table$/;
const REL_POS_INDEX = /(^|\.)relative_position_index$/;
const EMBEDDING_LIKE = /(^|\.)(embed_tokens|word_embeddings|wte|lm_head|embed_in|embed_out)(\.|$)/;
const TORCHVISION_VIT = /(^|\.)encoder\.layers\.encoder_layer_\d+\./;

interface Candidate {
  key: string;
  from: string;
  to: readonly number[];
  fromShape: readonly number[];
  toDtype: string;
  fromDtype: string;
}

/** Decides every adaptation. Throws CheckpointError('BAD_RULE') for a --select-rows that cannot hold. */
export function planAdaptations(loaded: readonly LoadedKey[], mismatched: readonly MismatchedKey[], pretrained: readonly TensorInfo[], target: readonly TensorInfo[], options: AdaptOptions): AdaptPlan {
  const pretrainedByKey = new Map(pretrained.map((p) => [p.key, p]));
  const targetByKey = new Map(target.map((t) => [t.key, t]));
  const candidate = (key: string, from: string): Candidate => {
    const p = pretrainedByKey.get(from) as TensorInfo;
    const t = targetByKey.get(key) as TensorInfo;
    return { key, from, to: t.shape, fromShape: p.shape, toDtype: t.dtype, fromDtype: p.dtype };
  };
  const adapted = new Map<string, AdaptedKey>();
  const add = (c: Candidate, rule: AdaptRule, params: AdaptParams) => {
    const entry: AdaptedKey = { key: c.key, from: c.from, rule, from_shape: c.fromShape, to_shape: c.to, dtype: c.toDtype, params };
    if (c.fromDtype !== c.toDtype) entry.cast_from = c.fromDtype;
    adapted.set(c.key, entry);
  };

  if (options.selectRows.length) {
    const all = [...loaded.map((l) => candidate(l.key, l.from)), ...mismatched.filter((m) => !m.reason).map((m) => candidate(m.key, m.from))];
    for (const s of options.selectRows) {
      let hits = 0;
      for (const c of all) {
        if (!s.pattern.test(c.key)) continue;
        hits++;
        if (!convertible(c)) throw new CheckpointError('BAD_RULE', '', `--select-rows '${s.spec}': ${c.key}: no conversion from ${c.fromDtype} to ${c.toDtype}`);
        const before = adapted.get(c.key);
        if (before) throw new CheckpointError('BAD_RULE', '', `--select-rows '${s.spec}': ${c.key} is already taken by another --select-rows`);
        add(c, 'select-rows', { indexes: checkSelectRows(s, c) });
      }
      if (hits === 0) throw new CheckpointError('BAD_RULE', '', `--select-rows '${s.spec}' matches no target key that has a pretrained value`);
    }
  }

  const notes = new Map<string, string>();
  const interpDefault: Interp = options.interp ?? (target.some((t) => TORCHVISION_VIT.test(t.key)) ? 'torchvision' : 'timm');
  const tables = new Set<string>();
  for (const m of mismatched) {
    // dtype: no conversion exists; zero3-placeholder: the pretrained tensor is empty, nothing to adapt.
    if (adapted.has(m.key) || m.reason) continue;
    const c = candidate(m.key, m.from);
    if (!convertible(c)) continue;
    const floats = FLOAT_DTYPES.has(c.fromDtype) && FLOAT_DTYPES.has(c.toDtype);
    const on = (rule: AdaptRuleName) => options.rules.has(rule);
    if (on('in-chans') && floats && /(^|\.)weight$/.test(c.key)) {
      const params = inChansParams(c.fromShape, c.to);
      if (params) {
        add(c, 'in-chans', params);
        continue;
      }
    }
    if (on('pos-embed') && floats && POS_EMBED.test(c.key)) {
      const result = posEmbedParams(c.fromShape, c.to, interpDefault, options.prefixTokens);
      if (typeof result === 'string') notes.set(c.key, `pos-embed not applied: ${result}`);
      else add(c, 'pos-embed', result);
      continue;
    }
    if (on('rel-pos-bias') && floats && REL_POS_TABLE.test(c.key)) {
      const result = relPosParams(c.fromShape, c.to);
      if (typeof result === 'string') notes.set(c.key, `rel-pos-bias not applied: ${result}`);
      else {
        add(c, 'rel-pos-bias', result);
        tables.add(modulePath(c.key));
      }
      continue;
    }
    if (on('rows') && (!options.auto || EMBEDDING_LIKE.test(c.key)) && c.fromShape.length === c.to.length && c.to.length >= 1 && sameShape(c.fromShape.slice(1), c.to.slice(1))) {
      const fromRows = c.fromShape[0] as number;
      const toRows = c.to[0] as number;
      const grows = toRows > fromRows;
      if (grows && options.newRows === 'mean' && !floats) {
        notes.set(c.key, `rows with --new-rows mean needs floating-point tensors (${c.fromDtype} -> ${c.toDtype})`);
        continue;
      }
      add(c, 'rows', { copied: Math.min(fromRows, toRows), new_rows: grows ? options.newRows : 'none' });
    }
  }
  // A relative_position_index is derived from the window size: with its table adapted, the target's value is the right one.
  for (const m of mismatched) {
    if (adapted.has(m.key) || m.reason || !REL_POS_INDEX.test(m.key) || !tables.has(modulePath(m.key))) continue;
    add(candidate(m.key, m.from), 'rel-pos-bias', { value: 'target' });
  }

  return {
    adapted: target.filter((t) => adapted.has(t.key)).map((t) => adapted.get(t.key) as AdaptedKey),
    loaded: loaded.filter((l) => !adapted.has(l.key)),
    mismatched: mismatched
      .filter((m) => !adapted.has(m.key))
      .map((m) => {
        const note = notes.get(m.key);
        return note && !m.note ? { ...m, note } : m;
      }),
  };
}

function convertible(c: Candidate): boolean {
  const from = dtypeByName(c.fromDtype);
  const to = dtypeByName(c.toDtype);
  return Boolean(from && to && canConvert(from, to));
}

function checkSelectRows(s: SelectRows, c: Candidate): number[] {
  const where = `--select-rows '${s.spec}': ${c.key}`;
  if (c.fromShape.length !== c.to.length || c.to.length === 0 || !sameShape(c.fromShape.slice(1), c.to.slice(1))) {
    throw new CheckpointError('BAD_RULE', '', `${where}: shapes [${c.fromShape.join(', ')}] and [${c.to.join(', ')}] differ beyond the first dimension`);
  }
  const rows = c.to[0] as number;
  if (s.indexes.length !== rows) throw new CheckpointError('BAD_RULE', '', `${where} has ${rows} rows in the target but ${s.indexes.length} indexes were given`);
  const available = c.fromShape[0] as number;
  const bad = s.indexes.find((i) => i >= available);
  if (bad !== undefined) throw new CheckpointError('BAD_RULE', '', `${where}: index ${bad} is out of range (the pretrained tensor has ${available} rows)`);
  return [...s.indexes];
}

function inChansParams(from: readonly number[], to: readonly number[]): AdaptParams | null {
  if (from.length !== 4 || to.length !== 4 || from[0] !== to[0] || from[2] !== to[2] || from[3] !== to[3]) return null;
  const i = from[1] as number;
  const n = to[1] as number;
  if (i === n || n < 1) return null;
  // timm: in_chans 1 sums over RGB (groups of 3 for space-to-depth stems); other counts tile the 3 RGB filters.
  if (i === 3 * n) return { method: 'sum', from_channels: i, to_channels: n };
  if (i === 3 && n !== 3) return { method: 'repeat', from_channels: i, to_channels: n };
  return null;
}

function squareSide(n: number): number | null {
  const s = Math.round(Math.sqrt(n));
  return s >= 2 && s * s === n ? s : null;
}

/** Tokens and width of a position embedding, [1, N, D] or [N, D]. */
function tokensOf(shape: readonly number[]): { tokens: number; dim: number } | null {
  if (shape.length === 3 && shape[0] === 1) return { tokens: shape[1] as number, dim: shape[2] as number };
  if (shape.length === 2) return { tokens: shape[0] as number, dim: shape[1] as number };
  return null;
}

function posEmbedParams(from: readonly number[], to: readonly number[], interp: Interp, prefixTokens: number | undefined): AdaptParams | string {
  const a = tokensOf(from);
  const b = tokensOf(to);
  if (!a || !b || from.length !== to.length || a.dim !== b.dim) return 'shapes are not [1, tokens, D] / [tokens, D] with the same D';
  const fits = (p: number) => {
    const s1 = squareSide(a.tokens - p);
    const s2 = squareSide(b.tokens - p);
    return s1 && s2 ? ([s1, s2] as const) : null;
  };
  if (prefixTokens !== undefined) {
    const sides = fits(prefixTokens);
    if (!sides) return `with --prefix-tokens ${prefixTokens}, ${a.tokens - prefixTokens} and ${b.tokens - prefixTokens} are not both square grids`;
    return { interp, prefix_tokens: prefixTokens, from_grid: [sides[0], sides[0]], to_grid: [sides[1], sides[1]] };
  }
  for (let p = 0; p <= MAX_PREFIX_TOKENS && p < Math.min(a.tokens, b.tokens); p++) {
    const sides = fits(p);
    if (sides) return { interp, prefix_tokens: p, from_grid: [sides[0], sides[0]], to_grid: [sides[1], sides[1]] };
  }
  return `no prefix-token count from 0 to ${MAX_PREFIX_TOKENS} leaves square grids of ${a.tokens} and ${b.tokens} tokens (give --prefix-tokens)`;
}

function relPosParams(from: readonly number[], to: readonly number[]): AdaptParams | string {
  if (from.length !== 2 || to.length !== 2) return 'the tables are not [(2W-1)^2, heads]';
  if (from[1] !== to[1]) return `head counts differ (${from[1]} vs ${to[1]})`;
  const s1 = squareSide(from[0] as number);
  const s2 = squareSide(to[0] as number);
  if (!s1 || !s2) return `${from[0]} or ${to[0]} rows is not a square window table`;
  return { interp: 'swin', heads: from[1] as number, from_grid: [s1, s1], to_grid: [s2, s2] };
}

function modulePath(key: string): string {
  const at = key.lastIndexOf('.');
  return at < 0 ? '' : key.slice(0, at);
}

/** `--adapt` value: `auto` or a comma list of rule names. */
/**
 * A missing target key tied to an adapted one (a vocabulary grown with `rows` where the pretrained file
 * stores only `embed_tokens` and the target ties `lm_head` to it) takes the adapted value, as a tie to a
 * loaded key takes the loaded one: otherwise `load_state_dict` would copy the target's old value into the
 * shared parameter after the adapted one, and the adaptation would be lost. Marks such keys benign in place.
 */
export function tieToAdapted(missing: MissingKey[], adapted: readonly AdaptedKey[], target: readonly TensorInfo[]): void {
  if (adapted.length === 0) return;
  const tieOf = new Map<string, string>();
  for (const t of target) if (t.tieId !== undefined) tieOf.set(t.key, t.tieId);
  const adaptedByTie = new Map<string, string>();
  for (const a of adapted) {
    const tie = tieOf.get(a.key);
    if (tie !== undefined && !adaptedByTie.has(tie)) adaptedByTie.set(tie, a.key);
  }
  for (const m of missing) {
    if (m.benign) continue;
    const tie = tieOf.get(m.key);
    const partner = tie === undefined ? undefined : adaptedByTie.get(tie);
    if (partner) Object.assign(m, { benign: true, reason: 'tied-weight', note: BENIGN_NOTES['tied-weight'], tied_to: partner });
  }
}

export function parseAdapt(value: string): { rules: Set<AdaptRuleName>; auto: boolean } {
  const parts = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 1 && parts[0] === 'keep') return { rules: new Set(), auto: false };
  if (parts.length === 1 && parts[0] === 'auto') return { rules: new Set(ADAPT_RULES), auto: true };
  const rules = new Set<AdaptRuleName>();
  for (const p of parts) {
    if (!(ADAPT_RULES as readonly string[]).includes(p)) {
      throw new CheckpointError('USAGE', '', `--adapt: unknown rule '${p}' (rules: ${ADAPT_RULES.join(', ')}; or auto, or keep)`);
    }
    rules.add(p as AdaptRuleName);
  }
  if (rules.size === 0) throw new CheckpointError('USAGE', '', '--adapt needs a rule name, auto or keep');
  return { rules, auto: false };
}

/** `--select-rows PATTERN=INDEXES` with INDEXES already read (a comma list, or the text of @FILE). */
export function parseSelectRows(spec: string, indexesText: (source: string) => string): SelectRows {
  const at = spec.lastIndexOf('=');
  if (at <= 0) throw new CheckpointError('USAGE', '', `--select-rows '${spec}': expected PATTERN=INDEXES`);
  const source = spec.slice(0, at);
  let pattern: RegExp;
  try {
    pattern = new RegExp(`^(?:${source})$`);
  } catch (e) {
    throw new CheckpointError('USAGE', '', `--select-rows '${spec}': invalid regular expression (${(e as Error).message})`);
  }
  const text = indexesText(spec.slice(at + 1));
  const tokens = text.split(/[\s,]+/).filter(Boolean);
  if (tokens.length === 0) throw new CheckpointError('USAGE', '', `--select-rows '${spec}': no indexes given`);
  const indexes = tokens.map((t) => {
    if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) throw new CheckpointError('USAGE', '', `--select-rows '${spec}': '${t.slice(0, 40)}' is not a row index`);
    return Number(t);
  });
  return { spec, pattern, indexes };
}
