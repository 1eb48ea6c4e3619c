// The `vlmkit` CLI (ts/cli/main.ts), always in a child process: --help for each command,
// unknown flags, malformed numbers and bad config values as one-line errors (exit code 2)
// before any work starts, --print-config, a tiny training run into a temporary folder (run
// folder contents, report.html), `vlmkit eval` of that folder, and --resume continuing it.
// Also: the shipped configs/*.json validate, and configs/clip-tiny.json is the built-in default.
import test from 'ava';
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CLIP_RUN, DEFAULT_ALIGN_RUN, resolveRunConfig } from '../ts/cli/config.js';
import { readMetrics } from '../ts/train/plots.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'vlmkit-cli-'));
test.after.always(() => rmSync(work, { recursive: true, force: true }));

function vlmkit(args: string[], timeout = 120_000): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'ts', 'cli', 'main.ts'), ...args], {
    cwd: root, encoding: 'utf8', timeout, env: { ...process.env, NO_COLOR: '1' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The same in the background (the error cases run a few at a time). */
function vlmkitAsync(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(root, 'ts', 'cli', 'main.ts'), ...args], { cwd: root, env: { ...process.env, NO_COLOR: '1' } });
    let out = '', err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => done({ code, out, err }));
  });
}

test('--help for the program and each command', (t) => {
  const main = vlmkit(['--help']);
  t.is(main.code, 0);
  t.regex(main.out, /vlmkit train clip\|align/);
  const train = vlmkit(['train', '--help']);
  t.is(train.code, 0);
  for (const f of ['--config', '--data', '--steps', '--batch-size', '--out', '--resume', '--threads', '--caption-noise', '--csv-img-key'])
    t.true(train.out.includes(f), `train --help mentions ${f}`);
  t.regex(train.out, /clip-tiny/);   // lists the named configs
  const ev = vlmkit(['eval', '-h']);
  t.is(ev.code, 0);
  t.regex(ev.out, /usage: vlmkit eval RUN_DIR/);
  const bench = vlmkit(['bench', '--help']);
  t.is(bench.code, 0);
  t.regex(bench.out, /bench\/run\.ts/);
  const none = vlmkit([]);
  t.is(none.code, 2);
});

