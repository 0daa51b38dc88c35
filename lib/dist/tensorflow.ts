// The tensorflow process group: collectives on TensorFlow's own runtime, the one
// MultiWorkerMirroredStrategy runs on (CollectiveReduceV2, CollectiveGatherV2, broadcast; a gRPC ring
// between workers on CPUs, NCCL between GPUs), through native/tevatron_collective.cc. Tensors never leave
// TensorFlow: a list of gradients is flattened into buckets (many parameters per collective), several
// buckets in flight at once.
// Each rank's TensorFlow context becomes a worker when the binding loads: its gRPC server listens on
// every interface and runs whatever a caller sends, unauthenticated. So it starts only when chosen
// (connect.ts), after the authenticated TCP rendezvous has exchanged the servers' addresses, and that TCP
// group stays on as the control plane: barriers (its last bytes reach every peer before a rank exits,
// which TensorFlow's pull-based transfers do not promise) and heartbeats that name a rank that died or
// froze. A failure on either side aborts every pending TensorFlow collective and stops the job on every rank.
import * as tf from '@tensorflow/tfjs';
import { backendInfo, initBackend } from '../backend.ts';
import { callNativeAsync, runningBinding, type NativeBinding } from '../native.ts';
import { DEFAULT_TIMEOUT_MS, type GroupOptions, type ProcessGroup, type ReduceOp } from './group.ts';
import type { TcpGroup } from './tcp.ts';

/** The variable that carries this rank's ServerDef (hex) to the binding as it loads. */
export const SERVER_DEF_VAR = 'TEVATRON_TF_SERVER_DEF';
const JOB = 'worker';
const GROUP_KEY = 1;
const KIND = { reduce: 0, gather: 1, send: 2, recv: 3 } as const;
// TensorFlow status codes (tensorflow/c/tf_status.h)
const DEADLINE_EXCEEDED = 4;
const ABORTED = 10;

const task = (rank: number): string => `/job:${JOB}/replica:0/task:${rank}`;

// ---------------------------------------------------------------- ServerDef (tensorflow_server.proto)

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n > 127; n = Math.floor(n / 128)) out.push((n % 128) | 128);
  out.push(n);
  return out;
}
const bytesField = (no: number, bytes: number[]) => [...varint((no << 3) | 2), ...varint(bytes.length), ...bytes];
const stringField = (no: number, s: string) => bytesField(no, [...Buffer.from(s, 'utf8')]);
const intField = (no: number, v: number) => [...varint(no << 3), ...varint(v)];

/**
 * The ServerDef of task `rank` in a cluster of one job `worker` whose task i is at `addresses[i]`
 * (host:port), protocol grpc, with task 0 leading the collective groups (without a leader, the
 * collectives wait for each other forever).
 */
export function encodeServerDef(addresses: string[], rank: number): Uint8Array {
  // JobDef {1: name, 2: map<int32, string> tasks}; ClusterDef {1: job}
  const tasks = addresses.flatMap((a, i) => bytesField(2, [...intField(1, i), ...stringField(2, a)]));
  const cluster = bytesField(1, [...stringField(1, JOB), ...tasks]);
  // ConfigProto {16: Experimental {1: collective_group_leader}}
  const config = bytesField(16, stringField(1, task(0)));
  // ServerDef {1: cluster, 2: job_name, 3: task_index, 4: default_session_config, 5: protocol}
  return Uint8Array.from([...bytesField(1, cluster), ...stringField(2, JOB), ...intField(3, rank), ...bytesField(4, config), ...stringField(5, 'grpc')]);
}

/**
 * Starts the tensorflow backend with this process's context as task `rank` of `addresses`: its gRPC server
 * listens on every interface at its address's port. Must run before anything else loads the binding.
 */
export async function startTensorflowWorker(addresses: string[], rank: number): Promise<void> {
  process.env[SERVER_DEF_VAR] = Buffer.from(encodeServerDef(addresses, rank)).toString('hex');
  try {
    await initBackend('tensorflow');
  } finally {
    delete process.env[SERVER_DEF_VAR]; // not for child processes
  }
  const binding = runningBinding();
  if (typeof binding?.collectiveServer !== 'function') {
    throw new Error('the tensorflow binding has no collective ops (it was built before tevatron-ts added them): run `npm run setup:tensorflow`, or pass --ddp_backend tcp');
  }
  const server = binding.collectiveServer();
  if (!server.requested) throw new Error('the tensorflow backend started before the process group: connect the group (connectGroup) before initBackend');
  if (server.error) throw new Error(`TensorFlow's collective server for ${addresses[rank]} did not start: ${server.error}`);
}

// ---------------------------------------------------------------- the group

