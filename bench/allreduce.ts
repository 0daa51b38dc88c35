// The process groups side by side on this machine's loopback.
//   allreduce: W processes average BERT-base's gradients (L12/H768: 110M float32 = 440 MB in 200 tensors, the
//     call a training step makes: allReduceParams) on the tcp group and on the tensorflow group (each
//     --tf variant: bucket MB / buckets in flight / max_subdivs_per_device), against one loopback socket
//     (the transport's ceiling) and a plain copy. Bus bandwidth = 2(W−1)/W · bytes / time, as NCCL's tests
//     report it.
//   train: W processes train L4/H256 (batch B × n, 32/128 tokens, random ids, dropout on) on each group:
//     seconds per step and the part of it spent in collectives.
// Every configuration runs in fresh processes; configurations take turns for --rounds rounds (the order
// rotating each round), so that a slow spell of a shared machine hits all of them; a figure is the median
// over rounds with its range (within a round: the best of --repeats after a warm-up).
//   npx tsx bench/allreduce.ts [--sections allreduce,train] [--world 2] [--rounds 3] [--repeats 3]
//     [--groups tcp,tensorflow] [--tf 25/2/-1,100/2/-1] [--layers 12 --hidden 768] [--train-layers 4 --train-hidden 256 --batch 32 --n 2]
import { spawn } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { collateGroups } from '../lib/data/collator.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { newJobSecret } from '../lib/dist/auth.ts';
import { connectGroup, type DdpBackend } from '../lib/dist/connect.ts';
import { rankFromEnv } from '../lib/dist/env.ts';
import type { ProcessGroup } from '../lib/dist/group.ts';
import { allReduceParams } from '../lib/dist/tensors.ts';
import { initBackend } from '../lib/backend.ts';
import { bertConfigFromJson } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams } from '../lib/model/dense.ts';
import { disposeParams, initAdamW } from '../lib/optim.ts';
import { trainStep, type TrainState } from '../lib/train.ts';

const { values: v } = parseArgs({
  options: {
    sections: { type: 'string', default: 'allreduce,train' }, world: { type: 'string', default: '2' }, rounds: { type: 'string', default: '3' },
    repeats: { type: 'string', default: '3' }, groups: { type: 'string', default: 'tcp,tensorflow' }, tf: { type: 'string', default: '25/2/-1' },
    layers: { type: 'string', default: '12' }, hidden: { type: 'string', default: '768' },
    'train-layers': { type: 'string', default: '4' }, 'train-hidden': { type: 'string', default: '256' }, batch: { type: 'string', default: '32' }, n: { type: 'string', default: '2' },
    // worker side
    worker: { type: 'string' }, group: { type: 'string' }, variant: { type: 'string' },
  },
});
const repeats = Number(v.repeats);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const configOf = (layers: number, hidden: number) =>
  bertConfigFromJson({ model_type: 'bert', vocab_size: 30522, hidden_size: hidden, num_hidden_layers: layers, num_attention_heads: Math.max(1, hidden / 64), intermediate_size: 4 * hidden, max_position_embeddings: 512 }, 'bench');

/** tf variant "MB/inFlight/subdivs" as group options. */
const variantOptions = (variant: string) => {
  const [mb, inFlight, subdivs] = variant.split('/').map(Number);
  if (!(mb > 0 && inFlight >= 1 && Number.isInteger(subdivs))) throw new Error(`--tf ${variant}: expected MB/inFlight/subdivs, e.g. 25/2/-1`);
  return { bucketBytes: mb * 2 ** 20, inFlight, subdivs };
};