test('bad invocations are one-line errors with exit code 2, before any work', async (t) => {
  const jobs: (() => Promise<void>)[] = [];
  const bad = (args: string[], message: string) => jobs.push(async () => {
    const r = await vlmkitAsync(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.err}`);
    t.is(r.err.trim(), message, args.join(' '));
    t.is(r.out, '');
  });
  const badRe = (args: string[], message: RegExp) => jobs.push(async () => {
    const r = await vlmkitAsync(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.err}`);
    t.regex(r.err.trim(), message);
  });
  bad(['trian'], "vlmkit: unknown command 'trian' (expected train, eval or bench; see 'vlmkit --help')");
  bad(['train', 'clip', '--stpes', '3'], "vlmkit train: unknown flag '--stpes' (see 'vlmkit train --help')");
  bad(['train'], "vlmkit train: expected a model ('clip' or 'align') but received none (see 'vlmkit train --help')");
  bad(['train', 'blip'], "vlmkit train: expected 'clip' or 'align' for the model but received 'blip'");
  bad(['train', 'clip', '--steps', 'ten'], "vlmkit train: expected an integer >= 1 for --steps but received 'ten'");
  bad(['train', 'clip', '--steps', '0'], "vlmkit train: expected an integer >= 1 for --steps but received '0'");
  bad(['train', 'clip', '--batch-size', '2.5'], "vlmkit train: expected an integer >= 2 for --batch-size but received '2.5'");
  bad(['train', 'clip', '--caption-noise', '1.5'], "vlmkit train: expected a number in [0, 1] for --caption-noise but received '1.5'");
  bad(['train', 'clip', '--steps'], 'vlmkit train: expected a value after --steps but received none');
  bad(['train', 'clip', '--precision', 'low'], "vlmkit config: expected one of 'highest', 'medium' for train.precision but received the string 'low'");
  bad(['train', 'clip', '--resume'], 'vlmkit train: expected --out DIR (the run folder to continue) with --resume but received none');
  bad(['train', 'clip', '--held-out', 'samsung'], "vlmkit config: expected one of 'apple', 'google', 'twitter', 'facebook' for data.heldOut but received the string 'samsung'");
  bad(['train', 'clip', '--data', 'nope.csv'], "vlmkit train: expected 'emoji', a manifest file or WebDataset shards for --data but 'nope.csv' does not exist");
  bad(['train', 'clip', '--batch-size', '10', '--accum-freq', '3'],
    'vlmkit config: expected train.batchSize to be a multiple of train.accumFreq (3) with at least 2 samples per micro-batch but received 10');
  badRe(['train', 'clip', '--config', 'no-such-config'], /^vlmkit config: expected a JSON file or a named config \(.*clip-tiny.*\) for --config but received 'no-such-config' \(no such file\)$/);
  const cfg = (name: string, v: unknown) => { const p = join(work, name); writeFileSync(p, typeof v === 'string' ? v : JSON.stringify(v)); return p; };
  bad(['train', 'clip', '--config', cfg('patch.json', { clip: { vision: { patchSize: 5 } } })],
    'vlmkit config: expected a multiple of patchSize (5) for clip.vision.imageSize but received the number 32');
  badRe(['train', 'clip', '--config', cfg('widht.json', { clip: { text: { widht: 3 } } })], /^vlmkit config: expected one of the keys .* but received the unknown key 'clip.text.widht'$/);
  badRe(['train', 'clip', '--config', cfg('key.json', { train: { stpes: 3 } })],
    /^vlmkit config: expected one of the keys 'steps', 'batchSize', .* but received the unknown key 'train.stpes'$/);
  bad(['train', 'clip', '--config', cfg('lr.json', { train: { lr: -1 } })], 'vlmkit config: expected a number in (0, 10] for train.lr but received the number -1');
  bad(['train', 'align', '--config', cfg('model.json', { model: 'clip' })],
    "vlmkit config: expected a config for 'align' (the command's model) but the config file says model 'clip'");
  cfg('broken.json', '{ "train": ');
  badRe(['train', 'clip', '--config', join(work, 'broken.json')], /^vlmkit config: expected valid JSON in '.*broken\.json' but it does not parse: /);
  bad(['eval'], "vlmkit eval: expected one run folder but received none (see 'vlmkit eval --help')");
  bad(['eval', work], `vlmkit eval: expected a run folder (with config.json, written by vlmkit train) but '${work}' is not one`);
  bad(['eval', work, '--stepp', '3'], "vlmkit eval: unknown flag '--stepp' (see 'vlmkit eval --help')");
  // four at a time
  const queue = [...jobs];
  await Promise.all(Array.from({ length: 4 }, async () => { for (let job = queue.shift(); job; job = queue.shift()) await job(); }));
});

test('--print-config merges config file and flags over the defaults', (t) => {
  const p = join(work, 'small.json');
  writeFileSync(p, JSON.stringify({ clip: { vision: { layers: 2 } }, train: { lr: 5e-4 } }));
  const r = vlmkit(['train', 'clip', '--config', p, '--steps', '7', '--batch-size', '64', '--threads', '1', '--caption-noise', '0.2', '--precision', 'medium', '--print-config']);
  t.is(r.code, 0, r.err);
  const c = JSON.parse(r.out);
  t.is(c.name, 'small');
  t.is(c.clip.vision.layers, 2);
  t.is(c.clip.vision.width, 128, 'other model keys keep their defaults');
  t.is(c.train.lr, 5e-4);
  t.is(c.train.steps, 7);
  t.is(c.train.batchSize, 64);
  t.is(c.train.threads, 1);
  t.is(c.train.precision, 'medium');
  t.is(c.data.captionNoise, 0.2);
  t.is(c.train.weightDecay, DEFAULT_CLIP_RUN.train.weightDecay);
});

