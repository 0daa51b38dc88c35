// Starts one worker process per device, as torchrun does: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT and the job's secret (TEVATRON_JOB_SECRET) in each environment (and CUDA_VISIBLE_DEVICES
// when a GPU backend is installed; glibc's huge pages for malloc unless GLIBC_TUNABLES says otherwise).
// If a worker fails, the others are stopped and the launch fails naming the rank and its last meaningful
// error line; if the launcher itself is stopped by a signal, it says so and stops every worker.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { SECRET_VAR, newJobSecret } from './auth.ts';

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
  /** The job's secret (default: TEVATRON_JOB_SECRET, else a new random one; a job on several nodes needs it set). */
  secret?: string;
}

export interface WorkerFailure {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last meaningful line of its stderr (an uncaught error's message, not Node's version line). */
  lastError: string;
}

export interface LaunchResult {
  code: number;
  /** Set when a worker failed first: which one and how. */
  failure?: WorkerFailure;
  /** Set when the launcher itself was stopped by a signal (it then stopped the workers). */
  stoppedBy?: NodeJS.Signals;
}

/**
 * The line of a worker's stderr that says what went wrong: the message above an uncaught error's stack,
 * else the last line that is not Node's `Node.js vX` footer, a stack frame or the source excerpt of a crash.
 */
export function lastMeaningfulLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l && !/^Node\.js v\d+/.test(l));
  const frame = (l: string) => /^at\s/.test(l);
  // an uncaught error: Node prints the source line, a caret, the message, its stack, maybe {properties}:
  // the message is the line above the last block of stack frames
  let end = lines.length;
  while (end > 0 && !frame(lines[end - 1])) end--;
  if (end === 0) end = lines.length;
  while (end > 0 && frame(lines[end - 1])) end--;
  const meaningful = lines.slice(0, end).filter((l) => !/^\^+$/.test(l) && !/^[{}]$/.test(l));
  return meaningful.at(-1) ?? lines.at(-1) ?? '';
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
  const secret = o.secret ?? (process.env[SECRET_VAR] || (o.nnodes === 1 ? newJobSecret() : undefined));
  if (secret === undefined) {
    throw new Error(`a job on ${o.nnodes} nodes needs ${SECRET_VAR}: export the same random value on every node before launching, e.g. export ${SECRET_VAR}=$(openssl rand -hex 32)`);
  }
  const pin = o.pinGpus ?? gpuBackendInstalled();
  const visible = process.env.CUDA_VISIBLE_DEVICES?.split(',').filter(Boolean);
  const command = o.script.endsWith('.ts') ? ['--import', 'tsx', o.script, ...o.args] : [o.script, ...o.args];
  const write = o.write ?? ((_, stream, text) => process[stream].write(text));
  const children: ChildProcess[] = [];
  const stderrTail: string[] = [];
  const sent = new Map<ChildProcess, Set<string>>(); // signals we sent: a death by one of them is no one's fault

  return new Promise((resolve) => {
    let running = o.nprocPerNode;
    const failures: WorkerFailure[] = [];
    let stoppedBy: NodeJS.Signals | undefined;
    const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
    const kill = (c: ChildProcess, sig: NodeJS.Signals) => {
      sent.set(c, (sent.get(c) ?? new Set()).add(sig));
      c.kill(sig);
    };
    const stopAll = (sig: NodeJS.Signals = 'SIGTERM') => {
      for (const c of children.filter(alive)) {
        kill(c, sig);
        c.kill('SIGCONT'); // a stopped (SIGSTOP) worker acts on the signal only once continued
      }
      setTimeout(() => children.filter(alive).forEach((c) => kill(c, 'SIGKILL')), 5000).unref();
    };
    const onSignal = (sig: NodeJS.Signals) => {
      stoppedBy ??= sig;
      stopAll(sig);
    };
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
        [SECRET_VAR]: secret,
      };
      if (pin) env.CUDA_VISIBLE_DEVICES = visible ? visible[local % visible.length] : String(local);
      const child = spawn(process.execPath, command, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      stderrTail[rank] = '';
      child.stdout!.on('data', (d: Buffer) => write(rank, 'stdout', d.toString()));
      child.stderr!.on('data', (d: Buffer) => {
        const text = d.toString();
        write(rank, 'stderr', text);
        stderrTail[rank] = (stderrTail[rank] + text).slice(-16384);
      });
      // 'close', not 'exit': the worker's last stderr bytes have arrived by then
      child.on('close', (code, signal) => {
        if ((code !== 0 || signal) && !(signal && sent.get(child)?.has(signal))) {
          failures.push({ rank, code, signal, lastError: lastMeaningfulLine(stderrTail[rank]) });
          stopAll();
        }
        if (--running === 0) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          if (stoppedBy) resolve({ code: 128 + constants.signals[stoppedBy], stoppedBy });
          // a worker that died by a signal of its own (kill -9, a crash) is the cause of a failure
          // that others noticed at the same moment
          else if (failures.length) resolve({ code: 1, failure: failures.find((f) => f.signal) ?? failures[0] });
          else resolve({ code: 0 });
        }
      });
    }
  });
}
