// The `vlmkit` command line:
//   vlmkit train clip|align [--config NAME|FILE] [--data emoji|FILE|SHARDS] [--steps N] [--batch-size N] [--out DIR] [--resume] ...
//   vlmkit eval RUN_DIR [--step N] [--threads N]
//   vlmkit bench [names...] [flags for the benchmarks]
// Every flag is checked and the whole configuration validated before any work starts: an
// unknown flag, a malformed number or a bad config value is a one-line error (exit code 2).
// bin/vlmkit.js runs the compiled form (dist/cli/main.js); `npx tsx ts/cli/main.ts` runs this file.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { namedConfigs, packageRoot, readConfigFile, resolveRunConfig, mergeDeep, type ModelKind, type RunConfig } from './config.js';
import { latestCheckpoint } from '../train/checkpoint.js';

/** A mistake in how the command was called (exit code 2, no stack trace). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface CliIO {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIO: CliIO = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

const MAIN_HELP = `vlmkit: train vision-language models (CLIP, ALIGN) on a native core.

usage:
  vlmkit train clip|align [flags]   train a model (default: the embedded emoji data)
  vlmkit eval RUN_DIR [flags]       evaluate a run's newest checkpoint, rewrite report.html
  vlmkit bench [names] [flags]      run the native benchmarks (from a source checkout)
  vlmkit --version

'vlmkit <command> --help' describes each command.
`;

const TRAIN_HELP = `usage: vlmkit train clip|align [flags]

Trains CLIP or ALIGN. With no flags: the default config of the model (clip-tiny or align-tiny)
on the embedded emoji data (three vendors' drawings; the fourth held out for evaluation).
Writes into the run folder: config.json, metrics.jsonl, checkpoints (step-N.safetensors +
step-N.json), curves.svg, eval.json and report.html.

flags:
  --config NAME|FILE       a named config (${'${names}'}) or a JSON file; flags override it
  --data SOURCE            emoji | a .csv/.tsv/.jsonl manifest | WebDataset shards (e.g. 'shards/{000..009}.tar')
  --eval-data SOURCE       held-out data for user sources (default: hold out data.evalSize manifest rows)
  --held-out VENDOR        emoji: the vendor evaluated on (apple, google, twitter, facebook; default facebook)
  --steps N                optimizer steps
  --batch-size N           samples per step
  --accum-freq K           split each step into K micro-batches (contrastive gradient accumulation)
  --lr X                   peak learning rate (warmup, then cosine decay)
  --out DIR                run folder (default runs/<config>-<date>)
  --resume                 continue the run in --out from its newest checkpoint
  --threads N              CPU threads (default: every core)
  --precision P            float32 matmul precision: highest (default) or medium (bf16 GEMMs, float32 accumulation)
  --seed N                 seeds initialisation, data order and augmentation
  --caption-noise P        replace a fraction P of training captions by random ones (ALIGN's noise study)
  --max-caption-frequency K   drop training samples whose caption is shared by more than K images
  --min-caption-tokens N / --max-caption-tokens N   caption length bounds (tokens, without specials)
  --min-image-side N / --max-aspect-ratio R         image filters (ALIGN: 200, 3)
  --csv-img-key KEY        manifest column of the image path (default filepath)
  --csv-caption-key KEY    manifest column of the caption (default title)
  --csv-separator SEP      manifest field separator (default , for .csv, tab for .tsv)
  --log-every N / --eval-every N / --checkpoint-every N
  --print-config           print the resolved configuration as JSON and exit
  -h, --help               this help
`;

const EVAL_HELP = `usage: vlmkit eval RUN_DIR [flags]

Evaluates the newest checkpoint of a run folder on its held-out data: image->text and
text->image recall@1/5/10 (and zero-shot classification into emoji subcategories), then
rewrites eval.json and report.html in the folder.

flags:
  --step N        evaluate this checkpoint instead of the newest
  --threads N     CPU threads (default: the run's)
  -h, --help      this help
`;

const BENCH_HELP = `usage: vlmkit bench [names] [flags]

Runs the native benchmarks (bench/*.ts, through bench/run.ts) and regenerates the tables of
BENCHMARKS.md; names pick some (e.g. 'vlmkit bench matmul clip_train'), flags go to each
benchmark. Needs a source checkout with its dev dependencies (tsx): the benchmarks are not
part of the installed package.
`;

type Opts = NonNullable<ParseArgsConfig['options']>;

const TRAIN_OPTS: Opts = {
  config: { type: 'string' }, data: { type: 'string' }, 'eval-data': { type: 'string' }, 'held-out': { type: 'string' },
  steps: { type: 'string' }, 'batch-size': { type: 'string' }, 'accum-freq': { type: 'string' }, lr: { type: 'string' },
  out: { type: 'string' }, resume: { type: 'boolean' }, threads: { type: 'string' }, precision: { type: 'string' }, seed: { type: 'string' },
  'caption-noise': { type: 'string' }, 'max-caption-frequency': { type: 'string' }, 'min-caption-tokens': { type: 'string' },
  'max-caption-tokens': { type: 'string' }, 'min-image-side': { type: 'string' }, 'max-aspect-ratio': { type: 'string' },
  'csv-img-key': { type: 'string' }, 'csv-caption-key': { type: 'string' }, 'csv-separator': { type: 'string' },
  'log-every': { type: 'string' }, 'eval-every': { type: 'string' }, 'checkpoint-every': { type: 'string' },
  'print-config': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
};

const EVAL_OPTS: Opts = { step: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' } };

/** parseArgs with errors that name the command and point at --help. */
function parse(cmd: string, args: string[], options: Opts): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: r.values as Record<string, string | boolean | undefined>, positionals: r.positionals };
  } catch (e) {
    const m = (e as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(m);
    if (unknown) throw new UsageError(`vlmkit ${cmd}: unknown flag '${unknown[1]}' (see 'vlmkit ${cmd} --help')`);
    const missing = /Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(m);
    if (missing) throw new UsageError(`vlmkit ${cmd}: expected a value after ${missing[1]} but received none`);
    const boolArg = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(m);
    if (boolArg) throw new UsageError(`vlmkit ${cmd}: expected no value for ${boolArg[1]} (it is a switch) but received one`);
    throw new UsageError(`vlmkit ${cmd}: ${m}`);
  }
}

