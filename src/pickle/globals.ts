/**
 * What a pickle GLOBAL names, resolved the way CPython's unpickler resolves it, and a verdict on it. The
 * unpickler never imports anything; the verdicts are for reports (`ckpt inspect`, `ckpt check`):
 *
 * - 'torch': the machinery of a plain state dict (OrderedDict, rebuild functions, storages, dtypes...),
 *   all of it on torch's weights_only allowlist; not listed in reports.
 * - 'allowed': the other globals on that allowlist (torch.device, builtins.set, _codecs.encode...).
 *   Exactly torch 2.6's `_get_allowed_globals()` (WEIGHTS_ONLY_ALLOWED), judged on the full name.
 * - 'dangerous': known to run code, spawn processes, load other pickles, touch files or the network, or
 *   reach such a module through any component of a dotted name (`torch.os.system` is os.system).
 * - 'unknown': everything else (your model's classes, numpy, argparse.Namespace...): not executed by us,
 *   refused by weights_only loading, imported and called by torch.load(weights_only=False).
 * Only 'torch' and 'allowed' pass `ckpt check` by default; `--allow-global NAME` lets an 'unknown' one
 * pass (as torch.serialization.add_safe_globals does), never a 'dangerous' one.
 */
import type { PyGlobal } from './value.js';

export type GlobalVerdict = 'torch' | 'allowed' | 'unknown' | 'dangerous';

/**
 * torch 2.6's weights_only allowlist: the keys of `torch._weights_only_unpickler._get_allowed_globals()`
 * in Debian trixie's python3-torch 2.6 (the judge scripts/torch2.sh runs), sorted. It includes the
 * rebuild functions torch._utils really has and allows (not _rebuild_xla_tensor, not made-up
 * `_rebuild_*` names). test/globals.test.ts compares this list with the live one.
 */
