/**
 * What a pickle GLOBAL would do if torch.load(weights_only=False) imported it. The unpickler never
 * imports anything; these verdicts are for reports (`ckpt inspect`, `ckpt check`):
 *
 * - 'torch': the machinery of a plain state dict (OrderedDict, rebuild functions, storages, dtypes...).
 * - 'allowed': other globals torch 2.x's weights_only loader accepts by default (torch-format.md §6.3).
 * - 'dangerous': can run code or touch the system (os.system, builtins.eval, subprocess, nested loads...).
 * - 'unknown': everything else (user classes, numpy, argparse.Namespace...): not executed by us, refused by
 *   weights_only, and run by a plain torch.load.
 */
import { dtypeByName, dtypeByStorageClass, dtypeByTensorClass } from '../tensor/dtype.js';
import type { PyGlobal } from './value.js';

export type GlobalVerdict = 'torch' | 'allowed' | 'unknown' | 'dangerous';

/** CPython Lib/_compat_pickle.py IMPORT_MAPPING (Python 2 module → Python 3 module). */
const IMPORT_MAPPING: Record<string, string> = {
  __builtin__: 'builtins', copy_reg: 'copyreg', Queue: 'queue', SocketServer: 'socketserver',
  ConfigParser: 'configparser', repr: 'reprlib', tkFileDialog: 'tkinter.filedialog',
  tkSimpleDialog: 'tkinter.simpledialog', tkColorChooser: 'tkinter.colorchooser',
  tkCommonDialog: 'tkinter.commondialog', Dialog: 'tkinter.dialog', Tkdnd: 'tkinter.dnd',
  tkFont: 'tkinter.font', tkMessageBox: 'tkinter.messagebox', ScrolledText: 'tkinter.scrolledtext',
  Tkconstants: 'tkinter.constants', Tix: 'tkinter.tix', ttk: 'tkinter.ttk', Tkinter: 'tkinter',
  markupbase: '_markupbase', _winreg: 'winreg', thread: '_thread', dummy_thread: '_dummy_thread',
  dbhash: 'dbm.bsd', dumbdbm: 'dbm.dumb', dbm: 'dbm.ndbm', gdbm: 'dbm.gnu', xmlrpclib: 'xmlrpc.client',
  SimpleXMLRPCServer: 'xmlrpc.server', httplib: 'http.client', htmlentitydefs: 'html.entities',
  HTMLParser: 'html.parser', Cookie: 'http.cookies', cookielib: 'http.cookiejar',
  BaseHTTPServer: 'http.server', 'test.test_support': 'test.support', commands: 'subprocess',
  urlparse: 'urllib.parse', robotparser: 'urllib.robotparser', urllib2: 'urllib.request', anydbm: 'dbm',
  _abcoll: 'collections.abc',
  // Python 2 cPickle and the pure-Python pickle compat names.
  cPickle: 'pickle', cStringIO: 'io', StringIO: 'io', UserDict: 'collections', UserList: 'collections',
};

/** CPython NAME_MAPPING (applied before IMPORT_MAPPING), the entries that matter for checkpoints. */
const NAME_MAPPING: Record<string, [string, string]> = {
  '__builtin__\nxrange': ['builtins', 'range'],
  '__builtin__\nreduce': ['functools', 'reduce'],
  '__builtin__\nintern': ['sys', 'intern'],
  '__builtin__\nunichr': ['builtins', 'chr'],
  '__builtin__\nunicode': ['builtins', 'str'],
  '__builtin__\nlong': ['builtins', 'int'],
  'itertools\nizip': ['builtins', 'zip'],
  'itertools\nimap': ['builtins', 'map'],
  'itertools\nifilter': ['builtins', 'filter'],
  'itertools\nifilterfalse': ['itertools', 'filterfalse'],
  'itertools\nizip_longest': ['itertools', 'zip_longest'],
  'UserDict\nIterableUserDict': ['collections', 'UserDict'],
  'UserList\nUserList': ['collections', 'UserList'],
  'UserString\nUserString': ['collections', 'UserString'],
  'whichdb\nwhichdb': ['dbm', 'whichdb'],
  '_socket\nfromfd': ['socket', 'fromfd'],
  '_multiprocessing\nConnection': ['multiprocessing.connection', 'Connection'],
  'multiprocessing.process\nProcess': ['multiprocessing.context', 'Process'],
  'multiprocessing.forking\nPopen': ['multiprocessing.popen_fork', 'Popen'],
  'urllib\nurlopen': ['urllib.request', 'urlopen'],
  'urllib\nurlretrieve': ['urllib.request', 'urlretrieve'],
};

/**
 * Python 2 names → Python 3 names, as CPython's unpickler does (`fix_imports`) and torch's weights_only
 * loader does before its allowlist check. Also maps `exceptions.X` → `builtins.X`.
 */
export function mapPython2Name(module: string, name: string): [string, string] {
  const byName = NAME_MAPPING[`${module}\n${name}`];
  if (byName) return [byName[0], byName[1]];
  if (module === 'exceptions') return ['builtins', name];
  const mapped = IMPORT_MAPPING[module];
  return [mapped ?? module, name];
}

