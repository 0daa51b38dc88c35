// The tensorflow process group (lib/dist/tensorflow.ts, lib/dist/connect.ts) as real processes: the
// ServerDef against Python's protobuf, collectives of odd sizes over 3 processes, a killed (kill -9) and a
// frozen (SIGSTOP) rank, the launcher's exit, torchrun --no-python, and `auto` on two hosts simulated with
// network namespaces. The group needs the tensorflow binding: those tests run in the tensorflow pass.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeServerDef, toRankOrder } from '../lib/dist/tensorflow.ts';
import { alive, backend, freePort, kill, testOnce, pids, pythonWith, start, testUnless, type Proc } from './helpers.ts';

const worker = path.resolve('test/fixtures/dist_worker.ts');
const launcher = path.resolve('scripts/launch.ts');
const SECRET = 'tensorflow-group-test-secret-0123456789';
const needsBinding = backend === 'tensorflow' ? null : `the tensorflow group runs on the tensorflow backend, not ${backend}`;
const W = 3;

/** Rank `r` of a job of `world` fixture workers on loopback, in the tensorflow group. */
const rank = (r: number, world: number, port: number, env: Record<string, string> = {}) =>
  start([worker], { RANK: String(r), WORLD_SIZE: String(world), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TEVATRON_JOB_SECRET: SECRET, DDP_BACKEND: 'tensorflow', ...env });

const result = (p: Proc) => JSON.parse(p.text().split('\n').find((l) => l.startsWith('{'))!);

test('toRankOrder puts blocks gathered in TensorFlow\'s order (sorted device names: task:10 before task:2) back in rank order', () => {
  const order = [0, 1, 10, 2, 3, 4, 5, 6, 7, 8, 9];
  // block i holds rank order[i]'s two rows [r, -r]
  const gathered = tf.tensor2d(order.flatMap((r) => [[r, 100 + r], [-r, -100 - r]]), [22, 2]);
  const ordered = toRankOrder(gathered, order);
  assert.equal(Array.from(ordered.dataSync()), Array.from({ length: 11 }, (_, r) => [r, 100 + r, -r, -100 - r]).flat());
  assert.is(toRankOrder(gathered, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), gathered, 'rank order already: the same tensor');
  tf.dispose([gathered, ordered]);
});

const py = pythonWith(['tensorboard.compat.proto.cluster_pb2', 'tensorboard.compat.proto.config_pb2']);
testOnce(py.reason, "the ServerDef reads back in Python's protobuf: cluster, job, task, protocol, group leader", () => {
  const addresses = ['10.0.0.1:2222', '[fd00::2]:33333', 'host-3.example:4444'];
  const hex = Buffer.from(encodeServerDef(addresses, 2)).toString('hex');
  // ServerDef's own fields by hand (tensorboard has no tensorflow_server_pb2); the nested messages by protobuf
  const script = `
import json, sys
from google.protobuf.internal.decoder import _DecodeVarint
from tensorboard.compat.proto.cluster_pb2 import ClusterDef
from tensorboard.compat.proto.config_pb2 import ConfigProto
b = bytes.fromhex(sys.argv[1]); i = 0; out = {}
while i < len(b):
    key, i = _DecodeVarint(b, i)
    no, wire = key >> 3, key & 7
    if wire == 0:
        v, i = _DecodeVarint(b, i)
    else:
        n, i = _DecodeVarint(b, i); v = b[i:i + n]; i += n
    if no == 1:
        c = ClusterDef(); c.ParseFromString(v)
        out['jobs'] = [{'name': j.name, 'tasks': {str(k): t for k, t in j.tasks.items()}} for j in c.job]
    elif no == 4:
        c = ConfigProto(); c.ParseFromString(v); out['leader'] = c.experimental.collective_group_leader
    elif no in (2, 5):
        out[str(no)] = v.decode()
    else:
        out[str(no)] = v
print(json.dumps(out))`;
  const r = spawnSync(py.python!, ['-c', script, hex], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout), {
    jobs: [{ name: 'worker', tasks: { 0: addresses[0], 1: addresses[1], 2: addresses[2] } }],
    2: 'worker',
    3: 2,
    leader: '/job:worker/replica:0/task:0',
    5: 'grpc',
  });
});

