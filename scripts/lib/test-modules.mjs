/**
 * What the fuzz scripts share: importing test/<folder>/*.ts from plain Node (types stripped by the
 * TypeScript compiler into a cache folder keyed by the sources' content, so an edit is picked up and an
 * unchanged tree is not transpiled again), the usage/exit convention of ckpt's own CLI, and the walk over
 * their flags.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Transpiles every .ts file of `folders` (under ROOT/test) once; returns `load(folder, name)`, which
 * imports test/<folder>/<name>.ts as transpiled. Files import each other by relative paths, so the folders
 * keep their layout in the cache.
 */
export async function testModules(root, folders, cacheName) {
  const hash = createHash('sha1');
  const files = [];
  for (const folder of folders) {
    for (const f of readdirSync(join(root, 'test', folder)).filter((n) => n.endsWith('.ts')).sort()) {
      files.push([folder, f]);
      hash.update(`${folder}/${f}`).update(readFileSync(join(root, 'test', folder, f)));
    }
  }
  const outDir = join(tmpdir(), `${cacheName}-${hash.digest('hex').slice(0, 16)}`);
  if (!existsSync(join(outDir, 'done'))) {
    const ts = (await import('typescript')).default;
    for (const folder of folders) mkdirSync(join(outDir, folder), { recursive: true });
    writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
    for (const [folder, f] of files) {
      const { outputText } = ts.transpileModule(readFileSync(join(root, 'test', folder, f), 'utf8'), {
        fileName: f,
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
      });
      writeFileSync(join(outDir, folder, f.replace(/\.ts$/, '.js')), outputText);
    }
    writeFileSync(join(outDir, 'done'), '');
  }
  return (folder, name) => import(pathToFileURL(join(outDir, folder, `${name}.js`)).href);
}

/** Prints `text` and exits 0, or prints `error: problem` and `text` on stderr and exits 2. */
export function usageExit(text, problem) {
  if (problem) {
    process.stderr.write(`error: ${problem}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

/**
 * Walks the command line: `handle(flag, { value, number })` applies one flag and returns false for a flag
 * it does not know; value() and number() take the flag's argument (a missing one, or a number that is
 * not finite and non-negative, goes to `usage` with the reason). -h/--help goes to `usage()`.
 */
export function walkFlags(argv, usage, handle) {
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    const number = () => {
      const v = Number(value());
      if (!Number.isFinite(v) || v < 0) usage(`${flag} needs a non-negative number`);
      return v;
    };
    if (flag === '-h' || flag === '--help') usage();
    else if (!handle(flag, { value, number })) usage(`unknown argument ${flag}`);
  }
}