function intFlag(cmd: string, name: string, v: string, min: number): number {
  const x = Number(v);
  if (!/^[+-]?\d+$/.test(v.trim()) || !Number.isSafeInteger(x) || x < min)
    throw new UsageError(`vlmkit ${cmd}: expected an integer >= ${min} for --${name} but received '${v}'`);
  return x;
}

function numFlag(cmd: string, name: string, v: string, lo: number, hi: number): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || x < lo || x > hi)
    throw new UsageError(`vlmkit ${cmd}: expected a number in [${lo}, ${hi}] for --${name} but received '${v}'`);
  return x;
}

function stamp(): string {
  const d = new Date(), p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The train command's resolved config and options from its arguments (validated; no work done). */
export function parseTrainArgs(args: string[]): { model: ModelKind; config: RunConfig; out: string; resume: boolean; printConfig: boolean; help: boolean } {
  const cmd = 'train';
  const { values: v, positionals } = parse(cmd, args, TRAIN_OPTS);
  if (v.help) return { model: 'clip', config: resolveRunConfig({}), out: '', resume: false, printConfig: false, help: true };
  if (positionals.length === 0) throw new UsageError(`vlmkit train: expected a model ('clip' or 'align') but received none (see 'vlmkit train --help')`);
  if (positionals.length > 1) throw new UsageError(`vlmkit train: expected one model but received ${positionals.map((p) => `'${p}'`).join(', ')}`);
  const model = positionals[0] as ModelKind;
  if (model !== 'clip' && model !== 'align') throw new UsageError(`vlmkit train: expected 'clip' or 'align' for the model but received '${positionals[0]}'`);
  const s = (k: string) => v[k] as string | undefined;
  const resume = Boolean(v.resume);
  if (resume && !s('out')) throw new UsageError(`vlmkit train: expected --out DIR (the run folder to continue) with --resume but received none`);
  const given = s('out');

  // Base: --config; else, when resuming, the run's own config; else the model's defaults.
  let base: Record<string, unknown> = {};
  if (s('config')) {
    try {
      base = readConfigFile(s('config')!).config;
    } catch (e) {
      if (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError) throw new UsageError(e.message);
      throw e;
    }
  }
  else if (resume && existsSync(join(given!, 'config.json'))) {
    try {
      const saved = JSON.parse(readFileSync(join(given!, 'config.json'), 'utf8')) as { config?: Record<string, unknown> };
      if (saved?.config && typeof saved.config === 'object') base = saved.config;
    } catch { /* the trainer reports a broken run folder */ }
  }
  const o: Record<string, Record<string, unknown>> = { data: {}, train: {}, filters: {} };
  const flag = (name: string, section: 'data' | 'train' | 'filters', key: string, conv: (x: string) => unknown) => {
    const x = s(name);
    if (x !== undefined) o[section]![key] = conv(x);
  };
  const int = (name: string, min: number) => (x: string) => intFlag(cmd, name, x, min);
  flag('data', 'data', 'source', (x) => x);
  flag('eval-data', 'data', 'evalSource', (x) => x);
  flag('held-out', 'data', 'heldOut', (x) => x);
  flag('caption-noise', 'data', 'captionNoise', (x) => numFlag(cmd, 'caption-noise', x, 0, 1));
  flag('csv-img-key', 'data', 'csvImgKey', (x) => x);
  flag('csv-caption-key', 'data', 'csvCaptionKey', (x) => x);
  flag('csv-separator', 'data', 'csvSeparator', (x) => (x === '\\t' || x === 'tab' ? '\t' : x));
  flag('max-caption-frequency', 'filters', 'maxCaptionFrequency', int('max-caption-frequency', 1));
  flag('min-caption-tokens', 'filters', 'minCaptionTokens', int('min-caption-tokens', 0));
  flag('max-caption-tokens', 'filters', 'maxCaptionTokens', int('max-caption-tokens', 1));
  flag('min-image-side', 'filters', 'minImageSide', int('min-image-side', 1));
  flag('max-aspect-ratio', 'filters', 'maxAspectRatio', (x) => numFlag(cmd, 'max-aspect-ratio', x, 1, 1e6));
  flag('steps', 'train', 'steps', int('steps', 1));
  flag('batch-size', 'train', 'batchSize', int('batch-size', 2));
  flag('accum-freq', 'train', 'accumFreq', int('accum-freq', 1));
  flag('lr', 'train', 'lr', (x) => numFlag(cmd, 'lr', x, 0, 10));
  flag('threads', 'train', 'threads', int('threads', 1));
  flag('precision', 'train', 'precision', (x) => x);  // checked with the config
  flag('seed', 'train', 'seed', int('seed', 0));
  flag('log-every', 'train', 'logEvery', int('log-every', 1));
  flag('eval-every', 'train', 'evalEvery', int('eval-every', 0));
  flag('checkpoint-every', 'train', 'checkpointEvery', int('checkpoint-every', 0));
  const over: Record<string, unknown> = {};
  if (Object.keys(o.data!).length || Object.keys(o.filters!).length) over.data = { ...o.data, ...(Object.keys(o.filters!).length ? { filters: o.filters } : {}) };
  if (Object.keys(o.train!).length) over.train = o.train;
  const user = mergeDeep(base, over) as Record<string, unknown>;
  let config: RunConfig;
  try {
    config = resolveRunConfig(user, model);
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError) throw new UsageError(e.message);
    throw e;
  }
  if (base.name === undefined && s('config')) config.name = s('config')!.replace(/^.*[\\/]/, '').replace(/\.json$/, '');
  const out = given ?? join('runs', `${config.name}-${stamp()}`);
  if (config.data.source !== 'emoji' && !/\{|\.tar$/i.test(config.data.source) && !existsSync(config.data.source))
    throw new UsageError(`vlmkit train: expected 'emoji', a manifest file or WebDataset shards for --data but '${config.data.source}' does not exist`);
  if (config.data.evalSource !== null && !/\{|\.tar$/i.test(config.data.evalSource) && !existsSync(config.data.evalSource))
    throw new UsageError(`vlmkit train: expected a manifest file or WebDataset shards for --eval-data but '${config.data.evalSource}' does not exist`);
  // Paths are kept absolute in the run's config.json, so `vlmkit eval` works from anywhere.
  if (config.data.source !== 'emoji') config.data.source = resolve(config.data.source);
  if (config.data.evalSource !== null) config.data.evalSource = resolve(config.data.evalSource);
  if (!resume && existsSync(out) && latestCheckpoint(out))
    throw new UsageError(`vlmkit train: expected a new run folder but '${out}' holds checkpoints (step ${latestCheckpoint(out)!.step}); add --resume to continue it or choose another --out`);
  return { model, config, out, resume, printConfig: Boolean(v['print-config']), help: false };
}

async function trainCommand(args: string[], io: CliIO): Promise<number> {
  const a = parseTrainArgs(args);
  if (a.help) {
    io.out(TRAIN_HELP.replace('${names}', namedConfigs().join(', ') || 'none found'));
    return 0;
  }
  if (a.printConfig) {
    io.out(JSON.stringify(a.config, null, 2) + '\n');
    return 0;
  }
  const { trainRun, resultTable } = await import('./run.js');
  const t0 = Date.now();
  const r = await trainRun(a.config, { outDir: a.out, resume: a.resume, handleSignals: true, log: (s) => io.err(s + '\n') });
  const minutes = (Date.now() - t0) / 60000;
  if (r.evaluation?.retrieval) io.out(resultTable(r.evaluation) + '\n');
  io.out(`${r.result.stopped} at step ${r.result.step} of ${a.config.train.steps} in ${minutes.toFixed(1)} min; run folder: ${resolve(a.out)}\n`);
  if (r.report) io.out(`report: ${resolve(r.report)}\n`);
  if (r.result.stopped === 'interrupted') io.out(`continue with: vlmkit train ${a.model} --out ${a.out} --resume\n`);
  return r.result.stopped === 'interrupted' ? 130 : 0;
}

async function evalCommand(args: string[], io: CliIO): Promise<number> {
  const cmd = 'eval';
  const { values: v, positionals } = parse(cmd, args, EVAL_OPTS);
  if (v.help) {
    io.out(EVAL_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`vlmkit eval: expected one run folder but received ${positionals.length === 0 ? 'none' : positionals.map((p) => `'${p}'`).join(', ')} (see 'vlmkit eval --help')`);
  const dir = positionals[0]!;
  if (!existsSync(join(dir, 'config.json'))) throw new UsageError(`vlmkit eval: expected a run folder (with config.json, written by vlmkit train) but '${dir}' is not one`);
  if (!latestCheckpoint(dir)) throw new UsageError(`vlmkit eval: expected a checkpoint in '${dir}' but found none`);
  const step = v.step === undefined ? undefined : intFlag(cmd, 'step', v.step as string, 0);
  const threads = v.threads === undefined ? null : intFlag(cmd, 'threads', v.threads as string, 1);
  const { evalRun, resultTable } = await import('./run.js');
  let r;
  try {
    r = await evalRun(dir, { ...(step !== undefined ? { step } : {}), threads, log: (s) => io.err(s + '\n') });
  } catch (e) {
    if (e instanceof RangeError && /resolveCheckpoint|vlmkit config/.test(e.message)) throw new UsageError(e.message);
    throw e;
  }
  io.out(resultTable(r.evaluation) + '\n');
  io.out(`step ${r.evaluation.step}; report: ${resolve(r.report)}\n`);
  return 0;
}

function benchCommand(args: string[], io: CliIO): number {
  if (args.includes('--help') || args.includes('-h')) {
    io.out(BENCH_HELP);
    return 0;
  }
  const root = packageRoot();
  const runner = join(root, 'bench', 'run.ts');
  if (!existsSync(runner)) throw new UsageError(`vlmkit bench: expected the benchmarks in '${join(root, 'bench')}' but they are not there (they ship with the source checkout, not the installed package)`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', runner, ...args], { stdio: 'inherit', cwd: root });
  if (r.error) throw new Error(`vlmkit bench: could not start node: ${r.error.message}`);
  return r.status ?? 1;
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Runs the CLI on `argv` (without node and the script); returns the exit code. */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        io.out(MAIN_HELP);
        return cmd === undefined ? 2 : 0;
      case '--version':
      case '-v':
        io.out(`vlmkit ${version()}\n`);
        return 0;
      case 'train':
        return await trainCommand(rest, io);
      case 'eval':
        return await evalCommand(rest, io);
      case 'bench':
        return benchCommand(rest, io);
      default:
        throw new UsageError(`vlmkit: unknown command '${cmd}' (expected train, eval or bench; see 'vlmkit --help')`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`${e.message}\n`);
      return 2;
    }
    // Input problems found while working (a manifest without the named column...) read best as one line.
    const plain = (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError) && !process.env.VLMKIT_DEBUG;
    io.err(`vlmkit ${cmd}: ${e instanceof Error ? (plain ? e.message : (e.stack ?? e.message)) : String(e)}\n`);
    return 1;
  }
}

// Run when executed directly (npx tsx ts/cli/main.ts ...); bin/vlmkit.js imports main() instead.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
