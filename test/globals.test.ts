import { describe, expect, it } from 'vitest';
import { WEIGHTS_ONLY_ALLOWED, allowGlobalProblem, globalVerdict, mapPython2Name, type GlobalVerdict } from '../src/pickle/globals.js';
import { unpickle } from '../src/pickle/unpickler.js';
import { PyGlobal } from '../src/pickle/value.js';
import { describePy, runPy } from './helpers/pickle-py.js';
import { skipTorch2, torch2 } from './helpers/torch2.js';
import { tempDir } from './helpers/cli.js';
import { error, p } from './helpers/pickle-bytes.js';

const verdict = (qualname: string): GlobalVerdict => {
  const i = qualname.lastIndexOf('.');
  return globalVerdict(new PyGlobal(qualname.slice(0, i), qualname.slice(i + 1)));
};
const verdicts = (names: string[]): Record<string, GlobalVerdict> => Object.fromEntries(names.map((n) => [n, verdict(n)]));
const all = (names: string[], v: GlobalVerdict): Record<string, GlobalVerdict> => Object.fromEntries(names.map((n) => [n, v]));

describe('mapPython2Name', () => {
  it('maps Python 2 modules and names like CPython\'s _compat_pickle', () => {
    expect(mapPython2Name('__builtin__', 'set')).toEqual(['builtins', 'set']);
    expect(mapPython2Name('copy_reg', '_reconstructor')).toEqual(['copyreg', '_reconstructor']);
    expect(mapPython2Name('__builtin__', 'unicode')).toEqual(['builtins', 'str']);
    expect(mapPython2Name('__builtin__', 'reduce')).toEqual(['functools', 'reduce']);
    expect(mapPython2Name('exceptions', 'ValueError')).toEqual(['builtins', 'ValueError']);
    expect(mapPython2Name('commands', 'getoutput')).toEqual(['subprocess', 'getoutput']);
    expect(mapPython2Name('torch._utils', '_rebuild_tensor_v2')).toEqual(['torch._utils', '_rebuild_tensor_v2']);
  });
});

