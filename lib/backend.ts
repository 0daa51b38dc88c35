// Picks and starts the TensorFlow.js backend: tensorflow (tfjs-node-gpu, else tfjs-node) when its native
// binding loads, else wasm, else the plain JS cpu backend. Everything else in lib/ uses tfjs-core ops only.
// The binding is built by `npm run setup:tensorflow` (scripts/setup-tensorflow.ts) against TensorFlow's
// pip wheel; the packages' own install scripts are not run.
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendChoice = BackendName | 'auto';

/** What is running: for the training log and trainer_state.json. */
export interface BackendInfo {
  name: BackendName;
  /** tfjs-core's version (all backends share one tfjs-core). */
  tfjsVersion: string;
  /** tensorflow only: the npm package whose binding runs, its TensorFlow (TF_Version()), and the device. */
  package?: string;
  tensorflowVersion?: string;
  device?: 'gpu' | 'cpu';
}

const BACKENDS: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];
const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;
const SETUP_HINT = 'run `npm run setup:tensorflow` (README, section Backends)';
const require = createRequire(import.meta.url);

/** Why each tfjs-node package did not load, or which one did: found once per process. */
let tensorflowProbe: { loaded: string | null; reasons: string[]; fixes: string[] } | null = null;

/**
 * The binding file a tfjs-node package's node-pre-gyp would load (lib/napi-v8/tfjs_binding.node for
 * 4.22 on Node 20), or a reason it cannot be found. Only `{napi_build_version}` is substituted: that is
 * the only variable tfjs-node's module_path uses.
 */
export function tfjsNodeBindingPath(packageJsonPath: string): { path: string } | { reason: string } {
  const meta = JSON.parse(fs.readFileSync(packageJsonPath, 'utf8'));
  const binary = meta.binary ?? {};
  const nodeNapi = Number(process.versions.napi);
  const usable = ((binary.napi_versions as number[] | undefined) ?? [nodeNapi]).filter((v) => v <= nodeNapi);
  if (usable.length === 0) return { reason: `needs N-API ${binary.napi_versions}, this Node.js has ${nodeNapi}` };
  const modulePath = String(binary.module_path ?? './lib/napi-v{napi_build_version}').replace('{napi_build_version}', String(Math.max(...usable)));
  return { path: path.join(path.dirname(packageJsonPath), modulePath, `${binary.module_name ?? 'tfjs_binding'}.node`) };
}

/** Whether a tfjs-node package has a built binding here, found without loading it (loading starts TensorFlow). */
export function tensorflowBuilt(): boolean {
  return TENSORFLOW_PACKAGES.some((pkg) => {
    try {
      const found = tfjsNodeBindingPath(require.resolve(`${pkg}/package.json`));
      return 'path' in found && fs.existsSync(found.path);
    } catch {
      return false;
    }
  });
}

/**
 * Checks that a tfjs-node package's native binding exists and loads (it links TensorFlow's shared
 * libraries), without importing the package: its index registers ~200 kernels before it looks for the
 * binding, so a failed import would leave them registered and a second package would warn about each.
 */
export function probeTfjsNode(packageJsonPath: string): { ok: true; binding: string } | { ok: false; reason: string; fix: string } {
  const found = tfjsNodeBindingPath(packageJsonPath);
  if ('reason' in found) return { ok: false, reason: found.reason, fix: 'use Node.js 20 or newer' };
  if (!fs.existsSync(found.path)) return { ok: false, reason: 'its binding is not built', fix: SETUP_HINT };
  try {
    require(found.path);
  } catch (err) {
    const first = String((err as Error).message).split('\n')[0];
    if (/cannot open shared object/.test(first)) {
      return { ok: false, reason: `its binding ${found.path} does not load (${first}): a library it was linked against is gone`, fix: SETUP_HINT };
    }
    return { ok: false, reason: `its binding ${found.path} does not load (${first})`, fix: 'rebuild it with `npm run setup:tensorflow -- --force`' };
  }
  return { ok: true, binding: found.path };
}

/** `pkg: why; pkg: why; fix` with each distinct fix once. */
function explain(probe: { reasons: string[]; fixes: string[] }): string {
  return [...probe.reasons, ...new Set(probe.fixes)].join('; ');
}