export const WEIGHTS_ONLY_ALLOWED: ReadonlySet<string> = new Set([
  '_codecs.encode', 'builtins.bytearray', 'builtins.complex', 'builtins.set', 'collections.Counter',
  'collections.OrderedDict', 'torch.BFloat16Storage', 'torch.BFloat16Tensor', 'torch.BoolStorage',
  'torch.BoolTensor', 'torch.ByteStorage', 'torch.ByteTensor', 'torch.CharStorage', 'torch.CharTensor',
  'torch.ComplexDoubleStorage', 'torch.ComplexFloatStorage', 'torch.DoubleStorage', 'torch.DoubleTensor',
  'torch.FloatStorage', 'torch.FloatTensor', 'torch.HalfStorage', 'torch.HalfTensor', 'torch.IntStorage',
  'torch.IntTensor', 'torch.LongStorage', 'torch.LongTensor', 'torch.QInt32Storage', 'torch.QInt8Storage',
  'torch.QUInt2x4Storage', 'torch.QUInt4x2Storage', 'torch.QUInt8Storage', 'torch.ShortStorage', 'torch.ShortTensor',
  'torch.Size', 'torch.Tensor', 'torch._tensor._rebuild_from_type_v2',
  'torch._utils._rebuild_device_tensor_from_cpu_tensor', 'torch._utils._rebuild_device_tensor_from_numpy',
  'torch._utils._rebuild_meta_tensor_no_storage', 'torch._utils._rebuild_nested_tensor',
  'torch._utils._rebuild_parameter', 'torch._utils._rebuild_parameter_with_state', 'torch._utils._rebuild_qtensor',
  'torch._utils._rebuild_sparse_tensor', 'torch._utils._rebuild_tensor', 'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_tensor_v3', 'torch._utils._rebuild_wrapper_subclass', 'torch.bfloat16', 'torch.bits16',
  'torch.bits1x8', 'torch.bits2x4', 'torch.bits4x2', 'torch.bits8', 'torch.bool', 'torch.complex128',
  'torch.complex32', 'torch.complex64', 'torch.cuda.BFloat16Storage', 'torch.cuda.BFloat16Tensor',
  'torch.cuda.BoolStorage', 'torch.cuda.BoolTensor', 'torch.cuda.ByteStorage', 'torch.cuda.ByteTensor',
  'torch.cuda.CharStorage', 'torch.cuda.CharTensor', 'torch.cuda.ComplexDoubleStorage',
  'torch.cuda.ComplexFloatStorage', 'torch.cuda.DoubleStorage', 'torch.cuda.DoubleTensor', 'torch.cuda.FloatStorage',
  'torch.cuda.FloatTensor', 'torch.cuda.HalfStorage', 'torch.cuda.HalfTensor', 'torch.cuda.IntStorage',
  'torch.cuda.IntTensor', 'torch.cuda.LongStorage', 'torch.cuda.LongTensor', 'torch.cuda.ShortStorage',
  'torch.cuda.ShortTensor', 'torch.cuda.sparse.BFloat16Tensor', 'torch.cuda.sparse.ByteTensor',
  'torch.cuda.sparse.CharTensor', 'torch.cuda.sparse.DoubleTensor', 'torch.cuda.sparse.FloatTensor',
  'torch.cuda.sparse.HalfTensor', 'torch.cuda.sparse.IntTensor', 'torch.cuda.sparse.LongTensor',
  'torch.cuda.sparse.ShortTensor', 'torch.device', 'torch.float16', 'torch.float32', 'torch.float64',
  'torch.float8_e4m3fn', 'torch.float8_e4m3fnuz', 'torch.float8_e5m2', 'torch.float8_e5m2fnuz', 'torch.int16',
  'torch.int32', 'torch.int64', 'torch.int8', 'torch.nn.parameter.Parameter', 'torch.per_channel_affine',
  'torch.per_channel_affine_float_qparams', 'torch.per_channel_symmetric', 'torch.per_tensor_affine',
  'torch.per_tensor_symmetric', 'torch.qint32', 'torch.qint8', 'torch.quint2x4', 'torch.quint4x2', 'torch.quint8',
  'torch.serialization._get_layout', 'torch.sparse.BFloat16Tensor', 'torch.sparse.ByteTensor',
  'torch.sparse.CharTensor', 'torch.sparse.DoubleTensor', 'torch.sparse.FloatTensor', 'torch.sparse.HalfTensor',
  'torch.sparse.IntTensor', 'torch.sparse.LongTensor', 'torch.sparse.ShortTensor', 'torch.storage.TypedStorage',
  'torch.storage.UntypedStorage', 'torch.uint16', 'torch.uint32', 'torch.uint64', 'torch.uint8',
]);

/** Allowed globals a plain state dict does not need: shown in reports as 'allowed'. */
const ALLOWED_SHOWN = new Set([
  'torch.device', '_codecs.encode', 'builtins.set', 'builtins.bytearray', 'builtins.complex', 'collections.Counter',
  'torch.serialization._get_layout', 'torch.per_tensor_affine', 'torch.per_tensor_symmetric', 'torch.per_channel_affine',
  'torch.per_channel_symmetric', 'torch.per_channel_affine_float_qparams',
]);

/** CPython Lib/_compat_pickle.py IMPORT_MAPPING (Python 2 module → Python 3 module), as in Python 3.11. */
const IMPORT_MAPPING: Record<string, string> = {
  BaseHTTPServer: 'http.server', CGIHTTPServer: 'http.server', ConfigParser: 'configparser', Cookie: 'http.cookies',
  Dialog: 'tkinter.dialog', DocXMLRPCServer: 'xmlrpc.server', FileDialog: 'tkinter.filedialog', HTMLParser: 'html.parser',
  Queue: 'queue', ScrolledText: 'tkinter.scrolledtext', SimpleDialog: 'tkinter.simpledialog', SimpleHTTPServer: 'http.server',
  SimpleXMLRPCServer: 'xmlrpc.server', SocketServer: 'socketserver', StringIO: 'io', Tix: 'tkinter.tix',
  Tkconstants: 'tkinter.constants', Tkdnd: 'tkinter.dnd', Tkinter: 'tkinter', UserDict: 'collections',
  UserList: 'collections', UserString: 'collections', __builtin__: 'builtins', _abcoll: 'collections.abc',
  _elementtree: 'xml.etree.ElementTree', _winreg: 'winreg', anydbm: 'dbm', cPickle: 'pickle', cStringIO: 'io',
  commands: 'subprocess', cookielib: 'http.cookiejar', copy_reg: 'copyreg', dbhash: 'dbm.bsd', dbm: 'dbm.ndbm',
  dumbdbm: 'dbm.dumb', dummy_thread: '_dummy_thread', gdbm: 'dbm.gnu', htmlentitydefs: 'html.entities',
  httplib: 'http.client', markupbase: '_markupbase', repr: 'reprlib', robotparser: 'urllib.robotparser',
  'test.test_support': 'test.support', thread: '_thread', tkColorChooser: 'tkinter.colorchooser',
  tkCommonDialog: 'tkinter.commondialog', tkFileDialog: 'tkinter.filedialog', tkFont: 'tkinter.font',
  tkMessageBox: 'tkinter.messagebox', tkSimpleDialog: 'tkinter.simpledialog', ttk: 'tkinter.ttk',
  urllib2: 'urllib.request', urlparse: 'urllib.parse', whichdb: 'dbm', xmlrpclib: 'xmlrpc.client',
};