testUnless(needsBinding, `tensorflow group of ${W} processes: all-reduce (sum, mean) and all-gather of odd sizes, broadcast, barrier; tensors of odd shapes in several buckets, three in flight`, async () => {
  const port = await freePort();
  const ranks = Array.from({ length: W }, (_, r) => rank(r, W, port, { BUCKET_BYTES: '200' }));
  try {
    const sum = Array.from({ length: 10 }, (_, i) => 300 + 3 * i);
    for (const p of ranks) {
      const { code } = await p.exited;
      assert.is(code, 0, p.text());
      assert.match(p.text(), /^group tensorflow \(3 ranks on 1 host, TensorFlow's collectives over a gRPC ring; its servers 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+ listen on every interface, unauthenticated/m);
      const got = result(p);
      assert.equal(got.sum, sum);
      assert.equal(got.mean, sum.map((v) => v / 3));
      assert.equal(got.gathered, [0, 0, 1, -1, 2, -2]);
      assert.equal(got.bcast, [1.5]);
      assert.ok(got.bigOk, 'a 1,000,003-value all-reduce');
      assert.equal(got.tensorErrors, []);
    }
  } finally {
    ranks.forEach(kill);
  }
});

testUnless(needsBinding, 'tensorflow group: a rank killed with kill -9 while the others wait in a collective ends every other rank within 10 s, naming it', async () => {
  const port = await freePort();
  const ranks = Array.from({ length: W }, (_, r) => rank(r, W, port, { MODE: 'wait', DDP_TIMEOUT: '120' }));
  try {
    await ranks[2].waitFor(/^ready$/m, 120_000);
    const killedAt = Date.now();
    ranks[2].child.kill('SIGKILL');
    for (const p of ranks.slice(0, 2)) {
      const { code, at } = await p.exited;
      assert.is(code, 1, p.text());
      // the control connection's end or TensorFlow's own error, whichever this rank or another saw first
      assert.match(p.text(), /^rank \d: (rank \d stopped the job: )?(allReduce #\d+: )?rank 2 (disconnected \(the process ended or was killed\)|is unreachable \(its process ended or was killed)/m, p.text());
      assert.ok(at - killedAt < 10_000, `ended ${at - killedAt} ms after the kill`);
    }
  } finally {
    ranks.forEach(kill);
  }
});

testUnless(needsBinding, 'tensorflow group: a frozen rank (SIGSTOP) ends the others within --ddp_timeout, naming it', async () => {
  const port = await freePort();
  const ranks = Array.from({ length: W }, (_, r) => rank(r, W, port, { MODE: 'stop', DDP_TIMEOUT: '5' }));
  try {
    const frozenAt = await ranks[2].waitFor(/^stopping$/m, 120_000);
    for (const p of ranks.slice(0, 2)) {
      const { code, at } = await p.exited;
      assert.is(code, 1, p.text());
      assert.match(p.text(), /rank 2 (has sent nothing for \d+\.\d s \(timeout 5 s, --ddp_timeout\)|does not answer within \d+ s)/);
      assert.ok(at - frozenAt > 4000 && at - frozenAt < 20_000, `ended ${at - frozenAt} ms after the freeze`);
    }
  } finally {
    ranks.forEach(kill);
  }
});

testUnless(needsBinding, 'launch.ts with the tensorflow group: a frozen worker fails the launch naming it, a killed one too; no process is left behind', async () => {
  for (const mode of ['stop', 'wait']) {
    const l = start([launcher, '--nproc_per_node', '3', '--master_port', String(await freePort()), worker], { MASTER_ADDR: '', DDP_BACKEND: 'tensorflow', MODE: mode, DDP_TIMEOUT: mode === 'stop' ? '5' : '120' });
    try {
      if (mode === 'wait') {
        await l.waitFor(/^ready$/m, 120_000);
        process.kill(Number(l.text().match(/^pid (\d+) rank 2$/m)![1]), 'SIGKILL');
      }
      const { code } = await l.exited;
      assert.is(code, 1, l.text());
      assert.match(l.text(), mode === 'stop' ? /launch: rank [01] exited with code 1: rank [01]: .*rank 2 (has sent nothing|does not answer)/ : /launch: rank 2 was killed by SIGKILL; the other workers were stopped/);
      const workers = pids(l.text());
      assert.is(workers.length, 3);
      for (const pid of workers) assert.not.ok(alive(pid), `worker ${pid} is still running`);
    } finally {
      kill(l);
    }
  }
});

testUnless(needsBinding, 'a binding loaded before the group, or one without the collective entry points, is an error saying what to do', () => {
  const code = (drop: boolean) => `
    import { createRequire } from 'node:module';
    import { startTensorflowWorker } from ${JSON.stringify(path.resolve('lib/dist/tensorflow.ts'))};
    const binding = createRequire(${JSON.stringify(path.resolve('package.json'))})('@tensorflow/tfjs-node/lib/napi-v8/tfjs_binding.node');
    ${drop ? 'delete binding.collectiveServer;' : ''}
    await startTensorflowWorker(['127.0.0.1:1'], 0).then(() => console.log('started'), (e) => console.log('error: ' + e.message));`;
  for (const [drop, message] of [
    [false, /^error: the tensorflow backend started before the process group: connect the group \(connectGroup\) before initBackend$/m],
    [true, /^error: the tensorflow binding has no collective ops .*: run `npm run setup:tensorflow`, or pass --ddp_backend tcp$/m],
  ] as const) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code(drop)], { encoding: 'utf8' });
    assert.match(r.stdout, message, r.stdout + r.stderr);
  }
});

/** Whether this process may create network namespaces (root, iproute2), else why not. */
function netnsReason(): string | null {
  if (process.getuid?.() !== 0) return 'simulating two hosts needs root (ip netns)';
  const probe = `tvp${process.pid}`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `ip netns is not available here: ${(r.stderr || String(r.error)).trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return null;
}

testUnless(needsBinding ?? netnsReason(), '--ddp_backend auto: tensorflow across two hosts (network namespaces joined by a veth pair), tcp on one host', async () => {
  const [a, b] = [`tv${process.pid}a`, `tv${process.pid}b`];
  const ip = (...args: string[]) => {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  };
  const procs: Proc[] = [];
  try {
    ip('netns', 'add', a);
    ip('netns', 'add', b);
    ip('link', 'add', `${a}v`, 'type', 'veth', 'peer', 'name', `${b}v`);
    for (const [ns, addr] of [[a, '10.77.15.1/30'], [b, '10.77.15.2/30']]) {
      ip('link', 'set', `${ns}v`, 'netns', ns);
      ip('-n', ns, 'addr', 'add', addr, 'dev', `${ns}v`);
      ip('-n', ns, 'link', 'set', `${ns}v`, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    const env = (r: number) => ({ RANK: String(r), WORLD_SIZE: '2', LOCAL_RANK: '0', MASTER_ADDR: '10.77.15.1', MASTER_PORT: '29500', TEVATRON_JOB_SECRET: SECRET, DDP_BACKEND: 'auto' });
    procs.push(...[a, b].map((ns, r) => start(['netns', 'exec', ns, process.execPath, '--import', 'tsx', worker], env(r), 'ip')));
    for (const p of procs) {
      const { code } = await p.exited;
      assert.is(code, 0, p.text());
      assert.match(p.text(), /^group tensorflow \(2 ranks on 2 hosts, .*its servers 10\.77\.15\.1:\d+, 10\.77\.15\.2:\d+ listen on every interface/m);
      assert.equal(result(p).sum, Array.from({ length: 10 }, (_, i) => 100 + 2 * i));
    }
    const port = await freePort();
    const local = [0, 1].map((r) => rank(r, 2, port, { DDP_BACKEND: 'auto' }));
    procs.push(...local);
    for (const p of local) {
      assert.is((await p.exited).code, 0, p.text());
      assert.match(p.text(), /^group tcp \(2 ranks on 1 host, authenticated connections to 127\.0\.0\.1, auto: one host\)/m);
    }
  } finally {
    procs.forEach(kill);
    spawnSync('ip', ['netns', 'del', a]);
    spawnSync('ip', ['netns', 'del', b]);
  }
});

const torchrun = ['.venv/bin/torchrun'].map((p) => path.resolve(p)).find(existsSync);
testUnless(needsBinding ?? (torchrun ? null : 'no torchrun (a Python with torch in .venv)'), 'torchrun --no-python starts the ranks unchanged (its store holds MASTER_PORT, the rendezvous takes the next port)', async () => {
  const port = await freePort();
  const t = start(['--nproc_per_node', '2', '--master_port', String(port), '--no-python', process.execPath, '--import', 'tsx', worker], { TEVATRON_JOB_SECRET: SECRET, DDP_BACKEND: 'tensorflow' }, torchrun);
  try {
    const { code } = await t.exited;
    assert.is(code, 0, t.text());
    const lines = t.text().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.equal(lines.map((l) => l.rank).sort(), [0, 1]);
    for (const l of lines) assert.equal(l.sum, Array.from({ length: 10 }, (_, i) => 100 + 2 * i));
    assert.is((t.text().match(/^group tensorflow \(2 ranks on 1 host/gm) ?? []).length, 2);
  } finally {
    kill(t);
  }
});

test.run();