const SEVERITY: Record<string, number> = { I: 0, W: 1, E: 2, F: 3 };

/**
 * Keeps the entries of TensorFlow's C++ log at or above `minLevel` (TF_CPP_MIN_LOG_LEVEL: 0 info,
 * 1 warning, 2 error, 3 fatal) and drops absl's "before absl::InitializeLog()" notice. An entry is a
 * header line in absl's (`I0000 00:00:... file.cc:12] ...`) or TensorFlow's (`2026-01-01 ...: W ...`)
 * format plus the lines that follow it; lines before any header are kept.
 */
export function filterTensorflowLog(text: string, minLevel: number): string {
  let keep = true;
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('WARNING: All log messages before absl::InitializeLog() is called')) continue;
    const severity = line.match(/^([IWEF])\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] /)?.[1] ?? line.match(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) /)?.[1];
    if (severity) keep = SEVERITY[severity] >= minLevel;
    if (keep) out.push(line);
  }
  return out.join('\n');
}

/**
 * Runs `load` with file descriptor 2 sent to a file, then writes back what passes TF_CPP_MIN_LOG_LEVEL:
 * TensorFlow's libraries log through absl while they load, before that variable is read. Needs the
 * small tevatron_stdio addon that setup:tensorflow builds next to the binding; without it, loads as is.
 */
function withTensorflowLogsFiltered<T>(addonDir: string | null, load: () => T): T {
  const level = Number(process.env.TF_CPP_MIN_LOG_LEVEL ?? 0);
  const addon = addonDir && path.join(addonDir, 'tevatron_stdio.node');
  if (!(level > 0) || !addon || !fs.existsSync(addon)) return load();
  let stdio: { redirect(file: string): number; restore(saved: number): number };
  try {
    stdio = require(addon);
  } catch {
    return load();
  }
  const file = path.join(os.tmpdir(), `tevatron-tf-load-${process.pid}-${Date.now()}.log`);
  const saved = stdio.redirect(file);
  if (saved < 0) return load();
  try {
    return load();
  } finally {
    stdio.restore(saved);
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
      fs.rmSync(file, { force: true });
    } catch {
      // nothing was logged, or the file is gone: nothing to replay
    }
    const kept = filterTensorflowLog(text, level);
    if (kept.trim()) process.stderr.write(kept.endsWith('\n') ? kept : `${kept}\n`);
  }
}

/** Registers the tensorflow backend from the first tfjs-node package whose binding loads. */
function loadTensorflow(): { loaded: string | null; reasons: string[]; fixes: string[] } {
  if (tensorflowProbe) return tensorflowProbe;
  // TensorFlow reads its log level from the environment: keep the user's, otherwise errors only.
  if (process.env.TF_CPP_MIN_LOG_LEVEL === undefined) process.env.TF_CPP_MIN_LOG_LEVEL = '2';
  const reasons: string[] = [];
  const fixes: string[] = [];
  for (const pkg of TENSORFLOW_PACKAGES) {
    let packageJson: string;
    try {
      packageJson = require.resolve(`${pkg}/package.json`);
    } catch {
      reasons.push(`${pkg}: not installed`);
      if (pkg === '@tensorflow/tfjs-node') fixes.push('run `npm install` (tevatron-ts lists it as optional)');
      continue;
    }
    const found = tfjsNodeBindingPath(packageJson);
    const failure = withTensorflowLogsFiltered('path' in found ? path.dirname(found.path) : null, () => {
      const probe = probeTfjsNode(packageJson);
      if (!probe.ok) {
        fixes.push(probe.fix);
        return probe.reason;
      }
      try {
        // Importing tfjs-node also makes tensorflow the current backend: keep the one already running.
        const running = tf.engine().backendName;
        require(pkg);
        if (running && running !== tf.engine().backendName) void tf.setBackend(running);
        return null;
      } catch (err) {
        return String((err as Error).message).split('\n')[0];
      }
    });
    if (failure === null) {
      tensorflowProbe = { loaded: pkg, reasons, fixes };
      return tensorflowProbe;
    }
    reasons.push(`${pkg}: ${failure}`);
  }
  tensorflowProbe = { loaded: null, reasons, fixes };
  return tensorflowProbe;
}

