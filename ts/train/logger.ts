// Training progress for people: on a terminal, one status line redrawn in place
//   step 120/1000 [####......] 12% | loss 2.3141 | acc 0.312 | lr 4.20e-4 | 123 samples/s | ETA 1m23s
// with messages and evaluation results printed above it; elsewhere (CI, files, pipes) plain
// lines, one per logged step. Machine-readable metrics go to metrics.jsonl (trainer.ts).
import { describe } from '../graph/creation.js';

/** One logged training step (also a line of metrics.jsonl). */
export interface StepRecord {
  type: 'train';
  step: number;
  loss: number;
  lr: number;
  /** Samples per second over the logging window (absent when the batch size is unknown). */
  samplesPerSec?: number;
  stepsPerSec?: number;
  gradNorm?: number;
  /** Seconds since the run (or resumed run) started. */
  elapsed?: number;
  [metric: string]: number | string | undefined;
}

/** An evaluation's results (also a line of metrics.jsonl). */
export interface EvalRecord {
  type: 'eval';
  step: number;
  [metric: string]: number | string | undefined;
}

export interface RunInfo {
  startStep: number;
  totalSteps: number;
  resumed: boolean;
  outDir?: string | null;
}

export interface Logger {
  start(info: RunInfo): void;
  /** After every step: cheap (a terminal logger redraws at most a few times a second). */
  progress(step: number, totalSteps: number, etaSeconds: number | null): void;
  /** A logged step (every logEvery steps). */
  record(r: StepRecord): void;
  eval(r: EvalRecord): void;
  info(message: string): void;
  end(summary: { step: number; stopped: string; seconds: number }): void;
}

export interface ConsoleLoggerOptions {
  /** Where to write (default process.stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Redraw a progress bar in place (default: whether stream is a TTY). */
  tty?: boolean;
  /** Metrics shown besides loss/lr/throughput (default: those named acc*, recall*, gradNorm). */
  show?: (name: string) => boolean;
  /** Shortest time between two redraws on a terminal, ms (default 100). */
  redrawMs?: number;
}

const KNOWN = new Set(['type', 'step', 'loss', 'lr', 'samplesPerSec', 'stepsPerSec', 'gradNorm', 'elapsed']);

/** 4 significant digits, exponent form for very small or large values. */
export function formatNumber(v: number | undefined): string {
  if (v === undefined || v === null) return '-';
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

/** 1h02m, 3m07s, 42s. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

const defaultShow = (name: string) => /^(acc|recall|top)/i.test(name) || name === 'gradNorm';

function metricsText(r: Record<string, unknown>, show: (n: string) => boolean): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(r)) if (!KNOWN.has(k) && typeof v === 'number' && show(k)) out.push(`${k} ${formatNumber(v)}`);
  return out;
}

/** A logger writing to a stream: a progress bar on a TTY, plain lines otherwise. */
export function createLogger(options: ConsoleLoggerOptions = {}): Logger {
  if (options === null || typeof options !== 'object') throw new TypeError(`createLogger: expected an options object but received ${describe(options)}`);
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? Boolean(stream.isTTY);
  const show = options.show ?? defaultShow;
  const redrawMs = options.redrawMs ?? 100;
  let last: StepRecord | null = null;
  let step = 0, total = 0, eta: number | null = null;
  let lastDraw = 0, drawn = false;

  const bar = (): string => {
    const frac = total > 0 ? Math.min(1, step / total) : 0;
    const width = 20;
    const fill = Math.round(frac * width);
    const parts = [`step ${step}/${total} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${Math.floor(frac * 100)}%`];
    if (last) {
      parts.push(`loss ${formatNumber(last.loss)}`, ...metricsText(last, show), `lr ${last.lr.toExponential(2)}`);
      if (last.samplesPerSec !== undefined) parts.push(`${formatNumber(last.samplesPerSec)} samples/s`);
      else if (last.stepsPerSec !== undefined) parts.push(`${formatNumber(last.stepsPerSec)} steps/s`);
    }
    parts.push(`ETA ${formatDuration(eta)}`);
    let s = parts.join(' | ');
    const cols = stream.columns ?? 0;
    if (cols > 10 && s.length > cols - 1) s = s.slice(0, cols - 2) + '…';
    return s;
  };
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < redrawMs) return;
    lastDraw = now;
    stream.write(`\r\x1b[2K${bar()}`);
    drawn = true;
  };
  // A message above the bar: clear the bar's line, print, redraw.
  const line = (s: string) => {
    if (tty) {
      stream.write(`\r\x1b[2K${s}\n`);
      if (drawn) draw(true);
    } else stream.write(`${s}\n`);
  };

  return {
    start(info) {
      step = info.startStep;
      total = info.totalSteps;
      line(`${info.resumed ? 'resuming at' : 'training from'} step ${info.startStep} of ${info.totalSteps}${info.outDir ? ` -> ${info.outDir}` : ''}`);
    },
    progress(s, t, e) {
      step = s;
      total = t;
      eta = e;
      if (tty) draw();
    },
    record(r) {
      last = r;
      step = r.step;
      if (tty) return draw(true);
      const parts = [`step ${r.step}/${total}`, `loss ${formatNumber(r.loss)}`, ...metricsText(r, show), `lr ${r.lr.toExponential(2)}`];
      if (r.samplesPerSec !== undefined) parts.push(`${formatNumber(r.samplesPerSec)} samples/s`);
      else if (r.stepsPerSec !== undefined) parts.push(`${formatNumber(r.stepsPerSec)} steps/s`);
      if (eta !== null) parts.push(`ETA ${formatDuration(eta)}`);
      line(parts.join(' | '));
    },
    eval(r) {
      const parts = Object.entries(r).filter(([k, v]) => k !== 'type' && k !== 'step' && typeof v === 'number').map(([k, v]) => `${k} ${formatNumber(v as number)}`);
      line(`eval @ step ${r.step}: ${parts.join(' | ')}`);
    },
    info(message) {
      line(message);
    },
    end(summary) {
      if (tty && drawn) {
        draw(true);
        stream.write('\n');
        drawn = false;
      }
      stream.write(`${summary.stopped} at step ${summary.step} in ${formatDuration(summary.seconds)}\n`);
    },
  };
}

/** A logger that prints nothing. */
export const silentLogger: Logger = {
  start() {}, progress() {}, record() {}, eval() {}, info() {}, end() {},
};