export interface TensorflowGroupOptions extends GroupOptions {
  /** Bytes of gradients per collective (--ddp_bucket_cap_mb). */
  bucketBytes?: number;
  /** Buckets whose collectives run at once. */
  inFlight?: number;
  /** CollectiveReduceV2's max_subdivs_per_device (-1: TensorFlow's choice). */
  subdivs?: number;
}

export type TensorflowGroup = ProcessGroup & {
  close(): void;
  /** Called by the control group's onFailure: aborts the pending collectives, then reports. */
  controlFailed(e: Error): void;
};

interface Failure extends Error {
  code?: number;
}

/** `gathered` (equal blocks along axis 0, block i from rank order[i]) with its blocks in rank order. */
export function toRankOrder(gathered: tf.Tensor, order: number[]): tf.Tensor {
  if (order.every((r, i) => r === i)) return gathered;
  return tf.tidy(() => tf.gather(gathered.reshape([order.length, -1]), order.map((_, r) => order.indexOf(r))).reshape(gathered.shape));
}

/** Keys every rank derives in the same order: one instance key per collective, never reused. */
function keyCounter() {
  let last = 0;
  return (n = 1) => {
    const first = last + 1;
    last += n;
    return first;
  };
}

/**
 * The group over a started worker (startTensorflowWorker) of `addresses`, controlled by `control` (the TCP
 * group: barriers, liveness). Its first collective gathers the ranks, which establishes the group and the
 * order TensorFlow gathers in.
 */