/** CPython NAME_MAPPING (checked before IMPORT_MAPPING), Python 3.11; the 48 `exceptions.X` entries below it. */
const NAME_MAPPING: Record<string, [string, string]> = {
  'UserDict\nIterableUserDict': ['collections', 'UserDict'], 'UserDict\nUserDict': ['collections', 'UserDict'],
  'UserList\nUserList': ['collections', 'UserList'], 'UserString\nUserString': ['collections', 'UserString'],
  '__builtin__\nbasestring': ['builtins', 'str'], '__builtin__\nintern': ['sys', 'intern'],
  '__builtin__\nlong': ['builtins', 'int'], '__builtin__\nreduce': ['functools', 'reduce'],
  '__builtin__\nunichr': ['builtins', 'chr'], '__builtin__\nunicode': ['builtins', 'str'],
  '__builtin__\nxrange': ['builtins', 'range'], '_multiprocessing\nConnection': ['multiprocessing.connection', 'Connection'],
  '_socket\nfromfd': ['socket', 'fromfd'], 'itertools\nifilter': ['builtins', 'filter'],
  'itertools\nifilterfalse': ['itertools', 'filterfalse'], 'itertools\nimap': ['builtins', 'map'],
  'itertools\nizip': ['builtins', 'zip'], 'itertools\nizip_longest': ['itertools', 'zip_longest'],
  'multiprocessing\nAuthenticationError': ['multiprocessing.context', 'AuthenticationError'],
  'multiprocessing\nBufferTooShort': ['multiprocessing.context', 'BufferTooShort'],
  'multiprocessing\nProcessError': ['multiprocessing.context', 'ProcessError'],
  'multiprocessing\nTimeoutError': ['multiprocessing.context', 'TimeoutError'],
  'multiprocessing.forking\nPopen': ['multiprocessing.popen_fork', 'Popen'],
  'multiprocessing.process\nProcess': ['multiprocessing.context', 'Process'],
  'socket\n_socketobject': ['socket', 'SocketType'], 'urllib\nContentTooShortError': ['urllib.error', 'ContentTooShortError'],
  'urllib\ngetproxies': ['urllib.request', 'getproxies'], 'urllib\npathname2url': ['urllib.request', 'pathname2url'],
  'urllib\nquote': ['urllib.parse', 'quote'], 'urllib\nquote_plus': ['urllib.parse', 'quote_plus'],
  'urllib\nunquote': ['urllib.parse', 'unquote'], 'urllib\nunquote_plus': ['urllib.parse', 'unquote_plus'],
  'urllib\nurl2pathname': ['urllib.request', 'url2pathname'], 'urllib\nurlcleanup': ['urllib.request', 'urlcleanup'],
  'urllib\nurlencode': ['urllib.parse', 'urlencode'], 'urllib\nurlopen': ['urllib.request', 'urlopen'],
  'urllib\nurlretrieve': ['urllib.request', 'urlretrieve'], 'urllib2\nHTTPError': ['urllib.error', 'HTTPError'],
  'urllib2\nURLError': ['urllib.error', 'URLError'], 'whichdb\nwhichdb': ['dbm', 'whichdb'],
  'exceptions\nStandardError': ['builtins', 'Exception'],
};
for (const name of [
  'ArithmeticError', 'AssertionError', 'AttributeError', 'BaseException', 'BufferError', 'BytesWarning', 'DeprecationWarning',
  'EOFError', 'EnvironmentError', 'Exception', 'FloatingPointError', 'FutureWarning', 'GeneratorExit', 'IOError', 'ImportError',
  'ImportWarning', 'IndentationError', 'IndexError', 'KeyError', 'KeyboardInterrupt', 'LookupError', 'MemoryError', 'NameError',
  'NotImplementedError', 'OSError', 'OverflowError', 'PendingDeprecationWarning', 'ReferenceError', 'RuntimeError',
  'RuntimeWarning', 'StopIteration', 'SyntaxError', 'SyntaxWarning', 'SystemError', 'SystemExit', 'TabError', 'TypeError',
  'UnboundLocalError', 'UnicodeDecodeError', 'UnicodeEncodeError', 'UnicodeError', 'UnicodeTranslateError', 'UnicodeWarning',
  'UserWarning', 'ValueError', 'Warning', 'ZeroDivisionError',
]) NAME_MAPPING[`exceptions\n${name}`] = ['builtins', name];