/** A group whose collectives' time is summed in `seconds`. */
function timed(group: ProcessGroup): { group: ProcessGroup; seconds: { total: number } } {
  const seconds = { total: 0 };
  const wrap = <A extends unknown[], R>(f: ((...a: A) => Promise<R>) | undefined) =>
    f &&
    (async (...a: A) => {
      const t0 = performance.now();
      try {
        return await f.apply(group, a);
      } finally {
        seconds.total += (performance.now() - t0) / 1000;
      }
    });
  return {
    seconds,
    group: {
      ...group,
      rank: group.rank,
      worldSize: group.worldSize,
      allReduce: wrap(group.allReduce)!,
      allGather: wrap(group.allGather)!,
      broadcast: wrap(group.broadcast)!,
      barrier: group.barrier.bind(group),
      allReduceTensors: wrap(group.allReduceTensors),
      allGatherTensor: wrap(group.allGatherTensor),
      broadcastTensors: wrap(group.broadcastTensors),
    },
  };
}

async function worker(task: string): Promise<void> {
  const info = rankFromEnv();
  const opts = v.variant ? variantOptions(v.variant) : {};
  const { group } = await connectGroup(info, { ddpBackend: v.group as DdpBackend, backend: 'tensorflow', ...opts });
  await initBackend('tensorflow');
  let out: Record<string, number>;
  if (task === 'allreduce') {
    const params = initDenseParams(configOf(Number(v.layers), Number(v.hidden)), {}, 1);
    const floats = Object.values(params).reduce((s, t) => s + t.size, 0);
    const times: number[] = [];
    for (let i = 0; i <= repeats; i++) {
      await group.barrier();
      const t0 = performance.now();
      const mean = await allReduceParams(params, group, 'mean');
      if (i > 0) times.push((performance.now() - t0) / 1000);
      disposeParams(mean);
    }
    out = { floats, best: Math.min(...times) };
  } else {
    const L = Number(v['train-layers']);
    const H = Number(v['train-hidden']);
    const [B, n] = [Number(v.batch), Number(v.n)];
    const model = denseBiEncoder(configOf(L, H), { pooling: 'cls' });
    const params = initDenseParams(configOf(L, H), {}, 1);
    const rng = new PyRandom(info.rank);
    const seq = (len: number) => Array.from({ length: len - 2 }, () => 1000 + rng.randbelow(29000));
    const batch = collateGroups(Array.from({ length: B }, () => ({ query: seq(32), passages: Array.from({ length: n }, () => seq(128)) })), { qMaxLen: 32, pMaxLen: 128, special: { cls: 101, sep: 102, pad: 0 } });
    const { group: g, seconds } = timed(group);
    const cfg = {
      adamw: { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, schedule: 'constant' as const, warmupSteps: 0, totalSteps: 100,
      maxGradNorm: 1, gradCache: null, dropout: true, group: g, negativesXDevice: true,
    };
    let state: TrainState = { params, optimizer: initAdamW(params), key: 3 };
    const steps: number[] = [];
    const comm: number[] = [];
    for (let i = 0; i <= repeats; i++) {
      await group.barrier();
      seconds.total = 0;
      const t0 = performance.now();
      state = (await trainStep(model, state, [batch], cfg)).state;
      if (i > 0) {
        steps.push((performance.now() - t0) / 1000);
        comm.push(seconds.total);
      }
    }
    const best = steps.indexOf(Math.min(...steps));
    out = { step: steps[best], comm: comm[best] };
  }
  await group.barrier();
  group.close?.();
  if (info.rank === 0) console.log(JSON.stringify(out));
}

/** W worker processes of `task` on `group` (tf `variant`); rank 0's figures. */
async function runWorkers(task: string, groupName: string, variant: string | undefined, W: number): Promise<Record<string, number>> {
  const port = await freePort();
  const secret = newJobSecret();
  const args = [new URL(import.meta.url).pathname, '--worker', task, '--group', groupName, '--repeats', String(repeats), '--layers', v.layers!, '--hidden', v.hidden!,
    '--train-layers', v['train-layers']!, '--train-hidden', v['train-hidden']!, '--batch', v.batch!, '--n', v.n!, ...(variant ? ['--variant', variant] : [])];
  const outputs = await Promise.all(
    Array.from({ length: W }, (_, rank) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
          env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(W), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TEVATRON_JOB_SECRET: secret, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (err += d));
        child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${task} on ${groupName}${variant ? ` ${variant}` : ''}: rank ${rank} exited with ${code}: ${err.trim().split('\n').at(-1)}`))));
      }),
    ),
  );
  return JSON.parse(outputs[0].trim().split('\n').at(-1)!);
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Seconds to send `bytes` through one loopback socket, no protocol: the transport's ceiling. */
function rawSocket(bytes: number): Promise<number> {
  const src = Buffer.alloc(bytes, 1);
  return new Promise((resolve) => {
    const srv = createServer((sock) => {
      let got = 0;
      const t0 = performance.now();
      sock.on('data', (d) => {
        got += d.length;
        if (got >= bytes) {
          resolve((performance.now() - t0) / 1000);
          sock.end();
          srv.close();
        }
      });
    }).listen(0, '127.0.0.1', () => {
      const c: Socket = connect((srv.address() as AddressInfo).port, '127.0.0.1', () => c.end(src));
    });
  });
}

const range = (xs: number[], digits: number) => `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;

async function main(): Promise<void> {
  const W = Number(v.world);
  const rounds = Number(v.rounds);
  type Config = { group: string; variant?: string };
  const configs: Config[] = v.groups!.split(',').flatMap((g): Config[] => (g === 'tensorflow' ? v.tf!.split(',').map((variant) => ({ group: g, variant })) : [{ group: g }]));
  const label = (c: Config) => (c.variant ? `${c.group} ${c.variant}` : c.group);
  const sections = v.sections!.split(',');
  console.log(`${W} processes on loopback, ${rounds} rounds; tensorflow variants are bucket MB / buckets in flight / max_subdivs_per_device`);
  if (sections.includes('allreduce')) {
    const results = new Map<string, number[]>();
    const raw: number[] = [];
    let floats = 0;
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < configs.length; k++) {
        const c = configs[(k + round) % configs.length];
        const r = await runWorkers('allreduce', c.group, c.variant, W);
        floats = r.floats;
        results.set(label(c), [...(results.get(label(c)) ?? []), r.best]);
      }
      raw.push(await rawSocket(floats * 4));
    }
    const bytes = floats * 4;
    const bus = (s: number) => (((2 * (W - 1)) / W) * bytes) / s / 1e9;
    console.log(`\nall-reduce (mean) of L${v.layers}/H${v.hidden}'s gradients, ${(bytes / 1e6).toFixed(0)} MB, allReduceParams:`);
    for (const [name, secs] of results) console.log(`  ${name.padEnd(24)} ${range(secs, 2)} s   bus bandwidth ${range(secs.map(bus), 2)} GB/s`);
    console.log(`  ${'raw loopback socket'.padEnd(24)} ${range(raw, 2)} s   ${range(raw.map((s) => bytes / s / 1e9), 2)} GB/s (one socket, one direction, no protocol)`);
  }
  if (sections.includes('train')) {
    const results = new Map<string, { step: number[]; comm: number[] }>();
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < configs.length; k++) {
        const c = configs[(k + round) % configs.length];
        const r = await runWorkers('train', c.group, c.variant, W);
        const e = results.get(label(c)) ?? { step: [], comm: [] };
        e.step.push(r.step);
        e.comm.push(r.comm);
        results.set(label(c), e);
      }
    }
    console.log(`\ntraining L${v['train-layers']}/H${v['train-hidden']}, batch ${v.batch} × ${v.n} per process, 32/128, --negatives_x_device, dropout on: seconds per step`);
    const tcp = results.get('tcp');
    for (const [name, r] of results) {
      const ratio = tcp && name !== 'tcp' ? `   ${range(r.step.map((s, i) => s / tcp.step[i]), 2)}× tcp's step` : '';
      console.log(`  ${name.padEnd(24)} ${range(r.step, 2)} s/step, collectives ${range(r.comm, 2)} s${ratio}`);
    }
  }
}

if (v.worker) await worker(v.worker);
else await main();