/**
 * Whether the tensorflow backend can start here, and if not, why (one clause per package). Loads the
 * binding (and so TensorFlow) when it is present, without changing the running backend.
 */
export function tensorflowAvailability(): { available: true; package: string } | { available: false; reason: string } {
  if (tf.findBackendFactory('tensorflow')) return { available: true, package: loadedPackage() ?? 'unknown' };
  const probe = loadTensorflow();
  return probe.loaded ? { available: true, package: probe.loaded } : { available: false, reason: explain(probe) };
}

function loadedPackage(): string | null {
  return tensorflowProbe?.loaded ?? null;
}

async function tryBackend(name: BackendName): Promise<boolean> {
  if (name === 'tensorflow') {
    if (!tf.findBackendFactory('tensorflow') && loadTensorflow().loaded === null) return false;
  } else if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
  } // cpu is registered by @tensorflow/tfjs itself
  try {
    return await tf.setBackend(name);
  } catch {
    return false;
  }
}

/** The backend asked for: `name`, or for 'auto' the `TEVATRON_BACKEND` variable when it is set (not yet checked). */
export function requestedBackend(name: BackendChoice = 'auto'): BackendChoice {
  const fromEnv = process.env.TEVATRON_BACKEND as BackendChoice | undefined;
  return name === 'auto' && fromEnv ? fromEnv : name;
}

/**
 * Starts a backend and returns the one chosen. 'auto' prefers tensorflow, then wasm, then cpu; a named
 * backend that cannot start is an error. The `TEVATRON_BACKEND` environment variable stands in for
 * 'auto' so a whole test or notebook run can be pointed at one backend.
 */
export async function initBackend(name: BackendChoice = 'auto'): Promise<BackendName> {
  if (!BACKENDS.includes(name)) {
    throw new Error(`--backend ${name}: unknown backend; use one of ${BACKENDS.join(', ')}`);
  }
  tf.env().set('PROD', true); // silences the "running TensorFlow.js in Node.js" banner
  const wanted = requestedBackend(name);
  if (wanted !== 'auto') {
    if (!BACKENDS.includes(wanted)) {
      throw new Error(`TEVATRON_BACKEND=${wanted}: unknown backend; use one of ${BACKENDS.join(', ')}`);
    }
    if (await tryBackend(wanted)) return wanted;
    const why = wanted === 'tensorflow' && tensorflowProbe && !tensorflowProbe.loaded ? `: ${explain(tensorflowProbe)}` : '';
    const source = name === 'auto' ? `TEVATRON_BACKEND=${wanted}` : `--backend ${wanted}`;
    throw new Error(`${source}: backend ${wanted} could not be started${why}; use --backend auto to fall back to another backend`);
  }
  for (const candidate of ['tensorflow', 'wasm', 'cpu'] as const) {
    if (await tryBackend(candidate)) return candidate;
  }
  throw new Error('no TensorFlow.js backend could be started (tried tensorflow, wasm, cpu)');
}

/** The running backend (call after initBackend), with TensorFlow's version and device on tensorflow. */
export function backendInfo(): BackendInfo {
  const name = tf.getBackend() as BackendName;
  const info: BackendInfo = { name, tfjsVersion: tf.version_core };
  if (name === 'tensorflow') {
    const b = tf.backend() as unknown as { binding?: { TF_Version?: string }; isUsingGpuDevice?: boolean; isGPUPackage?: boolean };
    info.package = loadedPackage() ?? (b.isGPUPackage ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node');
    info.tensorflowVersion = b.binding?.TF_Version;
    info.device = b.isUsingGpuDevice ? 'gpu' : 'cpu';
  }
  return info;
}

/** One line for logs: `tensorflow (TensorFlow 2.21.0 on cpu, @tensorflow/tfjs-node)`, `wasm`, `cpu`. */
export function describeBackend(info: BackendInfo = backendInfo()): string {
  return info.name === 'tensorflow' ? `tensorflow (TensorFlow ${info.tensorflowVersion ?? '?'} on ${info.device}, ${info.package})` : info.name;
}
