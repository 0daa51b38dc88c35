// Picks and starts the TensorFlow.js backend: tensorflow (tfjs-node-gpu, else tfjs-node) when it
// loads, else wasm, else the plain JS cpu backend. Everything else in lib/ uses tfjs-core ops only.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendChoice = BackendName | 'auto';

const BACKENDS: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];
const require = createRequire(import.meta.url);

/** Registers the tensorflow backend if a tfjs-node build loads; returns the package that did. */
function loadTensorflow(): string | null {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      require(pkg);
      return pkg;
    } catch {
      // absent or its native binding did not load: try the next one
    }
  }
  return null;
}

async function tryBackend(name: BackendName): Promise<boolean> {
  if (name === 'tensorflow') {
    if (!tf.findBackendFactory('tensorflow') && loadTensorflow() === null) return false;
  } else if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
  } // cpu is registered by @tensorflow/tfjs itself
  try {
    return await tf.setBackend(name);
  } catch {
    return false;
  }
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
  const fromEnv = process.env.TEVATRON_BACKEND as BackendChoice | undefined;
  const wanted = name === 'auto' && fromEnv ? fromEnv : name;
  if (wanted !== 'auto') {
    if (!BACKENDS.includes(wanted)) {
      throw new Error(`TEVATRON_BACKEND=${wanted}: unknown backend; use one of ${BACKENDS.join(', ')}`);
    }
    if (await tryBackend(wanted)) return wanted;
    const hint = wanted === 'tensorflow' ? ' (install @tensorflow/tfjs-node or -gpu and build its binding)' : '';
    throw new Error(`backend ${wanted} could not be started${hint}; use --backend auto to fall back`);
  }
  for (const candidate of ['tensorflow', 'wasm', 'cpu'] as const) {
    if (await tryBackend(candidate)) return candidate;
  }
  throw new Error('no TensorFlow.js backend could be started (tried tensorflow, wasm, cpu)');
}
