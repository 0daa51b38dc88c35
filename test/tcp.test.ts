// The TCP process group and the launcher under hostile or broken conditions, as real processes on
// loopback: rogue connections (garbage, a fake rank 1, replayed or reflected proofs, a silent socket), two
// jobs on one port, a frozen (SIGSTOP) and a killed (kill -9) rank, the launcher's own signals and its
// culprit naming, what the sockets bind to, and a seeded fuzz of the group's frames.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { jobId, newNonce, proof } from '../lib/dist/auth.ts';
import { connectTcpGroup, FRAME } from '../lib/dist/tcp.ts';
import type { RankInfo } from '../lib/dist/env.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { alive, freePort, kill, pids, start, testOnce, type Proc } from './helpers.ts';

const worker = path.resolve('test/fixtures/dist_worker.ts');
const launcher = path.resolve('scripts/launch.ts');
const SECRET = 'reliability-test-secret-0123456789abcdef';
const SUM = Array.from({ length: 10 }, (_, i) => 300 + 3 * i); // the fixture's first all-reduce over 3 ranks
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rank `rank` of a job of W fixture workers on `port`. */
const rank = (r: number, W: number, port: number, env: Record<string, string> = {}) =>
  start([worker], { RANK: String(r), WORLD_SIZE: String(W), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TEVATRON_JOB_SECRET: SECRET, ...env });

async function finishedOk(procs: Proc[], W: number): Promise<void> {
  for (const p of procs) {
    const { code } = await p.exited;
    assert.is(code, 0, p.text());
    const result = JSON.parse(p.text().split('\n').find((l) => l.startsWith('{'))!);
    assert.equal(result.sum, Array.from({ length: 10 }, (_, i) => (100 * W * (W - 1)) / 2 + W * i));
    assert.ok(result.bigOk);
  }
}

/** A raw TCP client of rank 0's port, once it listens. */
async function connectWhenUp(port: number, ms = 60_000): Promise<net.Socket> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s: net.Socket = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
        s.once('error', reject);
      });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}

/** Everything the peer sends until it closes the connection (or `ms` pass). */
const received = (s: net.Socket, ms = 60_000) =>
  new Promise<{ bytes: Buffer; closed: boolean }>((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    const timer = setTimeout(() => resolve({ bytes: Buffer.concat(chunks), closed: false }), ms);
    s.on('close', () => (clearTimeout(timer), resolve({ bytes: Buffer.concat(chunks), closed: true })));
  });

/** A frame as the protocol lays it out: type u8, payload length u32 little-endian, payload. */
function frame(type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt32LE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Reads one whole frame from a socket. */
const nextFrame = (s: net.Socket) =>
  new Promise<{ type: number; payload: Buffer }>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt32LE(1)) {
        s.off('data', onData);
        resolve({ type: buf[0], payload: buf.subarray(5, 5 + buf.readUInt32LE(1)) });
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed before a whole frame')));
  });


// ---- what the sockets bind to

/** The addresses (hex, as /proc/net/tcp writes them) on which process `pid` listens. */
function listeningAddresses(pid: number): { v4: string[]; v6: string[] } {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch {}
  }
  const listen = (file: string) =>
    readFileSync(file, 'utf8').split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f[3] === '0A' && inodes.has(f[9])).map((f) => f[1]);
  return { v4: listen('/proc/net/tcp'), v6: existsSync('/proc/net/tcp6') ? listen('/proc/net/tcp6') : [] };
}