/**
 * Python 2 names → Python 3 names, as CPython's find_class does with fix_imports (the default) when the
 * pickle's protocol is below 3 (the unpickler calls this only then): NAME_MAPPING first, else IMPORT_MAPPING.
 */
export function mapPython2Name(module: string, name: string): [string, string] {
  const byName = NAME_MAPPING[`${module}\n${name}`];
  if (byName) return [byName[0], byName[1]];
  return [IMPORT_MAPPING[module] ?? module, name];
}

/**
 * Modules that are dangerous wherever they appear in a dotted name: reached as an attribute
 * (`torch.serialization.os.system`) they are still these modules, and no sane class lives under them.
 */
const DANGEROUS_ANYWHERE = new Set([
  'os', 'posix', 'nt', 'sys', 'subprocess', '_posixsubprocess', '__builtins__', 'importlib', 'pickle', '_pickle', 'cPickle',
  'marshal', 'ctypes', '_ctypes', 'shutil', 'pty', 'runpy', 'multiprocessing', 'webbrowser', 'pydoc', 'dill', 'cloudpickle',
  'socket', '_socket',
]);

/** Modules (and their submodules) that run code, spawn processes, load pickles, touch files or the network. */
const DANGEROUS_ROOTS = new Set([
  ...DANGEROUS_ANYWHERE, 'code', 'codeop', 'types', 'commands', 'pdb', 'bdb', 'timeit', 'trace', 'profile', 'cProfile',
  'joblib', 'shelve', 'dbm', 'tempfile', '_thread', 'threading', 'concurrent', 'asyncio', 'signal', 'platform', 'site',
  'pkgutil', 'imp', 'zipimport', 'doctest', 'compileall', 'py_compile', 'fileinput', 'imaplib', 'ftplib', 'smtplib',
  'poplib', 'nntplib', 'telnetlib', 'socketserver', 'http', 'urllib', 'urllib2', 'httplib', 'xmlrpc', 'xmlrpclib',
  'sqlite3', 'venv', 'ensurepip', 'distutils', 'setuptools', 'pip', 'IPython', 'idlelib', 'antigravity', 'pipes',
  'mailcap', 'zipfile', 'tarfile',
]);

/** `module.name` callables outside those modules that evaluate code, reach arbitrary attributes, open files or run commands. */
const DANGEROUS_CALLABLES = new Set([
  ...['eval', 'exec', 'compile', 'getattr', 'setattr', 'delattr', '__import__', 'open', 'input', 'globals', 'locals', 'vars',
    'breakpoint', 'apply', 'execfile', 'file', 'reload', 'help', 'memoryview'].map((n) => `builtins.${n}`),
  ...['attrgetter', 'methodcaller', 'itemgetter'].flatMap((n) => [`operator.${n}`, `_operator.${n}`]),
  'functools.partial', 'functools.partialmethod', '_functools.partial', 'functools.reduce', '_functools.reduce',
  'io.open', 'io.open_code', '_io.open', '_io.open_code', '_io.FileIO', 'io.FileIO', 'codecs.open', 'uuid._get_command_stdout',
  'uuid._popen', 'torch.load', 'torch.serialization.load', 'torch.serialization._load', 'torch.serialization._legacy_load',
  'torch.storage._load_from_bytes', 'torch.from_file', 'torch.save', 'numpy.load', 'numpy.save', 'numpy.fromfile',
  'numpy.memmap', 'numpy.core.multiarray.fromfile', 'numpy.lib.npyio.load', 'pandas.read_pickle',
]);