/** Modules (and their submodules) that can run code, spawn processes, load pickles or touch files. */
const DANGEROUS_MODULES = new Set([
  'os', 'posix', 'nt', 'subprocess', 'sys', 'shutil', 'socket', 'runpy', 'importlib', 'pty', 'webbrowser',
  'ctypes', 'pickle', '_pickle', 'marshal', 'code', 'codeop', 'types', 'multiprocessing', 'commands',
  '_posixsubprocess', 'pdb', 'bdb', 'timeit', 'trace', 'profile', 'cProfile', 'dill', 'cloudpickle',
  'joblib', 'shelve', 'tempfile', '_thread',
]);

/** `module.name` callables that evaluate code, reach arbitrary attributes or open files. */
const DANGEROUS_CALLABLES = new Set([
  ...['eval', 'exec', 'compile', 'getattr', 'setattr', 'delattr', '__import__', 'open', 'input', 'globals',
    'locals', 'vars', 'breakpoint', 'apply', 'execfile', 'file', 'reload', 'help'].map((n) => `builtins.${n}`),
  ...['attrgetter', 'methodcaller', 'itemgetter'].flatMap((n) => [`operator.${n}`, `_operator.${n}`]),
  'functools.partial', 'functools.partialmethod', '_functools.partial', 'functools.reduce',
  'io.open', '_io.open', '_io.FileIO', 'io.FileIO', 'codecs.open', 'asyncio.create_subprocess_exec',
  'asyncio.create_subprocess_shell', 'torch.load', 'torch.serialization.load', 'torch.serialization._load',
  'torch.storage._load_from_bytes', 'torch.from_file', 'torch.save', 'numpy.load', 'numpy.save',
  'numpy.fromfile', 'numpy.memmap', 'numpy.core.multiarray.fromfile',
]);

/** Prefixes of `module.name` paths that execute code: nested loads, JIT, custom ops, the C extension. */
const DANGEROUS_PREFIXES = [
  'torch.hub.', 'torch.jit.', 'torch._C.', 'torch.ops.', 'torch._ops.', 'torch.classes.', 'torch._classes.',
  'torch.package.', 'torch.utils.cpp_extension.', 'torch.multiprocessing.', 'torch.distributed.',
  'asyncio.subprocess.', 'asyncio.unix_events.',
  'asyncio.windows_events.', 'asyncio.base_subprocess.',
];

/** Attribute names whose presence in a dotted name (protocol 4 qualnames) means reflection tricks. */
const REFLECTION = /(^|\.)__(globals|builtins|subclasses|class|base|bases|mro|dict|getattribute|import|code|closure|self|func|reduce|reduce_ex|loader|spec|init|new|call)__($|\.)/;

const TORCH_EXACT = new Set([
  'collections.OrderedDict', 'torch.Size', 'torch.Tensor', 'torch.nn.parameter.Parameter',
  'torch._tensor._rebuild_from_type_v2', 'torch.storage.UntypedStorage', 'torch.storage.TypedStorage',
  'torch.storage._UntypedStorage', 'torch.storage._TypedStorage', 'torch.UntypedStorage',
  'torch.TypedStorage', 'torch._UntypedStorage', 'torch._TypedStorage',
]);

const ALLOWED_EXACT = new Set([
  'torch.device', '_codecs.encode', 'builtins.set', 'builtins.bytearray', 'builtins.complex',
  'collections.Counter', 'torch.serialization._get_layout', 'torch.per_tensor_affine',
  'torch.per_tensor_symmetric', 'torch.per_channel_affine', 'torch.per_channel_symmetric',
  'torch.per_channel_affine_float_qparams',
]);

/** torch 2.3+ sub-byte integer dtypes (`torch.uint1`..`uint7`, `torch.int1`..`int7`), not in the dtype table. */
const SUB_BYTE_DTYPE = /^u?int[1-7]$/;
const TENSOR_CLASS_MODULES = new Set(['torch', 'torch.cuda', 'torch.sparse', 'torch.cuda.sparse']);
const STORAGE_CLASS_MODULES = new Set(['torch', 'torch.cuda']);

export function globalVerdict(g: PyGlobal): GlobalVerdict {
  const [module, name] = mapPython2Name(g.module, g.name);
  const full = `${module}.${name}`;
  if (isDangerous(module, name, full)) return 'dangerous';
  if (TORCH_EXACT.has(full)) return 'torch';
  if (module === 'torch._utils' && name.startsWith('_rebuild_') && !name.includes('.')) return 'torch';
  if (module === 'torch' && (dtypeByName(name) || SUB_BYTE_DTYPE.test(name))) return 'torch';
  if (STORAGE_CLASS_MODULES.has(module) && dtypeByStorageClass(name)) return 'torch';
  if (TENSOR_CLASS_MODULES.has(module) && dtypeByTensorClass(name)) return 'torch';
  if (ALLOWED_EXACT.has(full)) return 'allowed';
  return 'unknown';
}

function isDangerous(module: string, name: string, full: string): boolean {
  const root = module.split('.', 1)[0] as string;
  if (DANGEROUS_MODULES.has(root)) return true;
  // A protocol 4 name may be a dotted path (`getattr` chains); judge its first component too.
  const head = `${module}.${name.split('.', 1)[0] as string}`;
  if (DANGEROUS_CALLABLES.has(full) || DANGEROUS_CALLABLES.has(head)) return true;
  if (module === 'torch' && ['load', 'hub', 'jit', 'ops', 'classes', '_C', 'from_file'].includes(name.split('.', 1)[0] as string)) {
    return true;
  }
  const dotted = `${full}.`;
  for (const p of DANGEROUS_PREFIXES) if (dotted.startsWith(p)) return true;
  return name.includes('.') && REFLECTION.test(name);
}
