/**
 * Commander wiring only: parse, call a command's collect function, render text or JSON, set the exit code.
 * Exit codes (every command): 0 success / no differences, 1 findings, 2 usage error, unreadable or
 * invalid input, I/O error. Errors are one line on stderr: `error: <file>: <what is wrong>`; with
 * `--json`, stdout gets one `ckpt.error/1` document as well.
 * Each command's module is imported only when that command runs: start-up pays for one command, not all.
 */
import { Command, CommanderError, Option } from 'commander';
import { setFlagsFromString } from 'node:v8';
import { CheckpointError } from './io/errors.js';
import { printable } from './io/printable.js';
import { guardStdout, writeOut } from './cli-output.js';
import { EXIT_ERROR, EXIT_OK, emit, errorDocument, reportError, wantsJson } from './cli-report.js';
import { diffAction, inspectAction, mergeAction } from './cli-fast.js';
import { VERSION } from './version.js';
import { enablePhaseCollections } from './io/memory.js';
import type { MergeOptions } from './commands/merge.js';
import type { DiffOptions } from './commands/diff.js';
import type { OutputOptions } from './commands/output-form.js';

export { EXIT_ERROR, EXIT_OK, emit, errorDocument, reportError, type CommandOutcome, type ErrorDocument } from './cli-report.js';

/**
 * Commander's own messages quote arguments: one line, escaped. Its "(Did you mean ...?)" suggestion, on a
 * line of its own, joins the first; any other line break is the argument's and is shown as `\n`.
 */
function commanderError(text: string): string {
  return `${printable(text.trimEnd().replace(/\n\(Did you mean /g, ' (Did you mean '))}\n`;
}