/** Prefixes of full names that execute code: nested loads, JIT and code generation, custom ops, the C extension. */
const DANGEROUS_PREFIXES = [
  'torch.hub.', 'torch.jit.', 'torch._C.', 'torch.ops.', 'torch._ops.', 'torch.classes.', 'torch._classes.', 'torch.package.',
  'torch.utils.cpp_extension.', 'torch.multiprocessing.', 'torch.distributed.', 'torch.fx.', 'torch._dynamo.',
  'torch._inductor.', 'torch.library.', 'torch.utils.data.datapipes.', 'logging.config.', 'numpy.testing.',
  'numpy.f2py.', 'numpy.distutils.', 'numpy.ctypeslib.', 'pandas.io.pickle.',
];

/** The last component of a dotted name that runs code whatever it hangs off. */
const DANGEROUS_LAST = new Set(['eval', 'exec', 'execfile', 'compile', '__import__', 'system', 'popen', 'Popen', 'getoutput', 'getstatusoutput', 'check_output', 'check_call', 'spawnv', 'spawnl', 'execv', 'execve']);

/** Attribute names in a dotted name that reach for reflection. */
const REFLECTION = /(^|\.)__(globals|builtins|subclasses|class|base|bases|mro|dict|getattribute|import|code|closure|self|func|reduce|reduce_ex|loader|spec|init|new|call)__($|\.)/;

/** The full dotted name of a global: module and (possibly dotted, protocol 4) name joined with '.'. */
export function fullName(g: PyGlobal | string): string {
  return typeof g === 'string' ? g : `${g.module}.${g.name}`;
}

/**
 * The verdict on a global, judged on its full name as the unpickler resolved it (Python 2 names are
 * already mapped where CPython maps them). Allowlisted names are exact and come first (`builtins.set` is
 * allowed although `builtins` is no place to look for safe things); then danger, which no option lifts.
 */
export function globalVerdict(g: PyGlobal | string): GlobalVerdict {
  const full = fullName(g);
  if (WEIGHTS_ONLY_ALLOWED.has(full)) return ALLOWED_SHOWN.has(full) ? 'allowed' : 'torch';
  return isDangerous(full) ? 'dangerous' : 'unknown';
}

export function isDangerous(full: string): boolean {
  const parts = full.split('.');
  if (parts[0] === '__builtin__') parts[0] = 'builtins'; // Python 2's name, where CPython does not map it
  if (DANGEROUS_ROOTS.has(parts[0]!)) return true;
  // `builtins` holds harmless classes too (builtins.object); reached as an attribute it is the whole module.
  for (let i = 1; i < parts.length; i++) if (DANGEROUS_ANYWHERE.has(parts[i]!) || parts[i] === 'builtins' || parts[i] === '__builtin__') return true;
  if (parts.length > 2 && DANGEROUS_LAST.has(parts[parts.length - 1]!)) return true;
  for (let i = 2; i <= parts.length; i++) if (DANGEROUS_CALLABLES.has(parts.slice(0, i).join('.'))) return true;
  const dotted = `${parts.join('.')}.`;
  for (const p of DANGEROUS_PREFIXES) if (dotted.startsWith(p)) return true;
  return REFLECTION.test(full);
}

/** Why a name cannot be passed to --allow-global, or null when it can. */
export function allowGlobalProblem(name: string): string | null {
  if (!/^[^.\s]+(\.[^.\s]+)+$/.test(name)) return 'expected a full dotted name such as mymodel.layers.MyBlock';
  if (isDangerous(name)) return 'it can run code or reach the system when torch.load imports it, so it cannot be allowed';
  return null;
}
