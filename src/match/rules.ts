/**
 * Key rules applied to pretrained keys before matching: `--strip-prefix`, `--add-prefix` and
 * `--rename 'REGEX=REPLACEMENT'` (JavaScript regular expressions, `$1` groups), in the order given.
 * Stripping is anchored (never `key.replace('module.', '')`, which also rewrites `submodule.`).
 * A rule that changes no key, or that maps two keys onto one, is an error naming the rule.
 */
import { CheckpointError } from '../io/errors.js';

export type KeyRule =
  | { kind: 'strip-prefix'; value: string }
  | { kind: 'add-prefix'; value: string }
  | { kind: 'rename'; value: string; pattern: RegExp; replacement: string };

export interface AppliedRule {
  kind: KeyRule['kind'];
  value: string;
  auto: boolean;
  /** Keys the rule changed; in a merge report, the target keys filled from a key whose name it changed. */
  matched: number;
}

/** `^(.*)$=backbone.$1`: the pattern is everything before the last '=' (patterns may contain '=' in lookaheads). */
export function parseRename(spec: string): KeyRule {
  const at = spec.lastIndexOf('=');
  if (at <= 0) throw new CheckpointError('BAD_RULE', '', `--rename '${spec}': expected 'REGEX=REPLACEMENT'`);
  const source = spec.slice(0, at);
  let pattern: RegExp;
  try {
    pattern = new RegExp(source);
  } catch (e) {
    throw new CheckpointError('BAD_RULE', '', `--rename '${spec}': invalid regular expression (${(e as Error).message})`);
  }
  return { kind: 'rename', value: spec, pattern, replacement: spec.slice(at + 1) };
}

export function describeRule(rule: { kind: string; value: string }): string {
  return rule.kind === 'rename' ? `--rename '${rule.value}'` : `--${rule.kind} ${rule.value}`;
}

function applyOne(rule: KeyRule, key: string): string {
  switch (rule.kind) {
    case 'strip-prefix':
      return key.startsWith(rule.value) ? key.slice(rule.value.length) : key;
    case 'add-prefix':
      return rule.value + key;
    case 'rename':
      return key.replace(rule.pattern, rule.replacement);
  }
}

/**
 * Renames `keys` through `rules`. Returns the new name of each key (same order), each rule with the number
 * of keys it changed in `matched`, and per rule a flag per key that it changed. With `checkEachRule`, a rule
 * that changes nothing or makes two keys collide throws.
 */
export function applyRules(keys: readonly string[], rules: readonly KeyRule[], auto: boolean, checkEachRule = true): { renamed: string[]; applied: AppliedRule[]; changed: Uint8Array[] } {
  let current = [...keys];
  const applied: AppliedRule[] = [];
  const changed: Uint8Array[] = [];
  for (const rule of rules) {
    let matched = 0;
    const flags = new Uint8Array(keys.length);
    const next = current.map((k, i) => {
      const out = applyOne(rule, k);
      if (out !== k) {
        matched++;
        flags[i] = 1;
      }
      return out;
    });
    if (checkEachRule) {
      if (matched === 0) throw new CheckpointError('BAD_RULE', '', `${describeRule(rule)} matches no pretrained key`);
      const seen = new Map<string, string>();
      for (let i = 0; i < next.length; i++) {
        const name = next[i] as string;
        const before = seen.get(name);
        if (before !== undefined) {
          throw new CheckpointError('BAD_RULE', '', `${describeRule(rule)} maps both ${before} and ${keys[i]} onto ${name}`);
        }
        seen.set(name, keys[i] as string);
      }
    }
    applied.push({ kind: rule.kind, value: rule.value, auto, matched });
    changed.push(flags);
    current = next;
  }
  return { renamed: current, applied, changed };
}
