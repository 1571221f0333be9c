/** One-line summaries of inert values, for reports: `epoch: 7`, `optimizer: {state, param_groups}`. */
import { PyBytes, PyDict, PyFloat, PyGlobal, PyList, PyObject, PySet, PyTuple, type PyValue } from '../pickle/value.js';

const MAX_ITEMS = 6;
const MAX_TEXT = 60;

export function describeValue(v: PyValue, depth = 0): string {
  if (v === null) return 'None';
  switch (typeof v) {
    case 'boolean':
      return v ? 'True' : 'False';
    case 'number':
    case 'bigint':
      return String(v);
    case 'string':
      return JSON.stringify(v.length > MAX_TEXT ? `${v.slice(0, MAX_TEXT)}...` : v);
  }
  if (v instanceof PyFloat) return Number.isInteger(v.value) ? v.value.toFixed(1) : String(v.value);
  if (v instanceof PyBytes) return `bytes[${v.data.length}]`;
  if (v instanceof PyGlobal) return v.qualname;
  if (v instanceof PyTuple || v instanceof PyList || v instanceof PySet) {
    const [open, close] = v instanceof PyTuple ? ['(', ')'] : v instanceof PyList ? ['[', ']'] : ['{', '}'];
    if (depth > 0 || v.items.length > MAX_ITEMS) return `${v.kind} of ${v.items.length}`;
    return `${open}${v.items.map((x) => describeValue(x, depth + 1)).join(', ')}${close}`;
  }
  if (v instanceof PyDict) {
    const keys = [...v.entries.keys()];
    if (depth > 0) return `{${keys.length} entries}`;
    const shown = keys.slice(0, MAX_ITEMS).map((k) => (typeof k === 'string' ? k : describeValue(k, 1)));
    return `{${shown.join(', ')}${keys.length > MAX_ITEMS ? `, ... ${keys.length} keys` : ''}}`;
  }
  if (v instanceof PyObject) {
    const callable = v.callable instanceof PyGlobal ? v.callable.qualname : 'object';
    return `${callable}(...)`;
  }
  if (v.kind === 'tensor') return `tensor ${v.dtype.name} [${v.shape.join(', ')}]`;
  if (v.kind === 'storage') return `storage ${v.dtype.name}[${v.numel}]`;
  return 'persistent id';
}
