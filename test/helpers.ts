// Shared test setup: start the backend named by TEVATRON_BACKEND (the runner sets it), small random
// batches, and comparisons of parameter maps.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../lib/backend.ts';
import { collateGroups, type SpecialTokens } from '../lib/data/collator.ts';
import type { Group } from '../lib/data/sample.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import type { TrainBatch } from '../lib/step.ts';

export const backend = await initBackend();

export const SPECIAL: SpecialTokens = { cls: 1, sep: 2, pad: 0 };

/** B random groups of n passages over ids [3, vocab) with random lengths, collated. */
export function randomBatch(seed: number, B: number, n: number, vocab: number, qLen = 8, pLen = 12): TrainBatch {
  const rng = new PyRandom(seed);
  const seq = (max: number) => Array.from({ length: 1 + rng.randbelow(max) }, () => 3 + rng.randbelow(vocab - 3));
  const groups: Group[] = Array.from({ length: B }, () => ({ query: seq(qLen), passages: Array.from({ length: n }, () => seq(pLen)) }));
  return collateGroups(groups, { qMaxLen: qLen, pMaxLen: pLen, special: SPECIAL });
}

/** Rows of the batches one after another (what one rank sees when W ranks' batches are concatenated). */
export function concatBatches(batches: TrainBatch[]): TrainBatch {
  const cat = (side: 'queries' | 'passages') => {
    const parts = batches.map((b) => b[side]);
    const join = (key: 'inputIds' | 'attentionMask') => {
      const out = new Int32Array(parts.reduce((n, p) => n + p[key].length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p[key], at);
        at += p[key].length;
      }
      return out;
    };
    return { inputIds: join('inputIds'), attentionMask: join('attentionMask'), rows: parts.reduce((n, p) => n + p.rows, 0), length: parts[0].length };
  };
  return { queries: cat('queries'), passages: cat('passages') };
}

/**
 * max over parameters of max|a − b| / max|b|, where max|b| is floored at 1% of the largest gradient
 * of all parameters: a gradient that is exactly zero in theory (the passage bias of a contrastive loss)
 * is float noise, and its relative error would be noise over noise.
 */
export function maxRelativeError(a: ParamMap, b: ParamMap): number {
  const absMax = (v: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]));
    return m;
  };
  const names = Object.keys(b);
  const floor = 0.01 * Math.max(...names.map((k) => absMax(b[k].dataSync())));
  let worst = 0;
  for (const k of names) {
    if (!a[k]) throw new Error(`missing gradient ${k}`);
    const x = a[k].dataSync();
    const y = b[k].dataSync();
    const diff = absMax(Array.from(y, (v, i) => v - x[i]));
    worst = Math.max(worst, diff / Math.max(absMax(y), floor, 1e-30));
  }
  return worst;
}

export function disposeAll(...maps: ParamMap[]): void {
  for (const m of maps) tf.dispose(Object.values(m));
}

export function close(actual: number, expected: number, tol: number, what: string): void {
  if (!(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)))) {
    throw new Error(`${what}: ${actual} differs from ${expected} by more than ${tol} (relative)`);
  }
}

/** A TCP port the OS reports free right now (for a rendezvous in a test). */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as import('node:net').AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * `test(name, fn)`, or, when `skipReason` is a string (data, Python or a tool absent here), a test that
 * uvu counts as skipped, with the reason printed: a test that cannot run is never counted as passed.
 */
export function testUnless(skipReason: string | null, name: string, fn: () => unknown): void {
  if (skipReason === null) return test(name, fn as () => void);
  console.log(`  (skipped: ${name}: ${skipReason})`);
  test.skip(name, fn as () => void);
}

/**
 * A Python that imports every one of `modules` (TORCH_PYTHON, else ./.venv/bin/python), for tests that
 * compare with Python tools; otherwise the reason, for testUnless.
 */
export function pythonWith(modules: string[]): { python: string; reason: null } | { python: null; reason: string } {
  const candidates = [process.env.TORCH_PYTHON, '.venv/bin/python'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8', timeout: 120_000 });
    if (r.status === 0) return { python, reason: null };
  }
  return { python: null, reason: `no Python with ${modules.join(' and ')} (set TORCH_PYTHON, or make ./.venv)` };
}

