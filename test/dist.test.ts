import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { jobSecret } from '../lib/dist/auth.ts';
import { rankFromEnv } from '../lib/dist/env.ts';
import { hugePageTunables, lastMeaningfulLine, launchWorkers } from '../lib/dist/launch.ts';
import { freePort, withEnv } from './helpers.ts';

const worker = path.resolve('test/fixtures/dist_worker.ts');

/** Starts W worker processes on loopback; resolves with each one's exit code, stdout and stderr. */
async function runWorkers(W: number, mode = ''): Promise<{ code: number | null; out: string; err: string; ms: number }[]> {
  const port = await freePort();
  const started = Date.now();
  return Promise.all(
    Array.from({ length: W }, (_, rank) =>
      new Promise<{ code: number | null; out: string; err: string; ms: number }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', worker], {
          env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(W), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), MODE: mode, TEVATRON_JOB_SECRET: 'dist-test-secret-0123456789' },
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (err += d));
        child.on('exit', (code) => resolve({ code, out, err, ms: Date.now() - started }));
      }),
    ),
  );
}

test('rank discovery: ours/torchrun (the port after its store\'s), SLURM, OpenMPI, none', () => {
  assert.equal(rankFromEnv({ RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '0', MASTER_ADDR: 'h', MASTER_PORT: '1234' }), { rank: 2, worldSize: 4, localRank: 0, masterAddr: 'h', masterPort: 1234, source: 'torchrun' });
  // torchrun's agent holds MASTER_PORT for its own store (TORCHELASTIC_USE_AGENT_STORE): ours is the next port
  assert.is(rankFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_PORT: '1234', TORCHELASTIC_USE_AGENT_STORE: 'True' }).masterPort, 1235);
  assert.equal(rankFromEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '8', SLURM_LOCALID: '1', MASTER_ADDR: 'n1' }).rank, 5);
  assert.equal(rankFromEnv({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_LOCAL_RANK: '1' }).source, 'openmpi');
  assert.equal(rankFromEnv({}).worldSize, 1);
  assert.throws(() => rankFromEnv({ RANK: '4', WORLD_SIZE: '4' }), /rank 4 is outside a world of 4/);
  assert.throws(() => rankFromEnv({ RANK: 'x', WORLD_SIZE: '4' }), /RANK=x is not a non-negative integer/);
});