testOnce((existsSync('/proc/net/tcp') ? null : 'no /proc/net/tcp (not Linux)'), 'with MASTER_ADDR=127.0.0.1 every listening socket of every rank is on 127.0.0.1, not on all interfaces', async () => {
  const port = await freePort();
  const r0 = rank(0, 3, port);
  const r1 = rank(1, 3, port);
  try {
    // rank 1 listens (for rank 2) once it has reached rank 0; rank 2 is not started yet, so both still listen
    const deadline = Date.now() + 60_000;
    let seen = { r0: listeningAddresses(r0.child.pid!), r1: listeningAddresses(r1.child.pid!) };
    while (seen.r0.v4.length + seen.r0.v6.length === 0 || seen.r1.v4.length + seen.r1.v6.length === 0) {
      assert.ok(Date.now() < deadline, `no listening sockets seen: ${JSON.stringify(seen)}`);
      await sleep(200);
      seen = { r0: listeningAddresses(r0.child.pid!), r1: listeningAddresses(r1.child.pid!) };
    }
    for (const s of [seen.r0, seen.r1]) {
      assert.equal(s.v6, [], 'no IPv6 listener (:: would be every interface)');
      for (const a of s.v4) assert.is(a.split(':')[0], '0100007F', `listening on ${a}`); // 127.0.0.1, little-endian hex
    }
    assert.equal(seen.r0.v4, [`0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`]);
    await finishedOk([r0, r1, rank(2, 3, port)], 3);
  } finally {
    [r0, r1].forEach(kill);
  }
});

// ---- rogue connections

testOnce(null, 'garbage sent to the rendezvous port is refused with a logged reason; nothing listens mid-run; the run finishes correctly', async () => {
  const port = await freePort();
  const r0 = rank(0, 2, port, { MODE: 'steps' });
  let r1: Proc | undefined;
  try {
    const rogue = await connectWhenUp(port);
    const got = received(rogue);
    rogue.write('this is not json\n');
    const { bytes, closed } = await got;
    assert.ok(closed, 'rank 0 closed the connection');
    assert.is(bytes[0], FRAME.CHALLENGE, 'it received the challenge and nothing else');
    assert.is(bytes.length, 5 + bytes.readUInt32LE(1));
    await r0.waitFor(/refused a connection from 127\.0\.0\.1:\d+ on port \d+, which sent a frame of type 116/);
    r1 = rank(1, 2, port, { MODE: 'steps' });
    await r0.waitFor(/^step 2$/m);
    // mid-run: the rendezvous port is closed (and a connection could not join anyway)
    const refused = await new Promise<string>((resolve) => net.connect({ host: '127.0.0.1', port }).on('error', (e: NodeJS.ErrnoException) => resolve(e.code!)).on('connect', () => resolve('connected')));
    assert.is(refused, 'ECONNREFUSED');
    await finishedOk([r0, r1], 2);
  } finally {
    [r0, r1].forEach((p) => p && kill(p));
  }
});

testOnce(null, 'a process that claims to be rank 1 without the secret learns nothing and is refused; so are a replayed and a reflected proof; the job is unaffected', async () => {
  const port = await freePort();
  const r0 = rank(0, 2, port);
  let r1: Proc | undefined;
  try {
    // 1. a HELLO as rank 1, with no answer to the challenge
    const fake = await connectWhenUp(port);
    const fakeGot = received(fake);
    fake.write(frame(FRAME.HELLO, Buffer.from(JSON.stringify({ rank: 1, worldSize: 2, port: 0 }))));
    // 2. the job id copied from the challenge and a proof made for another challenge (a replay), with the real secret
    // 3. a proof in the server's role (a reflection)
    const attempts: { bytes: Buffer; closed: boolean }[] = [];
    for (const kind of ['replay', 'reflect'] as const) {
      const s = await connectWhenUp(port);
      const challenge = await nextFrame(s);
      const id = challenge.payload.subarray(5, 13);
      assert.equal(Buffer.from(id), jobId(SECRET), 'the challenge names the job by its id');
      const serverNonce = challenge.payload.subarray(13);
      const clientNonce = newNonce();
      const mac = kind === 'replay' ? proof(SECRET, 'client', id, newNonce(), clientNonce) : proof(SECRET, 'server', id, serverNonce, clientNonce);
      const got = received(s);
      s.write(frame(FRAME.RESPONSE, Buffer.concat([id, clientNonce, mac])));
      s.write(frame(FRAME.HELLO, Buffer.from(JSON.stringify({ rank: 1, worldSize: 2, port: 0 }))));
      attempts.push(await got);
    }
    const first = await fakeGot;
    for (const a of [first, ...attempts]) assert.ok(a.closed, 'refused');
    assert.is(first.bytes.length, 5 + 45, 'the fake received only the challenge: no table, no parameters');
    for (const a of attempts) assert.is(a.bytes.length, 0, 'nothing after the challenge');
    await r0.waitFor(/sent a frame of type 4, which is not expected now/);
    assert.is(r0.text().match(/failed to prove that it knows TEVATRON_JOB_SECRET/g)?.length, 2, r0.text());
    r1 = rank(1, 2, port);
    await finishedOk([r0, r1], 2);
  } finally {
    [r0, r1].forEach((p) => p && kill(p));
  }
});

