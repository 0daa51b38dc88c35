// Starts one worker process per device, as torchrun does: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT in each environment (and CUDA_VISIBLE_DEVICES when a GPU backend is installed; glibc's huge
// pages for malloc unless GLIBC_TUNABLES says otherwise). If a
// worker fails, the others are stopped and the launch fails naming the rank and its last error line.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';

/**
 * GLIBC_TUNABLES with glibc's transparent huge pages for malloc (glibc >= 2.35; older ones ignore it)
 * unless the caller set glibc.malloc.hugetlb: TensorFlow's buffers then fault in 2 MB at a time, which
 * halves the first step of a run (L4/H256 batch 32: 9.3 -> 4.5 s, 770k -> 80k page faults).
 */
export function hugePageTunables(current: string | undefined): string {
  if (current?.includes('glibc.malloc.hugetlb')) return current;
  return current ? `${current}:glibc.malloc.hugetlb=1` : 'glibc.malloc.hugetlb=1';
}

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** The worker: a .ts script (run with tsx) or any .js/.mjs file, and its arguments. */
  script: string;
  args: string[];
  /** Set CUDA_VISIBLE_DEVICES per worker (default: when @tensorflow/tfjs-node-gpu is installed). */
  pinGpus?: boolean;
  /** Where worker output goes (default: this process's stdout/stderr). */
  write?: (rank: number, stream: 'stdout' | 'stderr', text: string) => void;
}

export interface LaunchResult {
  code: number;
  /** Set when a worker failed: which one and its last line on stderr. */
  failure?: { rank: number; code: number | null; signal: NodeJS.Signals | null; lastError: string };
}

function gpuBackendInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node-gpu');
    return true;
  } catch {
    return false;
  }
}

export function launchWorkers(o: LaunchOptions): Promise<LaunchResult> {
  const world = o.nprocPerNode * o.nnodes;
  const pin = o.pinGpus ?? gpuBackendInstalled();
  const visible = process.env.CUDA_VISIBLE_DEVICES?.split(',').filter(Boolean);
  const command = o.script.endsWith('.ts') ? ['--import', 'tsx', o.script, ...o.args] : [o.script, ...o.args];
  const write = o.write ?? ((_, stream, text) => process[stream].write(text));
  const children: ChildProcess[] = [];
  const lastError: string[] = [];

  return new Promise((resolve) => {
    let running = o.nprocPerNode;
    let failure: LaunchResult['failure'];
    const stopAll = () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      setTimeout(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')), 5000).unref();
    };
    const onSignal = (sig: NodeJS.Signals) => children.forEach((c) => c.kill(sig));
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    for (let local = 0; local < o.nprocPerNode; local++) {
      const rank = o.nodeRank * o.nprocPerNode + local;
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        RANK: String(rank),
        LOCAL_RANK: String(local),
        WORLD_SIZE: String(world),
        LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        MASTER_ADDR: o.masterAddr,
        MASTER_PORT: String(o.masterPort),
        GLIBC_TUNABLES: hugePageTunables(process.env.GLIBC_TUNABLES),
      };
      if (pin) env.CUDA_VISIBLE_DEVICES = visible ? visible[local % visible.length] : String(local);
      const child = spawn(process.execPath, command, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      lastError[rank] = '';
      child.stdout!.on('data', (d: Buffer) => write(rank, 'stdout', d.toString()));
      child.stderr!.on('data', (d: Buffer) => {
        const text = d.toString();
        write(rank, 'stderr', text);
        const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
        if (lines.length) lastError[rank] = lines[lines.length - 1];
      });
      child.on('exit', (code, signal) => {
        if ((code !== 0 || signal) && !failure) {
          failure = { rank, code, signal, lastError: lastError[rank] };
          stopAll();
        }
        if (--running === 0) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve(failure ? { code: 1, failure } : { code: 0 });
        }
      });
    }
  });
}