export function buildProgram(): Command {
  const program = new Command('ckpt')
    .description('Inspect, diff, check and merge PyTorch checkpoints without Python. Never executes a pickle.')
    .version(VERSION)
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      writeOut: (s) => writeOut(s),
      outputError: (s, write) => write(commanderError(s)),
    });

  program
    .command('inspect')
    .description('show the format, the state dict (key, dtype, shape), counts, other entries and every non-torch global')
    .argument('<file>', 'checkpoint (.pth, .pt, .bin, .ckpt)')
    .option('--json', 'one JSON document (schema ckpt.inspect/1) on stdout')
    .option('--key <path>', 'dotted path of the state dict inside a nested checkpoint (state_dict, model, model.ema)')
    .action(async (file: string, opts: { json?: boolean; key?: string } & RemoteFlags) => inspectAction(file, { ...opts, remote: await remoteSession(opts) }));

  const merge = program
    .command('merge')
    .description("fill the target's keys with pretrained values where names and shapes agree, and explain every other key")
    .argument('<pretrained>', 'checkpoint with the weights to load')
    .argument('<target>', "the modified model's state dict (torch.save(model.state_dict()))")
    .option('-o, --output <file>', 'where to write the merged state dict (atomically)')
    .option('--json', 'one JSON document (schema ckpt.merge/1) on stdout')
    .option('--dry-run', 'match and report, write nothing')
    .option('--key <path>', 'dotted path of the state dict inside the pretrained file')
    .option('--target-key <path>', 'dotted path of the state dict inside the target file')
    .option('--strip-prefix <prefix>', 'remove this prefix from pretrained keys that start with it (repeatable)', collect, [])
    .option('--add-prefix <prefix>', 'prepend this prefix to every pretrained key (after stripping)')
    .option('--rename <rule>', "'REGEX=REPLACEMENT' applied to pretrained keys, in order, after the prefix rules (repeatable)", collect, [])
    .addOption(new Option('--on-shape-mismatch <policy>', 'keep the target value, or fail').choices(['keep', 'error']).default('keep'))
    .option('--strict', 'exit 1 (and write nothing) when any non-benign key is missing or mismatched')
    .option('--adapt <rules>', 'compute values for keys whose shape differs: auto, or rules in-chans,pos-embed,rel-pos-bias,rows (default keep)')
    .addOption(new Option('--interp <convention>', 'bicubic convention for pos-embed (default: torchvision for torchvision key names, else timm)').choices(['timm', 'mae', 'torchvision']))
    .option('--prefix-tokens <n>', 'position-embedding rows before the grid (class/distillation tokens); default: inferred')
    .addOption(new Option('--new-rows <fill>', "rows that the rows rule adds: keep the target's values, or the mean of the pretrained rows").choices(['target', 'mean']))
    .option('--select-rows <pattern=indexes>', "build the target's rows of keys matching PATTERN (a regular expression on the whole key) from these pretrained rows: a comma list or @FILE (repeatable)", collect, [])
    .option('--verbose', 'list every loaded key');
  outputOptions(merge)
    .action(async (pretrained: string, target: string, opts: MergeOptions & { json?: boolean; verbose?: boolean } & RemoteFlags) => mergeAction(pretrained, target, { ...opts, remote: await remoteSession(opts) }));

  program
    .command('diff')
    .description('compare two checkpoints: keys, shapes, dtypes, and with --values the values (exit 0 same, 1 different)')
    .argument('<a>', 'first checkpoint')
    .argument('<b>', 'second checkpoint')
    .option('--json', 'one JSON document (schema ckpt.diff/1) on stdout')
    .option('--key <path>', 'dotted path of the state dict inside both files')
    .option('--key-b <path>', 'dotted path of the state dict inside B, when it differs from --key')
    .option('--strip-prefix <prefix>', 'remove this prefix from keys of both files that start with it (repeatable)', collect, [])
    .option('--values', 'also compare values (streams both files; bitwise equal counts as equal)')
    .option('--atol <x>', 'absolute tolerance for --values', parseNumber, 0)
    .option('--rtol <x>', 'relative tolerance for --values', parseNumber, 0)
    .action(async (a: string, b: string, opts: DiffOptions & { json?: boolean } & RemoteFlags) => diffAction(a, b, { ...opts, remote: await remoteSession(opts) }));

  program
    .command('check')
    .description('integrity, safety, --finite values, and --against an architecture (exit 0 ok, 1 findings)')
    .argument('<file>', 'checkpoint to check')
    .option('--json', 'one JSON document (schema ckpt.check/1) on stdout')
    .option('--key <path>', 'dotted path of the state dict inside a nested checkpoint')
    .option('--against <target>', 'a checkpoint or a manifest (ckpt inspect --json output) the file must load into with strict=True')
    .option('--finite', 'scan float tensors for NaN and Inf')
    .option('--fail-on <kinds>', 'comma-separated finding kinds that fail (default: all): missing,unexpected,shape,dtype,unsafe,global,nonfinite,corrupt')
    .option('--allow-global <name>', "accept this global (module.name) although torch's weights_only allowlist lacks it, as add_safe_globals does; never a dangerous one (repeatable)", collect, [])
    .option('--crc', "for a URL: fetch every record and verify its CRC-32 (always done for local files)")
    .action(async (file: string, opts: { json?: boolean; key?: string; against?: string; finite?: boolean; failOn?: string; allowGlobal: string[]; crc?: boolean } & RemoteFlags) => {
      const { collectCheck, parseFailOn } = await import('./commands/check.js');
      const { renderCheck } = await import('./commands/check-render.js');
      const outcome = await collectCheck(file, {
        key: opts.key,
        against: opts.against,
        finite: opts.finite,
        failOn: opts.failOn === undefined ? undefined : parseFailOn(opts.failOn),
        allowGlobals: opts.allowGlobal,
        crc: opts.crc,
        remote: await remoteSession(opts),
      });
      emit({ report: outcome.report, text: renderCheck(outcome.report), exitCode: outcome.exitCode }, Boolean(opts.json));
    });

  const convert = program
    .command('convert')
    .description('rewrite any readable checkpoint as a zip state dict torch.load(weights_only=True) accepts, as safetensors, or as a sharded folder (never executes the input)')
    .argument('<in>', 'checkpoint to read')
    .argument('<out>', 'file to write (.safetensors: safetensors; other names: torch zip), or a folder with --shard; written atomically')
    .option('--json', 'one JSON document (schema ckpt.convert/1) on stdout')
    .option('--key <path>', 'dotted path of the state dict inside a nested checkpoint');
  outputOptions(convert)
    .action(async (input: string, output: string, opts: OutputOptions & { json?: boolean; key?: string } & RemoteFlags) => {
      const { collectConvert, renderConvert } = await import('./commands/convert.js');
      const report = await collectConvert(input, output, opts.key, await remoteSession(opts), opts);
      emit({ report, text: renderConvert(report), exitCode: EXIT_OK }, Boolean(opts.json));
    });

  program
    .command('sanitize')
    .description('rewrite a training checkpoint so torch.load(weights_only=True) loads it: numpy, Namespace, omegaconf, sets, pickled models become plain values (exit 1 and nothing written when a value has no such form)')
    .argument('<in>', 'checkpoint to read')
    .argument('<out>', 'file to write (written atomically)')
    .option('--json', 'one JSON document (schema ckpt.sanitize/1) on stdout')
    .addOption(new Option('--scalars <as>', 'numpy scalars become Python numbers or 0-d tensors').choices(['number', 'tensor']).default('number'))
    .option('--drop-unknown', 'leave out (and list) values of unknown classes instead of refusing the file')
    .action(async (input: string, output: string, opts: { json?: boolean; scalars: 'number' | 'tensor'; dropUnknown?: boolean } & RemoteFlags) => {
      const { collectSanitize } = await import('./commands/sanitize.js');
      const { renderSanitize } = await import('./commands/sanitize-render.js');
      const outcome = await collectSanitize(input, output, { scalars: opts.scalars, dropUnknown: opts.dropUnknown, remote: await remoteSession(opts) });
      emit({ report: outcome.report, text: renderSanitize(outcome.report), exitCode: outcome.exitCode }, Boolean(opts.json));
    });

  for (const command of program.commands) addRemoteOptions(command);
  return program;
}