testOnce(null, 'a silent connection is dropped after the handshake timeout and does not keep the job from exiting', async () => {
  const procs: Proc[] = [];
  try {
    // during a long rendezvous: dropped after the handshake timeout (2 s here)
    let port = await freePort();
    procs.push(rank(0, 2, port, { HANDSHAKE_TIMEOUT: '2' }));
    const early = await connectWhenUp(port);
    const t0 = Date.now();
    assert.ok((await received(early)).closed);
    assert.ok(Date.now() - t0 >= 1500, `dropped after ${Date.now() - t0} ms, before the 2 s handshake timeout`);
    await procs[0].waitFor(/did not complete the handshake within 2 s/);
    procs.push(rank(1, 2, port));
    await finishedOk(procs, 2);
    // with a handshake timeout far longer than the job: dropped when the rendezvous is over, and the job exits
    port = await freePort();
    procs.push(rank(0, 2, port, { HANDSHAKE_TIMEOUT: '600', DDP_TIMEOUT: '600' }));
    const late = await connectWhenUp(port);
    const lateGot = received(late, 120_000);
    const started = Date.now();
    procs.push(rank(1, 2, port, { HANDSHAKE_TIMEOUT: '600', DDP_TIMEOUT: '600' }));
    await finishedOk(procs.slice(2), 2);
    assert.ok(Date.now() - started < 60_000, `the job took ${Date.now() - started} ms`);
    assert.ok((await lateGot).closed, 'the silent connection was closed');
  } finally {
    procs.forEach(kill);
  }
});

testOnce(null, 'two jobs on one MASTER_PORT: the second job\'s ranks fail naming the clash, the first job finishes', async () => {
  const port = await freePort();
  const a0 = rank(0, 2, port);
  let a1: Proc | undefined;
  const other = { TEVATRON_JOB_SECRET: 'another-job-secret-0123456789abcdef' };
  const b1 = rank(1, 2, port, other);
  let b0: Proc | undefined;
  try {
    await connectWhenUp(port).then((s) => s.destroy()); // job A's rank 0 holds the port
    b0 = rank(0, 2, port, other);
    const [b0End, b1End] = await Promise.all([b0.exited, b1.exited]);
    assert.is(b1End.code, 1);
    assert.match(b1.text(), new RegExp(`port ${port} on 127\\.0\\.0\\.1 belongs to another job \\(job id [0-9a-f]{16}, ours [0-9a-f]{16}\\): two jobs were started on the same MASTER_PORT`));
    assert.is(b0End.code, 1);
    assert.match(b0.text(), new RegExp(`port ${port} is in use on 127\\.0\\.0\\.1 \\(another job on the same MASTER_PORT`));
    await a0.waitFor(/belongs to another job \(job id [0-9a-f]{16}, ours [0-9a-f]{16}\): two jobs were started on port/);
    a1 = rank(1, 2, port);
    await finishedOk([a0, a1], 2);
  } finally {
    [a0, a1, b0, b1].forEach((p) => p && kill(p));
  }
});

// ---- frozen and killed ranks

testOnce(null, 'a frozen rank (SIGSTOP) ends the others within --ddp_timeout, naming it', async () => {
  const port = await freePort();
  const env = { MODE: 'stop', DDP_TIMEOUT: '5' };
  const ranks = [0, 1, 2].map((r) => rank(r, 3, port, env));
  try {
    const frozenAt = await ranks[2].waitFor(/^stopping$/m);
    for (const p of ranks.slice(0, 2)) {
      const { code, at } = await p.exited;
      assert.is(code, 1, p.text());
      assert.match(p.text(), /rank 2 has sent nothing for \d+\.\d s \(timeout 5 s, --ddp_timeout\)/);
      // the timeout runs from the last sign of life, at most a heartbeat (0.5 s) before the stop
      assert.ok(at - frozenAt > 4000 && at - frozenAt < 20_000, `ended ${at - frozenAt} ms after the freeze`);
    }
  } finally {
    ranks.forEach(kill);
  }
});

