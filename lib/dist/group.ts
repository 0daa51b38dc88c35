// The process group every multi-process feature talks to: rank, world size and four collectives on
// Float32Array buffers (a group on TensorFlow's runtime also takes tensors, which then never leave it).
// Here: a single-process group, and an in-process group of W simulated ranks (each rank an async task in
// one process) for tests. Real transports implement the same interface.

import type { Tensor } from '@tensorflow/tfjs';

export type ReduceOp = 'sum' | 'mean';

export interface ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  /** Every rank's buffer (all the same length), concatenated in rank order. */
  allGather(data: Float32Array): Promise<Float32Array>;
  /** Element-wise sum or mean over ranks; every rank receives identical values. */
  allReduce(data: Float32Array, op?: ReduceOp): Promise<Float32Array>;
  /** Rank `root`'s buffer, on every rank (each passes a buffer of the same length). */
  broadcast(data: Float32Array, root?: number): Promise<Float32Array>;
  barrier(): Promise<void>;
  /** allReduce of each tensor, bucketed, on a group whose collectives run inside the backend (tensorflow). */
  allReduceTensors?(tensors: Tensor[], op?: ReduceOp): Promise<Tensor[]>;
  /** allGather along the first axis (every rank passes the same shape), inside the backend. */
  allGatherTensor?(tensor: Tensor): Promise<Tensor>;
  /** broadcast of each tensor, bucketed, inside the backend. */
  broadcastTensors?(tensors: Tensor[], root?: number): Promise<Tensor[]>;
  /** Leaves the group in order (after the last collective); a transport with sockets closes them. */
  close?(): void;
}

/** What every transport takes, whatever carries its bytes. */
export interface GroupOptions {
  /**
   * How long a collective waits for a peer, and the longest a peer may stay silent before it counts as
   * frozen (--ddp_timeout, in ms here). Default: Hugging Face's ddp_timeout, 1800 s.
   */
  timeoutMs?: number;
  /** Called once when the group fails (a peer died, froze or broke the protocol), also between collectives. */
  onFailure?: (error: Error) => void;
}

export const DEFAULT_TIMEOUT_MS = 1_800_000;

/** World size 1: every collective is the identity. */
export function singleProcessGroup(): ProcessGroup {
  return {
    rank: 0,
    worldSize: 1,
    allGather: async (data) => data.slice(),
    allReduce: async (data) => data.slice(),
    broadcast: async (data, root = 0) => {
      checkRoot(root, 1);
      return data.slice();
    },
    barrier: async () => {},
  };
}

function checkRoot(root: number, worldSize: number): void {
  if (!Number.isInteger(root) || root < 0 || root >= worldSize) {
    throw new Error(`broadcast: root ${root} is not a rank of a group of ${worldSize}`);
  }
}

type Kind = 'allGather' | 'allReduce' | 'broadcast' | 'barrier';

interface Round {
  kind: Kind;
  detail: string; // op or root: must agree across ranks
  buffers: (Float32Array | undefined)[];
  settle: ((result: Float32Array | Error) => void)[];
  arrived: number;
  timer?: ReturnType<typeof setTimeout>;
}

function combine(kind: Kind, detail: string, buffers: Float32Array[]): Float32Array {
  if (kind === 'barrier') return new Float32Array(0);
  if (kind === 'allGather') {
    const out = new Float32Array(buffers.reduce((n, b) => n + b.length, 0));
    let at = 0;
    for (const b of buffers) {
      out.set(b, at);
      at += b.length;
    }
    return out;
  }
  if (kind === 'broadcast') return buffers[Number(detail)];
  const n = buffers[0].length;
  const out = new Float32Array(n);
  const div = detail === 'mean' ? buffers.length : 1;
  for (let i = 0; i < n; i++) {
    let s = 0; // float64 accumulation in rank order: the same on every rank
    for (const b of buffers) s += b[i];
    out[i] = s / div;
  }
  return out;
}

/**
 * W simulated ranks sharing one process: call k of every rank meets in round k. A rank that does not
 * join a round within `timeoutMs` fails the round on every rank with an error naming it (never a hang).
 */
export function localProcessGroups(worldSize: number, timeoutMs = 30_000): ProcessGroup[] {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`world size must be a positive integer, got ${worldSize}`);
  const rounds = new Map<number, Round>();
  const calls = new Array<number>(worldSize).fill(0);

  const fail = (id: number, round: Round, error: Error) => {
    rounds.delete(id);
    clearTimeout(round.timer);
    for (const settle of round.settle) settle?.(error);
  };

  const join = (rank: number, kind: Kind, detail: string, data: Float32Array): Promise<Float32Array> =>
    new Promise((resolve, reject) => {
      const id = calls[rank]++;
      let round = rounds.get(id);
      if (!round) {
        round = { kind, detail, buffers: new Array(worldSize), settle: new Array(worldSize), arrived: 0 };
        rounds.set(id, round);
        const r = round;
        r.timer = setTimeout(() => {
          const missing = Array.from({ length: worldSize }, (_, i) => i).filter((i) => !r.buffers[i]);
          fail(id, r, new Error(`${kind} #${id}: rank(s) ${missing.join(', ')} did not join within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      round.settle[rank] = (result) => (result instanceof Error ? reject(result) : resolve(result));
      if (round.kind !== kind || round.detail !== detail) {
        fail(id, round, new Error(`collective #${id}: rank ${rank} called ${kind}(${detail}) while others called ${round.kind}(${round.detail})`));
        return;
      }
      const first = round.buffers.find((b) => b !== undefined);
      if (kind !== 'allGather' && first && first.length !== data.length) {
        fail(id, round, new Error(`${kind} #${id}: rank ${rank} passed ${data.length} values, others ${first.length}`));
        return;
      }
      round.buffers[rank] = data.slice();
      if (++round.arrived < worldSize) return;
      rounds.delete(id);
      clearTimeout(round.timer);
      if (kind === 'allGather' && round.buffers.some((b) => b!.length !== data.length)) {
        const sizes = round.buffers.map((b) => b!.length).join(', ');
        fail(id, round, new Error(`allGather #${id}: ranks passed buffers of different lengths (${sizes})`));
        return;
      }
      const result = combine(kind, detail, round.buffers as Float32Array[]);
      round.settle.forEach((settle) => settle(result.slice())); // each rank owns its copy
    });

  return Array.from({ length: worldSize }, (_, rank) => ({
    rank,
    worldSize,
    allGather: (data) => join(rank, 'allGather', '', data),
    allReduce: (data, op = 'sum') => join(rank, 'allReduce', op, data),
    broadcast: (data, root = 0) => {
      checkRoot(root, worldSize);
      return join(rank, 'broadcast', String(root), data);
    },
    barrier: () => join(rank, 'barrier', '', new Float32Array(0)).then(() => undefined),
  }));
}