describe('globalVerdict', () => {
  it('posix.system → dangerous', () => {
    expect(globalVerdict(new PyGlobal('posix', 'system'))).toBe('dangerous');
  });

  it('flags whatever can execute code or touch the system as dangerous', () => {
    const names = [
      'os.system', 'os.path.join', 'nt.system', 'subprocess.Popen', 'subprocess.check_output', 'sys.modules', 'shutil.rmtree',
      'socket.socket', 'runpy._run_code', 'importlib.import_module', 'pty.spawn', 'webbrowser.open', 'ctypes.CDLL',
      'pickle.loads', '_pickle.loads', 'marshal.loads', 'code.InteractiveInterpreter', 'codeop.compile_command',
      'types.FunctionType', 'multiprocessing.Process', 'asyncio.subprocess.create_subprocess_shell',
      'asyncio.create_subprocess_exec', 'commands.getoutput', 'builtins.eval', 'builtins.exec', 'builtins.compile',
      'builtins.getattr', 'builtins.setattr', 'builtins.delattr', 'builtins.__import__', 'builtins.open', 'builtins.input',
      'builtins.globals', 'builtins.locals', 'builtins.vars', 'builtins.breakpoint', '__builtin__.eval', '__builtin__.apply',
      '__builtin__.execfile', '__builtin__.file', 'operator.attrgetter', 'operator.methodcaller', 'operator.itemgetter',
      '_operator.attrgetter', 'functools.partial', 'torch.load', 'torch.serialization.load', 'torch.hub.load',
      'torch.hub.load_state_dict_from_url', 'torch.jit.load', 'torch.jit._serialization.load', 'torch.ops.aten',
      'torch.classes.myns', 'torch._C._nn', 'torch.storage._load_from_bytes', 'torch.package.PackageImporter',
      'timeit.timeit', 'cProfile.run', 'dill.loads', 'numpy.load', 'io.open',
    ];
    expect(verdicts(names)).toEqual(all(names, 'dangerous'));
  });

  it('flags protocol 4 dotted names that reach for reflection', () => {
    expect(globalVerdict(new PyGlobal('builtins', 'object.__subclasses__'))).toBe('dangerous');
    expect(globalVerdict(new PyGlobal('torch', 'Tensor.__init__.__globals__'))).toBe('dangerous');
    expect(globalVerdict(new PyGlobal('builtins', 'getattr.__call__'))).toBe('dangerous');
    expect(globalVerdict(new PyGlobal('torch', 'hub.load'))).toBe('dangerous');
    expect(globalVerdict(new PyGlobal('collections', 'OrderedDict.fromkeys'))).toBe('unknown');
  });

  it('calls the machinery of a plain state dict torch', () => {
    const names = [
      'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_tensor_v3', 'torch._utils._rebuild_tensor',
      'torch._utils._rebuild_parameter', 'torch._utils._rebuild_parameter_with_state', 'torch._utils._rebuild_qtensor',
      'torch._utils._rebuild_sparse_tensor', 'torch._utils._rebuild_meta_tensor_no_storage', 'torch.FloatStorage',
      'torch.BFloat16Storage', 'torch.QUInt4x2Storage', 'torch.cuda.HalfStorage', 'torch.storage.UntypedStorage',
      'torch.storage.TypedStorage', 'torch.float32', 'torch.bfloat16', 'torch.bool', 'torch.uint16', 'torch.float8_e4m3fn',
      'torch.Size', 'torch.Tensor', 'torch.nn.parameter.Parameter',
      'torch._tensor._rebuild_from_type_v2', 'torch.FloatTensor', 'torch.cuda.LongTensor', 'torch.cuda.sparse.FloatTensor',
    ];
    expect(verdicts(names)).toEqual(all(names, 'torch'));
  });

  it('calls the other globals torch 2.x weights_only accepts allowed', () => {
    const names = [
      'torch.device', '_codecs.encode', 'builtins.set', 'builtins.bytearray',
      'builtins.complex', 'collections.Counter', 'torch.serialization._get_layout', 'torch.per_tensor_affine',
      'torch.per_tensor_symmetric', 'torch.per_channel_affine', 'torch.per_channel_symmetric',
      'torch.per_channel_affine_float_qparams',
    ];
    expect(verdicts(names)).toEqual(all(names, 'allowed'));
  });

  it('calls numpy, argparse.Namespace, user classes and look-alikes unknown', () => {
    const names = [
      'numpy.core.multiarray._reconstruct', 'numpy.core.multiarray.scalar', 'numpy.dtype', 'numpy.ndarray',
      'argparse.Namespace', 'copyreg._reconstructor', 'copy_reg._reconstructor', '__main__.MyModel',
      'torch.nn.modules.conv.Conv2d', 'builtins.object', 'builtins.frozenset', 'builtins.dict', 'torch.FloatStoragex',
      'torch.Floatstorage', 'torchvision.models.resnet.ResNet', 'posixpath.join', 'ntpath.join', 'typing.List',
      'codecs.encode', 'sysconfig.get_paths', 'operator.add', 'torch.nn.Module',
    ];
    expect(verdicts(names)).toEqual(all(names, 'unknown'));
  });

  it('judges the globals an unpickled file references, mapped as the unpickler reports them', () => {
    const b = new Uint8Array(Buffer.from('\x80\x02(c__builtin__\neval\nccollections\nOrderedDict\nt.', 'latin1'));
    const { globals } = unpickle(b, { path: 'x' });
    expect(globals.map((g) => [g.qualname, globalVerdict(g)])).toEqual([
      ['builtins.eval', 'dangerous'], ['collections.OrderedDict', 'torch'],
    ]);
  });
});

describe('the allow-list is exact', () => {
  it('rebuild functions, dtypes and storages off the list are not allowed: made-up names, _rebuild_xla_tensor, sub-byte dtypes', () => {
    const names = [
      'torch._utils._rebuild_anything', 'torch._utils._rebuild_xla_tensor', 'torch._utils._rebuild_sparse_csr_tensor',
      'torch.uint3', 'torch.int7', 'torch.UntypedStorage', 'torch._UntypedStorage', 'torch.storage._TypedStorage', 'torch.FloatStoragex',
    ];
    expect(verdicts(names)).toEqual(all(names, 'unknown'));
  });

  it('judges the full dotted name: any component reaching os, sys, subprocess, builtins, pickle... is dangerous', () => {
    const names = [
      'torch.os.system', 'torch.serialization.os.system', 'torch.serialization.pickle.loads', 'numpy.sys.modules',
      'mymodel.subprocess.run', 'torch.serialization.builtins.eval', 'collections.__builtins__.eval', 'torch._utils.importlib.import_module',
      'pydoc.pipepager', 'logging.config.dictConfig', 'logging.config.listen', 'uuid._get_command_stdout',
      'torch.fx.graph_module._forward_from_src', 'torch.fx.graph_module.reduce_graph_module', 'torch.jit.load', 'torch.hub.load',
      'torch.load', 'torch.serialization._legacy_load', 'code.interact', 'runpy.run_path', 'shutil.rmtree', 'webbrowser.open',
      'ctypes.CDLL', 'multiprocessing.Process', 'numpy.load', 'numpy.testing._private.utils.runstring', 'pandas.read_pickle',
      'platform.popen', 'site.addsitedir', 'pkgutil.resolve_name', 'imaplib.IMAP4_stream', 'torch._dynamo.eval_frame',
      'mymodel.helpers.eval', 'antigravity.fly', '__builtin__.eval',
    ];
    expect(verdicts(names)).toEqual(all(names, 'dangerous'));
  });

  it('--allow-global refuses dangerous names and names without a module', () => {
    expect(allowGlobalProblem('mymodel.layers.MyBlock')).toBeNull();
    expect(allowGlobalProblem('argparse.Namespace')).toBeNull();
    expect(allowGlobalProblem('torch.os.system')).toMatch(/cannot be allowed/);
    expect(allowGlobalProblem('posix.system')).toMatch(/cannot be allowed/);
    expect(allowGlobalProblem('Namespace')).toMatch(/full dotted name/);
  });
});