testOnce(null, 'a rank killed with kill -9 ends every other rank within 10 s, naming it', async () => {
  const port = await freePort();
  const ranks = [0, 1, 2].map((r) => rank(r, 3, port, { MODE: 'hang', DDP_TIMEOUT: '120' }));
  try {
    await ranks[2].waitFor(/^ready$/m);
    const killedAt = Date.now();
    ranks[2].child.kill('SIGKILL');
    for (const p of ranks.slice(0, 2)) {
      const { code, at } = await p.exited;
      assert.is(code, 1, p.text());
      assert.match(p.text(), /rank 2 disconnected \(the process ended or was killed\)/);
      assert.ok(at - killedAt < 10_000, `ended ${at - killedAt} ms after the kill`);
    }
  } finally {
    ranks.forEach(kill);
  }
});

// ---- the launcher

const launch = (args: string[], env: Record<string, string> = {}) => start([launcher, ...args], { MASTER_ADDR: '', ...env });

testOnce(null, 'launch.ts: a frozen worker ends the job within --ddp_timeout; the launcher fails naming it and leaves no process behind', async () => {
  const l = launch(['--nproc_per_node', '3', '--master_port', String(await freePort()), worker], { MODE: 'stop', DDP_TIMEOUT: '5' });
  try {
    const { code } = await l.exited;
    assert.is(code, 1);
    assert.match(l.text(), /launch: rank [01] exited with code 1: rank [01]: .*rank 2 has sent nothing for \d+\.\d s \(timeout 5 s, --ddp_timeout\).*; the other workers were stopped/);
    const workers = pids(l.text());
    assert.is(workers.length, 3);
    for (const pid of workers) assert.not.ok(alive(pid), `worker ${pid} is still running`);
  } finally {
    kill(l);
  }
});

testOnce(null, 'launch.ts: a worker killed with kill -9 is named as the culprit', async () => {
  const l = launch(['--nproc_per_node', '3', '--master_port', String(await freePort()), worker], { MODE: 'hang' });
  try {
    await l.waitFor(/^ready$/m);
    const victim = Number(l.text().match(/^pid (\d+) rank 2$/m)![1]);
    process.kill(victim, 'SIGKILL');
    const { code } = await l.exited;
    assert.is(code, 1);
    assert.match(l.text(), /launch: rank 2 was killed by SIGKILL; the other workers were stopped/);
    for (const pid of pids(l.text())) assert.not.ok(alive(pid));
  } finally {
    kill(l);
  }
});

testOnce(null, 'launch.ts stopped by SIGTERM says so (not "rank 0"), exits 143 and stops every worker', async () => {
  const l = launch(['--nproc_per_node', '2', path.resolve('test/fixtures/launch_worker.mjs')]);
  try {
    await l.waitFor(/rank 0[\s\S]*rank 1|rank 1[\s\S]*rank 0/);
    l.child.kill('SIGTERM');
    const { code } = await l.exited;
    assert.is(code, 143);
    assert.match(l.text(), /launch: stopped by SIGTERM; the workers were stopped/);
    assert.not.match(l.text(), /launch: rank/);
    for (const pid of pids(l.text())) assert.not.ok(alive(pid));
  } finally {
    kill(l);
  }
});

testOnce(null, "launch.ts names a worker's uncaught exception by its message, not by Node's version line", async () => {
  const l = launch(['--nproc_per_node', '2', path.resolve('test/fixtures/launch_worker.mjs'), 'throw-rank-1']);
  try {
    const { code } = await l.exited;
    assert.is(code, 1);
    assert.match(l.text(), /Node\.js v\d+/, 'the worker printed the version line');
    assert.match(l.text(), /launch: rank 1 exited with code 1: Error: boom in rank 1; the other workers were stopped/);
  } finally {
    kill(l);
  }
});

// ---- fuzz

