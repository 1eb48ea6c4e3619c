// Runs a snippet in a fresh Node process so that a crash (segfault, abort) in the
// native code shows up as a failed test instead of killing the test runner.
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const entry = pathToFileURL(join(root, 'ts', 'index.ts')).href;

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `body` as an ES module with `vlm` bound to the package; prints go to stdout. */
export function runChild(body: string): ChildResult {
  const code = `import * as vlm from ${JSON.stringify(entry)};\n${body}\n`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs each case `[label, expression]` in one child process; the expression must
 * throw. Returns, per label, the error's class name and message (or 'NO ERROR').
 * A native crash makes the child die: the caller sees status !== 0. `setup` runs first.
 */
export function errorsInChild(cases: [string, string][], setup = ''): { result: ChildResult; errors: Record<string, { name: string; message: string }> } {
  const body = `${setup}\nconst out = {};\n` + cases.map(([label, expr]) =>
    `try { ${expr}; out[${JSON.stringify(label)}] = { name: 'NO ERROR', message: '' }; } ` +
    `catch (e) { out[${JSON.stringify(label)}] = { name: e?.constructor?.name ?? String(e), message: String(e?.message ?? e) }; }`).join('\n') +
    `\nconsole.log(JSON.stringify(out));`;
  const result = runChild(body);
  let errors: Record<string, { name: string; message: string }> = {};
  try {
    errors = JSON.parse(result.stdout.trim().split('\n').pop() ?? '{}');
  } catch {
    errors = {};
  }
  return { result, errors };
}