describe('globals as the unpickler resolves them (CPython find_class)', () => {
  const names = (b: Uint8Array) => unpickle(b, { path: 'x' }).globals.map((g) => g.qualname);
  it('maps Python 2 names below protocol 3 only', () => {
    expect(names(p(0x80, 2, 'c__builtin__\nset\n.'))).toEqual(['builtins.set']);
    expect(names(p('c__builtin__\nset\n.'))).toEqual(['builtins.set']);
    expect(names(p(0x80, 3, 'c__builtin__\nset\n.'))).toEqual(['__builtin__.set']);
    expect(names(p(0x80, 4, 'cexceptions\nValueError\n.'))).toEqual(['exceptions.ValueError']);
    expect(names(p(0x80, 2, 'cexceptions\nNotAnException\n.'))).toEqual(['exceptions.NotAnException']);
  });

  it('resolves dotted names from protocol 4 and refuses them below, as CPython does', () => {
    expect(names(p(0x80, 4, 'ctorch\nos.system\n.'))).toEqual(['torch.os.system']);
    expect(globalVerdict('torch.os.system')).toBe('dangerous');
    expect(error(() => unpickle(p(0x80, 2, 'ctorch\nos.system\n.'), { path: 'x' })).detail).toMatch(/below protocol 4 CPython cannot resolve a dotted name/);
    expect(error(() => unpickle(p(0x80, 4, 'ctorch\nos..system\n.'), { path: 'x' })).detail).toMatch(/which CPython cannot resolve/);
    expect(error(() => unpickle(p(0x80, 4, 'cmod\nf.<locals>.g\n.'), { path: 'x' })).detail).toMatch(/which CPython cannot resolve/);
  });
});

describePy('name resolution against CPython', () => {
  it('mapPython2Name equals _compat_pickle for every mapped name (Python 3.11)', () => {
    const pairs = JSON.parse(runPy('import json, _compat_pickle as c\nprint(json.dumps([[m, n, *c.NAME_MAPPING[(m, n)]] for (m, n) in c.NAME_MAPPING] + [[m, "x", c.IMPORT_MAPPING[m], "x"] for m in c.IMPORT_MAPPING]))')) as string[][];
    expect(pairs.length).toBeGreaterThan(140);
    expect(pairs.map(([m, n]) => [m, n, ...mapPython2Name(m!, n!)])).toEqual(pairs);
  });
});

describe.skipIf(skipTorch2)('the allow-list against torch 2.6', () => {
  it("equals torch 2.6's _get_allowed_globals(), and every rebuild function torch._utils has but does not allow is unknown", () => {
    const live = JSON.parse(torch2(tempDir('ckpt-globals-'), `import json, torch, torch._utils as u
print(json.dumps({'allowed': sorted(torch._weights_only_unpickler._get_allowed_globals()), 'rebuild': ['torch._utils.' + n for n in dir(u) if n.startswith('_rebuild')]}))`)) as { allowed: string[]; rebuild: string[] };
    expect([...WEIGHTS_ONLY_ALLOWED].sort()).toEqual(live.allowed);
    expect(live.allowed.map(verdict).filter((v) => v !== 'torch' && v !== 'allowed')).toEqual([]);
    const notAllowed = live.rebuild.filter((n) => !live.allowed.includes(n));
    expect(notAllowed).toContain('torch._utils._rebuild_xla_tensor');
    expect(verdicts(notAllowed)).toEqual(all(notAllowed, 'unknown'));
  });
});