test('the shipped configs validate; clip-tiny and align-tiny are the built-in defaults', (t) => {
  const dir = join(root, 'configs');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  t.true(files.includes('clip-tiny.json') && files.includes('clip-small.json') && files.includes('align-tiny.json'));
  for (const f of files) {
    const v = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    t.notThrows(() => resolveRunConfig(v), f);
    t.is(v.name, f.replace(/\.json$/, ''), `${f} names itself`);
  }
  t.deepEqual(resolveRunConfig(JSON.parse(readFileSync(join(dir, 'clip-tiny.json'), 'utf8'))), resolveRunConfig({}, 'clip'));
  t.deepEqual(JSON.parse(readFileSync(join(dir, 'clip-tiny.json'), 'utf8')), JSON.parse(JSON.stringify(DEFAULT_CLIP_RUN)));
  t.deepEqual(JSON.parse(readFileSync(join(dir, 'align-tiny.json'), 'utf8')), JSON.parse(JSON.stringify(DEFAULT_ALIGN_RUN)));
});

test.serial('a tiny training run, its evaluation, and --resume', (t) => {
  const cfgPath = join(work, 'tiny.json');
  writeFileSync(cfgPath, JSON.stringify({
    clip: { embedDim: 32, vision: { patchSize: 8, width: 32, layers: 1, heads: 2 }, text: { contextLength: 16, width: 32, layers: 1, heads: 2 } },
    train: { batchSize: 32, logEvery: 1, evalEvery: 0, checkpointEvery: 2, warmupSteps: 1 },
    eval: { reportSamples: 6 },
  }));
  const out = join(work, 'run');
  const r = vlmkit(['train', 'clip', '--config', cfgPath, '--steps', '3', '--out', out, '--threads', '1']);
  t.is(r.code, 0, r.err.slice(-3000));
  for (const f of ['config.json', 'metrics.jsonl', 'curves.svg', 'eval.json', 'report.html', 'step-3.json', 'step-3.safetensors', 'step-2.json'])
    t.true(existsSync(join(out, f)), `${f} in the run folder`);
  t.regex(r.out, /image->text +\d+\.\d\d% +\d+\.\d\d% +\d+\.\d\d%/);
  t.regex(r.out, /zero-shot classification \(99 emoji subcategories\)/);
  t.regex(r.out, /completed at step 3 of 3/);
  t.regex(r.err, /CLIP 'tiny': \d+\.\d\d M parameters, 1 thread/);
  t.regex(r.err, /held out 3645 \(facebook\)/);
  const m = readMetrics(join(out, 'metrics.jsonl'));
  t.deepEqual(m.filter((x) => x.type === 'train').map((x) => x.step), [1, 2, 3]);
  const ev = m.filter((x) => x.type === 'eval');
  t.is(ev.length, 1);
  t.true(typeof ev[0]!['i2t_recall@10'] === 'number' && typeof ev[0]!.zeroshot_accuracy === 'number');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  t.is((html.match(/<img src="data:image\/png;base64,/g) ?? []).length, 6);
  t.regex(html, /recall@10/);
  t.regex(html, /<svg/);
  const evalJson = JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8'));
  t.is(evalJson.step, 3);
  t.is(evalJson.images, 3645);

  // vlmkit eval of the folder gives the same recall
  const e = vlmkit(['eval', out, '--threads', '1']);
  t.is(e.code, 0, e.err.slice(-3000));
  const again = JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8'));
  t.deepEqual(again.metrics, evalJson.metrics);
  t.regex(e.out, /step 3; report: /);
  const e2 = vlmkit(['eval', out, '--step', '2', '--threads', '1']);
  t.is(e2.code, 0, e2.err.slice(-3000));
  t.is(JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8')).step, 2);

  // the same folder again without --resume is refused; with --resume it continues from step 3
  const refused = vlmkit(['train', 'clip', '--config', cfgPath, '--steps', '5', '--out', out]);
  t.is(refused.code, 2);
  t.regex(refused.err, /holds checkpoints \(step 3\); add --resume to continue it or choose another --out/);
  const res = vlmkit(['train', 'clip', '--steps', '5', '--out', out, '--resume', '--threads', '1']);
  t.is(res.code, 0, res.err.slice(-3000));
  t.regex(res.err, /resuming at step 3 of 5/);
  t.regex(res.out, /completed at step 5 of 5/);
  t.deepEqual(readMetrics(join(out, 'metrics.jsonl')).filter((x) => x.type === 'train').map((x) => x.step), [1, 2, 3, 4, 5]);
  t.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).config.name, 'tiny', 'resuming keeps the run\'s own config');
});

test.serial('a manifest of user images: corrupt/missing images and empty captions are skipped and counted', async (t) => {
  const sharp = (await import('sharp')).default;
  const dir = join(work, 'user');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'img'), { recursive: true });
  const colours = ['red', 'green', 'blue', 'yellow', 'purple'] as const;
  const rgb: Record<string, [number, number, number]> = { red: [220, 20, 20], green: [20, 200, 40], blue: [30, 40, 220], yellow: [240, 220, 20], purple: [140, 30, 160] };
  const rows = ['filepath,caption'];
  for (let i = 0; i < 40; i++) {
    const c = colours[i % 5]!;
    const [r, g, b] = rgb[c]!;
    await sharp({ create: { width: 40 + (i % 3) * 8, height: 30, channels: 3, background: { r, g, b } } }).png().toFile(join(dir, 'img', `${i}.png`));
    rows.push(`img/${i}.png,"a ${c} square, number ${i}"`);
  }
  writeFileSync(join(dir, 'img', 'corrupt.png'), 'not a png');
  rows.push('img/corrupt.png,a broken file', 'img/missing.png,a missing file', 'img/0.png,');
  writeFileSync(join(dir, 'data.csv'), rows.join('\n') + '\n');
  const cfgPath = join(work, 'tiny-user.json');
  writeFileSync(cfgPath, JSON.stringify({
    clip: { embedDim: 16, vision: { patchSize: 8, width: 16, layers: 1, heads: 2 }, text: { contextLength: 16, width: 16, layers: 1, heads: 2 } },
    train: { batchSize: 8, logEvery: 1, warmupSteps: 1 }, eval: { reportSamples: 3 },
  }));
  const out = join(work, 'user-run');
  const r = vlmkit(['train', 'clip', '--config', cfgPath, '--data', join(dir, 'data.csv'), '--csv-caption-key', 'caption', '--steps', '6', '--out', out, '--threads', '1']);
  t.is(r.code, 0, r.err.slice(-3000));
  t.regex(r.err, /note: held out 4 of 43 manifest rows for evaluation/);
  // 39 training rows in 6 steps of 8 (48 samples): every bad training row was met and counted
  const skipped = /skipped (\d+) training sample\(s\): (.*)/.exec(r.err);
  t.truthy(skipped, r.err);
  t.regex(skipped![2]!, /corrupt image|missing image|empty caption/);
  t.regex(r.out, /held-out retrieval \(\d images, \d captions\)/);
  t.false(/zero-shot/.test(r.out), 'no zero-shot classes outside the emoji data');
  const saved = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).config;
  t.is(saved.data.source, join(dir, 'data.csv'), 'the data path is stored absolute');
  t.is(saved.data.csvCaptionKey, 'caption');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  t.true((html.match(/<img src="data:image\/png;base64,/g) ?? []).length >= 1);
  // a wrong column is a one-line error naming the columns found
  const bad = vlmkit(['train', 'clip', '--config', cfgPath, '--data', join(dir, 'data.csv'), '--steps', '1', '--out', join(work, 'user-bad')]);
  t.is(bad.code, 1);
  t.is(bad.err.trim().split('\n').pop(), `vlmkit train: manifestDataset: expected columns 'filepath' and 'title' (options.imageKey, options.captionKey) in the header of '${join(dir, 'data.csv')}' but received [filepath, caption]`);
});
