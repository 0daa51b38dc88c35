// All-reduce bandwidth of the TCP process group over loopback: W processes each reduce a buffer the size
// of BERT-base's gradients (110M float32 = 440 MB by default), against a plain in-memory copy of the
// same buffer. Bus bandwidth = 2·(W−1)/W · bytes / time, as NCCL's tests report it. Then the rendezvous
// alone (connect, authenticate each connection both ways, exchange addresses), W ranks in one process.
//   npx tsx bench/allreduce.ts [--world 2] [--floats 110000000] [--repeats 3]
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { newJobSecret } from '../lib/dist/auth.ts';
import { rankFromEnv } from '../lib/dist/env.ts';
import { connectTcpGroup } from '../lib/dist/tcp.ts';

const { values: v } = parseArgs({ options: { world: { type: 'string', default: '2' }, floats: { type: 'string', default: '110000000' }, repeats: { type: 'string', default: '3' }, worker: { type: 'boolean', default: false } } });
const floats = Number(v.floats);
const repeats = Number(v.repeats);

if (v.worker) {
  const group = await connectTcpGroup(rankFromEnv());
  const data = new Float32Array(floats).fill(group.rank + 1);
  await group.barrier();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await group.allReduce(data, 'mean');
    times.push((performance.now() - t0) / 1000);
  }
  if (group.rank === 0) console.log(JSON.stringify({ best: Math.min(...times) }));
  group.close();
} else {
  const W = Number(v.world);
  const bytes = floats * 4;
  const src = new Float32Array(floats).fill(1);
  const dst = new Float32Array(floats);
  let copy = Infinity;
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    dst.set(src);
    copy = Math.min(copy, (performance.now() - t0) / 1000);
  }
  const { createServer, connect } = await import('node:net');
  // the transport's own ceiling: one socket pair on loopback, one process, no protocol
  const raw = await new Promise<number>((resolve) => {
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
      const c: import('node:net').Socket = connect((srv.address() as { port: number }).port, '127.0.0.1', () => c.end(Buffer.from(src.buffer)));
    });
  });
  const freePort = () =>
    new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
  const port = await freePort();
  const secret = newJobSecret();
  const outputs = await Promise.all(
    Array.from({ length: W }, (_, rank) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname, '--worker', '--floats', String(floats), '--repeats', String(repeats)], {
          env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(W), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TEVATRON_JOB_SECRET: secret },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`rank ${rank} exited with ${code}`))));
      }),
    ),
  );
  const best = JSON.parse(outputs[0].trim()).best as number;
  // the rendezvous alone (connect, authenticate every connection both ways, exchange addresses): W ranks in this process
  const rendezvous: number[] = [];
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    const t0 = performance.now();
    const groups = await Promise.all(Array.from({ length: W }, (_, rank) => connectTcpGroup({ rank, worldSize: W, localRank: rank, masterAddr: '127.0.0.1', masterPort: port, source: 'torchrun' }, { secret })));
    rendezvous.push(performance.now() - t0);
    await Promise.all(groups.map((g) => g.barrier()));
    groups.forEach((g) => g.close());
  }
  rendezvous.sort((a, b) => a - b);
  const bus = ((2 * (W - 1)) / W) * bytes;
  console.log(`all-reduce of ${(bytes / 1e6).toFixed(0)} MB over ${W} processes (loopback TCP): ${best.toFixed(2)} s, bus bandwidth ${(bus / best / 1e9).toFixed(2)} GB/s`);
  console.log(`rendezvous of ${W} ranks (with authentication): median ${rendezvous[10].toFixed(1)} ms over 20 (${rendezvous[0].toFixed(1)}-${rendezvous[19].toFixed(1)})`);
  console.log(`plain copy of the same buffer in one process: ${copy.toFixed(3)} s, ${(bytes / copy / 1e9).toFixed(2)} GB/s`);
  console.log(`raw loopback TCP (one socket, no protocol): ${raw.toFixed(2)} s, ${(bytes / raw / 1e9).toFixed(2)} GB/s`);
}