/** Commander's parse errors as a ckpt.error/1 document (USAGE, no path). */
function usageDocument(e: CommanderError) {
  return { schema: 'ckpt.error/1', error: { code: 'USAGE', path: null, message: e.message.replace(/^error: /, '').replace(/\n\(Did you mean /g, ' (Did you mean ') } };
}

/** The output-form options convert and merge share (src/commands/output-form.ts). */
function outputOptions(command: Command): Command {
  return command
    .addOption(new Option('--format <format>', 'output format, overriding the extension').choices(['pth', 'safetensors']))
    .option('--shard <size>', "write a folder in Hugging Face's layout, shards of at most SIZE (5GB, 500MB, 2GiB, bytes, or auto = 5GB)")
    .addOption(new Option('--tied <policy>', 'safetensors: names sharing one storage each get their bytes (copy), or one name is kept (drop)').choices(['copy', 'drop']))
    .option('--metadata <key=value>', 'safetensors: add a __metadata__ entry (repeatable)', collect, []);
}

/** The options every command takes for http(s) inputs (remote-session.ts). */
interface RemoteFlags {
  header: string[];
  maxBytes?: string;
  allowDownload?: boolean;
  timeout?: string;
}

function addRemoteOptions(command: Command): void {
  command
    .option('--header <header>', "'NAME: VALUE' sent with requests to a URL's own host, never after a redirect elsewhere (repeatable)", collect, [])
    .option('--max-bytes <n>', 'most bytes one command may fetch from URLs (64MiB, 2GB, ...)', '64MiB')
    .option('--allow-download', 'accept a server that ignores Range requests by downloading the whole file (within --max-bytes)')
    .option('--timeout <seconds>', 'give up on a request that makes no progress for this long', '30');
}

async function remoteSession(opts: RemoteFlags) {
  const { RemoteSession, parseByteCount } = await import('./io/remote-session.js');
  const timeout = parseNumber(opts.timeout ?? '30');
  if (timeout === 0) throw new CheckpointError('USAGE', '', '--timeout must be more than 0 seconds');
  return new RemoteSession({ headers: opts.header, maxBytes: parseByteCount(opts.maxBytes ?? '64MiB'), allowDownload: opts.allowDownload, timeoutSeconds: timeout });
}

function parseNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CheckpointError('USAGE', '', `expected a non-negative number, got "${value}"`);
  return n;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export async function main(argv: string[]): Promise<void> {
  guardStdout();
  enablePhaseCollections();
  // fetch parses HTTP with WebAssembly that V8 recompiles in background threads (TurboFan), and the
  // process waits for them: ~1 s added to every command that read a URL. Baseline code is plenty for
  // a few requests. Set before anything compiles WebAssembly; the library never touches V8 flags.
  setFlagsFromString('--liftoff-only');
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError && e.exitCode === 0) {
      // Help and version exit 0.
      process.exitCode = EXIT_OK;
      return;
    }
    // Commander has printed its own message; ours goes to stderr here.
    process.exitCode = e instanceof CommanderError ? EXIT_ERROR : reportError(e);
    if (wantsJson(argv)) writeOut(`${JSON.stringify(e instanceof CommanderError ? usageDocument(e) : errorDocument(e), null, 2)}\n`);
  }
}