/**
 * Runs scripts/<script> as a user runs it (a child process): exit code, stdout, stderr. Asynchronous, so a
 * server the test runs in this process (a stand-in hub) keeps answering.
 */
export function runScriptFile(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `scripts/${script}`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/** Runs `fn` with these environment variables set (undefined: unset), then restores them. */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (k: string, v: string | undefined) => (v === undefined ? delete process.env[k] : (process.env[k] = v));
  for (const [k, v] of Object.entries(vars)) set(k, v);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) set(k, v);
  }
}

/** Awaits a promise that must reject with a message matching `pattern`; returns the message. */
export async function rejects(promise: Promise<unknown>, pattern: RegExp, what: string): Promise<string> {
  try {
    await promise;
  } catch (e) {
    const message = (e as Error).message;
    assert.match(message, pattern, `${what}: message was: ${message}`);
    return message;
  }
  throw new Error(`${what}: expected an error matching ${pattern}`);
}

/** Makes this process's fetch refuse any host but 127.0.0.1 (tests talk to stand-in servers only). */
export function loopbackOnlyFetch(): void {
  const realFetch = globalThis.fetch;
  globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input.toString());
    if (url.hostname !== '127.0.0.1') return Promise.reject(new Error(`test guard: refused a request to ${url.host}`));
    return realFetch(input, init);
  }) as typeof fetch;
}

/**
 * The pass of `npm test` that runs the tests that use no backend (processes, sockets, notebooks that start
 * their own): the first backend of TEVATRON_TEST_BACKENDS, else wasm, which every default run has. Null in
 * that pass, else its name.
 */
export function otherPass(): string | null {
  const current = process.env.TEVATRON_BACKEND;
  const first = process.env.TEVATRON_TEST_BACKENDS?.split(',').filter(Boolean)[0] ?? 'wasm';
  return current && current !== first ? first : null;
}

/** testUnless for a test that uses no backend: it runs in one pass of `npm test` and is not registered in the others. */
export function testOnce(skipReason: string | null, name: string, fn: () => unknown): void {
  if (otherPass() === null) testUnless(skipReason, name, fn);
}

/** runScriptFile, synchronously: scripts/NAME.ts as a user runs it; its exit code (null when killed), signal, stdout and stderr. */
export function runScriptSync(name: string, args: string[], env: NodeJS.ProcessEnv = {}): { code: number | null; signal: string | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.resolve('scripts', `${name}.ts`), ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}

/** A child process whose output (stdout and stderr together) a test watches. */
export interface Proc {
  child: ChildProcess;
  text(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** Resolves with the time the output first matched `re`. */
  waitFor(re: RegExp, ms?: number): Promise<number>;
}

/** `node --import tsx ARGS`, or `command ARGS`, with `env` added to this process's environment. */
export function start(args: string[], env: Record<string, string> = {}, command?: string): Proc {
  const child = command ? spawn(command, args, { env: { ...process.env, ...env } }) : spawn(process.execPath, ['--import', 'tsx', ...args], { env: { ...process.env, ...env } });
  let text = '';
  const watchers: (() => void)[] = [];
  const add = (d: Buffer) => {
    text += d;
    watchers.forEach((w) => w());
  };
  child.stdout!.on('data', add);
  child.stderr!.on('data', add);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, at: Date.now() })));
  const waitFor = (re: RegExp, ms = 60_000) =>
    new Promise<number>((resolve, reject) => {
      const check = () => re.test(text) && (clearTimeout(timer), resolve(Date.now()));
      const timer = setTimeout(() => reject(new Error(`no ${re} within ${ms} ms; output so far:\n${text}`)), ms);
      watchers.push(check);
      check();
      exited.then(() => setTimeout(() => reject(new Error(`exited before ${re}; output:\n${text}`)), 100));
    });
  return { child, text: () => text, exited, waitFor };
}

export const kill = (p: Proc): void => {
  try {
    p.child.kill('SIGKILL');
  } catch {}
};

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The pids that test/fixtures/dist_worker.ts printed ("pid N rank R"). */
export const pids = (text: string): number[] => [...text.matchAll(/^pid (\d+) rank (\d+)$/gm)].map((m) => Number(m[1]));