test('--local_rank as torch.distributed.launch passes it: the local rank when LOCAL_RANK is absent, an error when they disagree', () => {
  assert.is(rankFromEnv({ RANK: '3', WORLD_SIZE: '4' }, 1).localRank, 1);
  assert.is(rankFromEnv({ RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1' }, 1).localRank, 1);
  assert.is(rankFromEnv({ RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1' }).localRank, 1, 'no flag: LOCAL_RANK');
  assert.throws(() => rankFromEnv({ RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '0' }, 1), /--local_rank 1 disagrees with LOCAL_RANK=0/);
  assert.throws(() => rankFromEnv({ LOCAL_RANK: '0' }, 2), /--local_rank 2 disagrees with LOCAL_RANK=0/);
});

test("a worker's last meaningful error line: an uncaught error's message, not Node's version footer or its stack", () => {
  // what Node 20 prints for an uncaught error with a property (written out by hand)
  const crash = [
    'file:///w/worker.mjs:12',
    "    throw Object.assign(new Error('boom'), { code: 'E_BOOM' });",
    '    ^',
    '',
    'Error: boom',
    '    at Timeout._onTimeout (file:///w/worker.mjs:12:11)',
    '    at listOnTimeout (node:internal/timers:581:17)',
    '    at process.processTimers (node:internal/timers:519:7) {',
    "  code: 'E_BOOM'",
    '}',
    '',
    'Node.js v20.20.2',
    '',
  ].join('\n');
  assert.is(lastMeaningfulLine(crash), 'Error: boom');
  assert.is(lastMeaningfulLine('step 1\ntrain: --output_dir out exists and is not empty\n'), 'train: --output_dir out exists and is not empty');
  assert.is(lastMeaningfulLine('oops\n\nNode.js v22.1.0\n'), 'oops');
  assert.is(lastMeaningfulLine(''), '');
});

test('TCP group of 3 processes: ring all-reduce (sum, mean), all-gather in rank order, broadcast, barrier', async () => {
  const W = 3;
  const results = await runWorkers(W);
  for (const r of results) assert.is(r.code, 0, r.err);
  const parsed = results.map((r) => JSON.parse(r.out.split('\n').find((l) => l.startsWith('{'))!));
  const expectSum = Array.from({ length: 10 }, (_, i) => (0 + 100 + 200) + 3 * i);
  for (const p of parsed) {
    assert.equal(p.sum, expectSum);
    assert.equal(p.mean, expectSum.map((v) => v / 3));
    assert.equal(p.gathered, [0, -0, 1, -1, 2, -2].map((v) => v + 0));
    assert.equal(p.bcast, [1.5]);
    assert.ok(p.bigOk, 'a 1M-value all-reduce with a length that does not divide by W');
  }
});

test('a killed rank ends every other rank with a clear error, not a hang', async () => {
  const results = await runWorkers(3, 'die');
  assert.is(results[2].code, 3);
  for (const r of results.slice(0, 2)) {
    assert.is(r.code, 1);
    assert.match(r.err, /rank 2 disconnected/);
    assert.ok(r.ms < 30_000, `ended after ${r.ms} ms`);
  }
});

test('the launcher sets torchrun variables; a failing worker stops the others and is named with its last error', async () => {
  const out: string[] = [];
  const ok = await launchWorkers({ nprocPerNode: 3, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: await freePort(), script: worker, args: [], pinGpus: false, write: (_, s, t) => void out.push(t) });
  assert.is(ok.code, 0, out.join(''));
  assert.is(out.join('').split('\n').filter((l) => l.startsWith('{')).length, 3);
  const started = Date.now();
  const tunables = process.env.GLIBC_TUNABLES;
  process.env.GLIBC_TUNABLES = 'glibc.malloc.arena_max=2';
  const bad = await launchWorkers({
    nprocPerNode: 2, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: await freePort(), pinGpus: true,
    script: path.resolve('test/fixtures/launch_worker.mjs'), args: ['fail-rank-1'], write: (_, s, t) => void out.push(t),
  });
  if (tunables === undefined) delete process.env.GLIBC_TUNABLES;
  else process.env.GLIBC_TUNABLES = tunables;
  // the worker's environment: its own GPU, and glibc's huge pages added to the caller's tunables
  assert.equal(bad.failure, { rank: 1, code: 7, signal: null, lastError: 'rank 1: something broke (CUDA_VISIBLE_DEVICES=1, GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1)' });
  assert.ok(Date.now() - started < 10_000, 'rank 0 (sleeping) was stopped');
});

test('the launcher gives the workers of a job one new random secret, another for the next job; a job on several nodes must set it', async () => {
  await withEnv({ TEVATRON_JOB_SECRET: undefined }, async () => {
    const secrets = async (o: { secret?: string } = {}) => {
      const out: string[] = [];
      const r = await launchWorkers({
        nprocPerNode: 2, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: 1, pinGpus: false, ...o,
        script: path.resolve('test/fixtures/launch_worker.mjs'), args: ['secret'], write: (_, s, t) => void out.push(t),
      });
      assert.is(r.code, 0, out.join(''));
      return out.join('').split('\n').filter((l) => l.startsWith('secret ')).sort();
    };
    const [a, b] = [await secrets(), await secrets()];
    assert.is(a.length, 2);
    assert.is(a[0], a[1], 'one secret per job');
    assert.match(a[0], / length 64$/, '32 random bytes in hex');
    assert.is.not(a[0], b[0], 'a new one per job');
    const given = await secrets({ secret: 'a-secret-chosen-by-the-user' });
    assert.is(given[0], given[1]);
    assert.throws(() => launchWorkers({ nprocPerNode: 1, nnodes: 2, nodeRank: 0, masterAddr: 'h', masterPort: 1, script: 'x.mjs', args: [] }), /a job on 2 nodes needs TEVATRON_JOB_SECRET/);
  });
});

test('without TEVATRON_JOB_SECRET, or with a short one, a multi-process rank stops with one line saying how to set it', async () => {
  assert.throws(() => jobSecret({}), /^TEVATRON_JOB_SECRET is not set: .* export TEVATRON_JOB_SECRET=\$\(openssl rand -hex 32\)$/);
  assert.throws(() => jobSecret({ TEVATRON_JOB_SECRET: 'short' }), /TEVATRON_JOB_SECRET has 5 characters, fewer than 16/);
  assert.is(jobSecret({ TEVATRON_JOB_SECRET: 'x'.repeat(16) }), 'x'.repeat(16));
  const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', worker], { env: { ...process.env, RANK: '1', WORLD_SIZE: '2', MASTER_PORT: '1', TEVATRON_JOB_SECRET: '' } });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => resolve({ code, err }));
  });
  assert.is(r.code, 1);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.match(r.err, /rank 1: TEVATRON_JOB_SECRET is not set/);
});

test('huge pages join GLIBC_TUNABLES unless the caller chose glibc.malloc.hugetlb', () => {
  assert.is(hugePageTunables(undefined), 'glibc.malloc.hugetlb=1');
  assert.is(hugePageTunables('glibc.malloc.arena_max=2'), 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
  assert.is(hugePageTunables('glibc.malloc.hugetlb=0'), 'glibc.malloc.hugetlb=0');
});

test.run();
