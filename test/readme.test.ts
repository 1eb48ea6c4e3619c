// The README's example is code users copy: run it exactly as written (with the
// package import pointed at this checkout) and check that it learns XOR.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('the README example trains a two-layer model on XOR', (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## A two-layer model with autograd'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  t.truthy(code, 'no ts block in the README section');
  const entry = pathToFileURL(join(root, 'ts', 'index.ts')).href;
  const body = code!.replace(`from 'vlmkit'`, `from ${JSON.stringify(entry)}`);
  t.not(body, code, 'the example must import vlmkit');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', body], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stderr.slice(-2000));
  const losses = [...r.stdout.matchAll(/loss (\d+\.\d+)/g)].map((m) => Number(m[1]));
  t.is(losses.length, 4);
  t.true(losses[3]! < losses[0]! / 10, `losses ${losses.join(', ')}`);
  const probs = /\{([^}]*)\}|\[([^\]]*)\]/.exec(r.stdout.slice(r.stdout.lastIndexOf('Float32Array')))?.[0] ?? '';
  const p = [...probs.matchAll(/-?\d+(\.\d+)?(e-?\d+)?/g)].map((m) => Number(m[0])).filter((v) => v <= 1 && v >= 0);
  t.is(p.length, 8, r.stdout);
  const want = [1, 0, 0, 1, 0, 1, 1, 0];
  t.true(p.every((v, i) => Math.abs(v - want[i]!) < 0.2), `probabilities ${p.join(', ')}`);
});
