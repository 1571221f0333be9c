/**
 * torch dtypes: names, element sizes, the storage classes that name them in a pickle, and the
 * safetensors codes. Source: torch-format.md §3.3 (torch/storage.py, torch/_utils.py).
 */
export type DTypeKind = 'float' | 'int' | 'uint' | 'bool' | 'complex' | 'quantized' | 'bits';

export interface DType {
  /** Canonical torch name, as in `torch.float32` (the pickle writes `GLOBAL torch <name>`). */
  readonly name: string;
  readonly itemSize: number;
  readonly kind: DTypeKind;
  /** Legacy typed-storage class in module `torch` (`FloatStorage`), or null for the dtypes torch saves as UntypedStorage. */
  readonly storageClass: string | null;
  /** safetensors dtype code, where one exists. */
  readonly safetensors: string | null;
}

function d(name: string, itemSize: number, kind: DTypeKind, storageClass: string | null, safetensors: string | null): DType {
  return Object.freeze({ name, itemSize, kind, storageClass, safetensors });
}

export const DTYPES: readonly DType[] = [
  d('float64', 8, 'float', 'DoubleStorage', 'F64'),
  d('float32', 4, 'float', 'FloatStorage', 'F32'),
  d('float16', 2, 'float', 'HalfStorage', 'F16'),
  d('bfloat16', 2, 'float', 'BFloat16Storage', 'BF16'),
  d('int64', 8, 'int', 'LongStorage', 'I64'),
  d('int32', 4, 'int', 'IntStorage', 'I32'),
  d('int16', 2, 'int', 'ShortStorage', 'I16'),
  d('int8', 1, 'int', 'CharStorage', 'I8'),
  d('uint8', 1, 'uint', 'ByteStorage', 'U8'),
  d('bool', 1, 'bool', 'BoolStorage', 'BOOL'),
  d('complex64', 8, 'complex', 'ComplexFloatStorage', 'C64'),
  d('complex128', 16, 'complex', 'ComplexDoubleStorage', null),
  d('qint8', 1, 'quantized', 'QInt8Storage', null),
  d('quint8', 1, 'quantized', 'QUInt8Storage', null),
  d('qint32', 4, 'quantized', 'QInt32Storage', null),
  d('quint4x2', 1, 'quantized', 'QUInt4x2Storage', null),
  d('quint2x4', 1, 'quantized', 'QUInt2x4Storage', null),
  // Saved through torch.storage.UntypedStorage + _rebuild_tensor_v3 (torch >= 2.1).
  d('float8_e5m2', 1, 'float', null, 'F8_E5M2'),
  d('float8_e4m3fn', 1, 'float', null, 'F8_E4M3'),
  d('float8_e5m2fnuz', 1, 'float', null, 'F8_E5M2FNUZ'),
  d('float8_e4m3fnuz', 1, 'float', null, 'F8_E4M3FNUZ'),
  d('float8_e8m0fnu', 1, 'float', null, 'F8_E8M0'),
  d('float4_e2m1fn_x2', 1, 'bits', null, null),
  d('complex32', 4, 'complex', null, null),
  d('uint16', 2, 'uint', null, 'U16'),
  d('uint32', 4, 'uint', null, 'U32'),
  d('uint64', 8, 'uint', null, 'U64'),
  d('bits8', 1, 'bits', null, null),
  d('bits16', 2, 'bits', null, null),
  d('bits1x8', 1, 'bits', null, null),
  d('bits2x4', 1, 'bits', null, null),
  d('bits4x2', 1, 'bits', null, null),
];

const byName = new Map(DTYPES.map((t) => [t.name, t]));
const bySafetensors = new Map(DTYPES.filter((t) => t.safetensors).map((t) => [t.safetensors as string, t]));
const byStorageClass = new Map(DTYPES.filter((t) => t.storageClass).map((t) => [t.storageClass as string, t]));

/** Aliases that appear as `GLOBAL torch <alias>` in hand-written pickles; torch itself writes canonical names. */
const ALIASES: Record<string, string> = {
  float: 'float32',
  double: 'float64',
  half: 'float16',
  long: 'int64',
  int: 'int32',
  short: 'int16',
  cfloat: 'complex64',
  cdouble: 'complex128',
  chalf: 'complex32',
};

export function dtypeByName(name: string): DType | undefined {
  return byName.get(name) ?? byName.get(ALIASES[name] ?? '');
}

/** A safetensors dtype code (`F32`, `BF16`, `F8_E4M3`, ...) → its torch dtype. */
export function dtypeBySafetensors(code: string): DType | undefined {
  return bySafetensors.get(code);
}

/** `FloatStorage` (any module: torch maps `torch.cuda.FloatStorage` the same way) → float32. */
export function dtypeByStorageClass(cls: string): DType | undefined {
  return byStorageClass.get(cls);
}

/** A tensor class such as `FloatTensor` (old pickles build tensors from it) → float32. */
export function dtypeByTensorClass(cls: string): DType | undefined {
  if (!cls.endsWith('Tensor')) return undefined;
  return byStorageClass.get(cls.slice(0, -'Tensor'.length) + 'Storage');
}

export const FLOAT32 = byName.get('float32') as DType;
export const UINT8 = byName.get('uint8') as DType;

export function isFloating(t: DType): boolean {
  return t.kind === 'float';
}