export async function tensorflowGroup(control: TcpGroup, addresses: string[], opts: TensorflowGroupOptions = {}): Promise<TensorflowGroup> {
  const { rank, worldSize: W } = control;
  const binding = runningBinding() as Required<NativeBinding>;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const bucketBytes = opts.bucketBytes ?? 25 * 2 ** 20;
  const inFlight = Math.max(1, opts.inFlight ?? 2);
  const subdivs = opts.subdivs ?? -1;
  const hint = backendInfo().device === 'gpu' ? 'nccl' : 'ring';
  const keys = keyCounter();
  let failure: Error | null = null;
  let failed: () => void = () => {};
  const failedAtControl = new Promise<null>((resolve) => (failed = () => resolve(null)));
  let closed = false;
  let seq = 0;

  /** TensorFlow's names for tasks and their addresses, as ranks. */
  const withRanks = (message: string) =>
    addresses.reduce((m, a, r) => m.split(a).join(`rank ${r} (${a})`), message).replace(/\/job:worker\/replica:0\/task:(\d+)(\/device:\w+:\d+)?/g, 'rank $1');

  /** This side failed: abort the pending collectives, stop the job on every rank (control's onFailure reports it). */
  const fail = (e: Error): Error => {
    if (failure) return failure;
    failure = e;
    binding.collectiveAbort(e.message);
    control.abort(e);
    return e;
  };

  /** Which peer's server does not answer within `ms`, if one does not. */
  const peerAtFault = async (ms: number): Promise<string | null> => {
    const peers = Array.from({ length: W }, (_, r) => r).filter((r) => r !== rank);
    const answers = await Promise.all(peers.map((r) => binding.collectivePeerHealth(task(r), ms).then(() => null, (e: Failure) => ({ r, e }))));
    const bad = answers.find((a) => a !== null);
    if (!bad) return null;
    return bad.e.code === DEADLINE_EXCEEDED
      ? `rank ${bad.r} does not answer within ${ms / 1000} s: it is stopped, frozen, or its host is unreachable`
      : `rank ${bad.r} is unreachable (its process ended or was killed, or its host is down): ${withRanks(bad.e.message)}`;
  };

  /** One collective on `x` (its own instance key); any error fails the whole group, naming the rank at fault if one is. */
  const collective = async (what: string, kind: number, x: tf.Tensor, key: number, divide = false): Promise<tf.Tensor> => {
    if (closed) throw new Error(`${what}: the group was closed`);
    if (failure) throw failure;
    try {
      return await callNativeAsync('collective', [x], kind, W, GROUP_KEY, key, divide, hint, timeoutMs / 1000, subdivs);
    } catch (err) {
      const e = err as Failure;
      if (failure) throw failure;
      if (e.code === ABORTED) throw fail(e);
      const culprit = await Promise.race([peerAtFault(Math.min(timeoutMs, 5000)), failedAtControl]);
      if (failure) throw failure; // the control group named it first
      const why = e.code === DEADLINE_EXCEEDED ? `no result within ${timeoutMs / 1000} s (--ddp_timeout)` : withRanks(e.message);
      throw fail(new Error(`${what}: ${culprit ?? why}${culprit ? ` (${why.split('\n')[0]})` : ''}`));
    }
  };

  /** `run` on buckets of `tensors` (each flattened; consecutive ones concatenated up to bucketBytes), results in their shapes. */
  const bucketed = async (tensors: tf.Tensor[], run: (flat: tf.Tensor, key: number) => Promise<tf.Tensor>): Promise<tf.Tensor[]> => {
    const buckets: number[][] = [];
    let bytes = Infinity;
    const out: (tf.Tensor | undefined)[] = tensors.map((t) => (t.size === 0 ? tf.zeros(t.shape) : undefined));
    tensors.forEach((t, i) => {
      if (t.size === 0) return;
      if (bytes + t.size * 4 > bucketBytes) {
        buckets.push([]);
        bytes = 0;
      }
      buckets.at(-1)!.push(i);
      bytes += t.size * 4;
    });
    const first = keys(buckets.length); // bucket b is instance first + b on every rank, whichever finishes first
    let next = 0;
    const worker = async () => {
      while (next < buckets.length) {
        const b = next++;
        const members = buckets[b];
        const flat = tf.tidy(() => (members.length === 1 ? tensors[members[0]].reshape([-1]) : tf.concat(members.map((i) => tensors[i].reshape([-1])))));
        let result: tf.Tensor;
        try {
          result = await run(flat, first + b);
        } finally {
          flat.dispose();
        }
        const parts = members.length === 1 ? [result] : tf.split(result, members.map((i) => tensors[i].size));
        members.forEach((i, k) => (out[i] = parts[k].reshape(tensors[i].shape)));
        tf.dispose([result, ...parts]);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(inFlight, buckets.length) }, worker));
    } catch (e) {
      tf.dispose(out.filter((t): t is tf.Tensor => t !== undefined));
      throw e;
    }
    return out as tf.Tensor[];
  };

  // TensorFlow gathers in the order of its sorted device names (task:10 before task:2): learn it once
  let order: number[] = [];
  const gatherRaw = async (x: tf.Tensor, what: string) => {
    const rows = x.rank === 0 ? x.reshape([1]) : x; // CollectiveGatherV2 concatenates along axis 0
    try {
      return await collective(what, KIND.gather, rows, keys());
    } finally {
      if (rows !== x) rows.dispose();
    }
  };

  const allReduceTensors = (tensors: tf.Tensor[], op: ReduceOp = 'sum') => {
    const what = `allReduce #${seq++}`;
    return bucketed(tensors, (flat, key) => collective(what, KIND.reduce, flat, key, op === 'mean'));
  };
  const allGatherTensor = async (x: tf.Tensor): Promise<tf.Tensor> => {
    const gathered = await gatherRaw(x, `allGather #${seq++}`);
    const ordered = toRankOrder(gathered, order);
    if (ordered !== gathered) gathered.dispose();
    return ordered;
  };
  const broadcastTensors = (tensors: tf.Tensor[], root = 0) => {
    if (!Number.isInteger(root) || root < 0 || root >= W) throw new Error(`broadcast: root ${root} is not a rank of a group of ${W}`);
    const what = `broadcast #${seq++}`;
    return bucketed(tensors, (flat, key) => collective(what, rank === root ? KIND.send : KIND.recv, flat, key));
  };
  const onArrays = async (data: Float32Array, body: (t: tf.Tensor) => Promise<tf.Tensor>): Promise<Float32Array> => {
    const t = tf.tensor1d(data, 'float32');
    try {
      const out = await body(t);
      const values = (await out.data()) as Float32Array;
      out.dispose();
      return values;
    } finally {
      t.dispose();
    }
  };

  const group: TensorflowGroup = {
    rank,
    worldSize: W,
    allReduce: (data, op = 'sum') => onArrays(data, async (t) => (await allReduceTensors([t], op))[0]),
    allGather: (data) => onArrays(data, allGatherTensor),
    broadcast: (data, root = 0) => onArrays(data, async (t) => (await broadcastTensors([t], root))[0]),
    allReduceTensors,
    allGatherTensor,
    broadcastTensors,
    barrier: async () => {
      if (failure) throw failure;
      await control.barrier();
    },
    close() {
      if (closed) return;
      closed = true;
      control.close();
    },
    controlFailed(e: Error) {
      failed();
      if (!failure) {
        failure = e;
        binding.collectiveAbort(e.message);
      }
      opts.onFailure?.(failure);
    },
  };

  const mine = tf.scalar(rank, 'float32');
  const ranks = await gatherRaw(mine, 'the first collective (establishing the group)');
  order = Array.from(await ranks.data());
  tf.dispose([mine, ranks]);
  if ([...order].sort((a, b) => a - b).some((r, i) => r !== i)) throw fail(new Error(`the first collective gathered ranks [${order}], not each rank once`));
  return group;
}
