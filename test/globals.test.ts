import { describe, expect, it } from 'vitest';
import { globalVerdict, mapPython2Name, type GlobalVerdict } from '../src/pickle/globals.js';
import { unpickle } from '../src/pickle/unpickler.js';
import { PyGlobal } from '../src/pickle/value.js';
import { describePy, runPy } from './helpers/pickle-py.js';

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
      'torch.uint3', 'torch.int7', 'torch.Size', 'torch.Tensor', 'torch.nn.parameter.Parameter',
      'torch._tensor._rebuild_from_type_v2', 'torch.FloatTensor', 'torch.cuda.LongTensor', 'torch.cuda.sparse.FloatTensor',
    ];
    expect(verdicts(names)).toEqual(all(names, 'torch'));
  });

  it('calls the other globals torch 2.x weights_only accepts allowed', () => {
    const names = [
      'torch.device', '_codecs.encode', 'builtins.set', '__builtin__.set', 'builtins.bytearray', '__builtin__.bytearray',
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

describePy('globalVerdict against torch 1.13', () => {
  it('calls every global of torch 1.13\'s weights_only allowlist torch or allowed', () => {
    const names = JSON.parse(runPy('import json, torch\nprint(json.dumps(sorted(torch._weights_only_unpickler._get_allowed_globals())))')) as string[];
    expect(names.length).toBeGreaterThan(80);
    const bad = names.filter((n) => !['torch', 'allowed'].includes(verdict(n)));
    expect(bad).toEqual([]);
  });
});