/** A TCP proxy from a fresh port to `to` that applies `mutate` once to the stream in one direction. */
async function mutatingProxy(to: number, direction: 'up' | 'down', mutate: (chunk: Buffer, at: number) => Buffer | null): Promise<{ port: number; close(): void }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: to });
    sockets.push(client, upstream);
    const pipe = (from: net.Socket, into: net.Socket, mutating: boolean) => {
      let seen = 0;
      from.on('data', (d) => {
        const out = mutating ? mutate(d, seen) : d;
        seen += d.length;
        if (out === null) return; // swallowed: the rest of the stream never arrives
        if (!into.destroyed) into.write(out);
      });
      from.on('close', () => into.destroy());
      from.on('error', () => {});
    };
    pipe(client, upstream, direction === 'up');
    pipe(upstream, client, direction === 'down');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => (server.close(), sockets.forEach((s) => s.destroy())) };
}

testOnce(null, 'fuzz: random mutations of valid handshake and data frames end in the group\'s own error or a clean result, never an uncaught exception or a hang', async () => {
  const rng = new PyRandom(16);
  const problems: string[] = [];
  const onUncaught = (e: unknown) => problems.push(`uncaught: ${(e as Error)?.stack ?? e}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const counts = { ok: 0, failed: 0 };
  const logged: string[] = [];
  // one case: a 2-rank group whose only connection runs through a proxy that corrupts one spot
  const runCase = async (seed: number) => {
    const r = new PyRandom(seed);
    const direction = r.randbelow(2) ? 'up' : 'down';
    const offset = r.randbelow(r.randbelow(2) ? 120 : 400); // the handshake is the first ~150 bytes each way
    const kind = r.randbelow(5);
    let done = false;
    const mutate = (chunk: Buffer, at: number): Buffer | null => {
      if (done || at + chunk.length <= offset) return chunk;
      done = true;
      const i = offset - at;
      const b = Buffer.from(chunk);
      if (kind === 0) b[i] ^= 1 << r.randbelow(8); // flip a bit
      else if (kind === 1) b[i] = r.randbelow(256); // any byte
      else if (kind === 2) return b.subarray(0, i); // cut: the rest never comes
      else if (kind === 3) return Buffer.concat([b.subarray(0, i), Buffer.from(Array.from({ length: 1 + r.randbelow(8) }, () => r.randbelow(256))), b.subarray(i)]); // insert
      else return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + r.randbelow(8))]); // delete
      return b;
    };
    const port0 = await freePort();
    const proxy = await mutatingProxy(port0, direction, mutate);
    const info = (rank: number, masterPort: number): RankInfo => ({ rank, worldSize: 2, localRank: rank, masterAddr: '127.0.0.1', masterPort, source: 'torchrun' });
    const opts = { secret: SECRET, timeoutMs: 1500, handshakeTimeoutMs: 1000, rendezvousTimeoutMs: 1500, log: (l: string) => void logged.push(l) };
    const side = async (rank: number, masterPort: number) => {
      const g = await connectTcpGroup(info(rank, masterPort), opts);
      try {
        await g.allReduce(Float32Array.from({ length: 7 }, (_, i) => rank * 10 + i));
        await g.allGather(Float32Array.from([rank]));
        await g.broadcast(Float32Array.from([rank, 1, 2]), 1);
        await g.barrier();
      } finally {
        g.close();
      }
    };
    const hang = sleep(20_000).then(() => 'hang');
    const outcomes = await Promise.all([side(0, port0), side(1, proxy.port)].map((p) => Promise.race([p.then(() => 'ok', (e) => e), hang])));
    proxy.close();
    for (const o of outcomes) {
      if (o === 'ok') counts.ok++;
      else if (o === 'hang') problems.push(`seed ${seed}: a rank hung`);
      else if (!(o instanceof Error) || /Cannot read|is not a function|is not defined|Unexpected token|RangeError|TypeError|undefined/.test(o.message)) problems.push(`seed ${seed}: not the group's own error: ${o?.stack ?? o}`);
      else counts.failed++;
    }
  };
  try {
    for (let batch = 0; batch < 6; batch++) await Promise.all(Array.from({ length: 8 }, () => runCase(rng.randbelow(1 << 30))));
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  assert.equal(problems, []);
  assert.ok(counts.failed > counts.ok / 4, `most corruptions are caught: ${JSON.stringify(counts)}`);
  for (const l of logged) assert.not.match(l, /\n/, 'each refusal is one line');
});

test.run();
