// A process group over TCP (node:net, no native dependency): a full mesh of connections made through
// a rendezvous at MASTER_ADDR:MASTER_PORT, ring all-reduce and all-gather (each rank sends and
// receives 2·(W−1)/W of the buffer, whatever W), direct broadcast. A peer that dies closes its sockets,
// which fails every pending and later collective at once with an error naming the rank: no hangs.
import net from 'node:net';
import type { ProcessGroup, ReduceOp } from './group.ts';
import type { RankInfo } from './env.ts';

const HELLO = 1;
const TABLE = 2;
const DATA = 3;

export interface TcpGroupOptions {
  /** How long a collective (or the rendezvous) may wait for a peer. */
  timeoutMs?: number;
}

interface Frame {
  type: number;
  payload: Buffer;
}

/** One connection: length-prefixed frames in, a FIFO of waiters for them. */
class Peer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private frames: Frame[] = [];
  private waiters: { resolve: (f: Frame) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;

  constructor(
    readonly socket: net.Socket,
    public name: string,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d) => this.onData(d));
    const lost = (why: string) => this.fail(new Error(`${this.name} ${why}`));
    socket.on('error', (e) => lost(`connection error: ${e.message}`));
    socket.on('close', () => lost('disconnected (the process ended or was killed)'));
  }

  private need = -1; // bytes of the frame being received (header included), once its header is in

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 5) return;
        if (this.chunks[0].length < 5) this.chunks = [Buffer.concat(this.chunks)];
        this.need = 5 + this.chunks[0].readUInt32LE(1);
      }
      // concatenate once the whole frame is in: joining on every chunk would copy a large frame O(n²) times
      if (this.buffered < this.need) return;
      const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
      const frame = { type: all[0], payload: all.subarray(5, this.need) };
      const rest = all.subarray(this.need);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
      this.need = -1;
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(frame);
      else this.frames.push(frame);
    }
  }

  fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  send(type: number, payload: Uint8Array): void {
    if (this.failure) throw this.failure;
    const head = Buffer.alloc(5);
    head[0] = type;
    head.writeUInt32LE(payload.byteLength, 1);
    this.socket.write(head);
    this.socket.write(payload);
  }

  recv(timeoutMs: number, what: string): Promise<Frame> {
    const ready = this.frames.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`${what}: no message from ${this.name} within ${timeoutMs / 1000} s (is it stuck or much slower?)`));
      }, timeoutMs);
      const done = (f: Frame) => {
        clearTimeout(timer);
        resolve(f);
      };
      this.waiters.push({ resolve: done, reject: (e) => (clearTimeout(timer), reject(e)) });
    });
  }
}

const asBytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function toFloats(b: Buffer, expected: number, from: string, what: string): Float32Array {
  if (b.length !== expected * 4) throw new Error(`${what}: ${from} sent ${b.length / 4} values, expected ${expected} (do all ranks pass buffers of the same length?)`);
  const out = new Float32Array(expected);
  new Uint8Array(out.buffer).set(b);
  return out;
}

function connectWithRetry(host: string, port: number, deadline: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (e) => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`cannot reach rank 0 at ${host}:${port} (${e.message}); check MASTER_ADDR/MASTER_PORT and that rank 0 started`));
        else setTimeout(attempt, 200);
      });
    };
    attempt();
  });
}

function listen(server: net.Server, port: number, host?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot listen on ${host ?? '*'}:${port} (${e.message}); pick another MASTER_PORT`)));
    server.listen(port, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

const json = (o: unknown) => Buffer.from(JSON.stringify(o));

/** Joins the group described by `info` (every rank calls this) and returns it once all are connected. */
export async function connectTcpGroup(info: RankInfo, opts: TcpGroupOptions = {}): Promise<ProcessGroup & { close(): void }> {
  const { rank, worldSize: W } = info;
  const timeoutMs = opts.timeoutMs ?? 1_800_000;
  const deadline = Date.now() + Math.min(timeoutMs, 300_000);
  const peers = new Array<Peer | undefined>(W);
  const server = net.createServer();
  let expectAccept = 0;
  let onAccepted: (() => void) | null = null;

  // every rank accepts connections from higher ranks (rank 0 also hands out the address table)
  const port = await listen(server, rank === 0 ? info.masterPort : 0);
  const hellos: { peer: Peer; rank: number; port: number; host: string }[] = [];
  const allHello = new Promise<void>((resolve) => (onAccepted = resolve));
  server.on('connection', (socket) => {
    const peer = new Peer(socket, 'a connecting rank');
    peer.recv(timeoutMs, 'rendezvous').then((f) => {
      const h = JSON.parse(f.payload.toString());
      peer.name = `rank ${h.rank}`;
      peers[h.rank] = peer;
      hellos.push({ peer, rank: h.rank, port: h.port, host: socket.remoteAddress ?? '127.0.0.1' });
      if (hellos.length === expectAccept) onAccepted?.();
    }, () => {});
  });

  if (rank === 0) {
    expectAccept = W - 1;
    if (W > 1) await withTimeout(allHello, timeoutMs, `rendezvous: only ${hellos.length} of ${W - 1} ranks joined rank 0 on port ${port}`);
    const table = Array.from({ length: W }, (_, r) => {
      const h = hellos.find((x) => x.rank === r);
      return h ? { host: h.host.replace(/^::ffff:/, ''), port: h.port } : { host: '', port };
    });
    for (const h of hellos) h.peer.send(TABLE, json(table));
  } else {
    expectAccept = W - 1 - rank;
    const master = new Peer(await connectWithRetry(info.masterAddr, info.masterPort, deadline), 'rank 0');
    peers[0] = master;
    master.send(HELLO, json({ rank, port }));
    const table: { host: string; port: number }[] = JSON.parse((await master.recv(timeoutMs, 'rendezvous')).payload.toString());
    for (let j = 1; j < rank; j++) {
      const p = new Peer(await connectWithRetry(table[j].host, table[j].port, deadline), `rank ${j}`);
      p.send(HELLO, json({ rank, port }));
      peers[j] = p;
    }
    if (expectAccept > 0) await withTimeout(allHello, timeoutMs, `rendezvous: ranks above ${rank} did not connect`);
  }

  const failAll = (e: Error) => peers.forEach((p) => p?.fail(e));
  // a peer lost anywhere fails every pending receive on every connection
  peers.forEach((p) => p?.socket.on('close', () => failAll(new Error(`${p.name} disconnected (the process ended or was killed)`))));
  const next = peers[(rank + 1) % W];
  const prev = peers[(rank - 1 + W) % W];

  const bounds = (n: number, c: number) => [Math.floor((c * n) / W), Math.floor(((c + 1) * n) / W)] as const;
  let seq = 0;

  const group: ProcessGroup & { close(): void } = {
    rank,
    worldSize: W,
    async allReduce(data: Float32Array, op: ReduceOp = 'sum') {
      const what = `allReduce #${seq++}`;
      const out = data.slice();
      if (W === 1) return out;
      const n = out.length;
      for (let s = 0; s < W - 1; s++) {
        const [a, b] = bounds(n, (rank - s + W) % W);
        next!.send(DATA, asBytes(out.subarray(a, b)));
        const [c, d] = bounds(n, (rank - s - 1 + W) % W);
        const got = toFloats((await prev!.recv(timeoutMs, what)).payload, d - c, prev!.name, what);
        for (let i = 0; i < got.length; i++) out[c + i] += got[i];
      }
      for (let s = 0; s < W - 1; s++) {
        const [a, b] = bounds(n, (rank + 1 - s + W) % W);
        next!.send(DATA, asBytes(out.subarray(a, b)));
        const [c, d] = bounds(n, (rank - s + W) % W);
        out.set(toFloats((await prev!.recv(timeoutMs, what)).payload, d - c, prev!.name, what), c);
      }
      if (op === 'mean') for (let i = 0; i < n; i++) out[i] /= W;
      return out;
    },
    async allGather(data: Float32Array) {
      const what = `allGather #${seq++}`;
      const m = data.length;
      const out = new Float32Array(m * W);
      out.set(data, rank * m);
      for (let s = 0; s < W - 1; s++) {
        const sendBlock = (rank - s + W) % W;
        next!.send(DATA, asBytes(out.subarray(sendBlock * m, (sendBlock + 1) * m)));
        const recvBlock = (rank - s - 1 + W) % W;
        out.set(toFloats((await prev!.recv(timeoutMs, what)).payload, m, prev!.name, what), recvBlock * m);
      }
      return out;
    },
    async broadcast(data: Float32Array, root = 0) {
      const what = `broadcast #${seq++}`;
      if (!Number.isInteger(root) || root < 0 || root >= W) throw new Error(`broadcast: root ${root} is not a rank of a group of ${W}`);
      if (rank === root) {
        peers.forEach((p) => p?.send(DATA, asBytes(data)));
        return data.slice();
      }
      return toFloats((await peers[root]!.recv(timeoutMs, what)).payload, data.length, `rank ${root}`, what);
    },
    async barrier() {
      await group.allReduce(new Float32Array(1));
    },
    close() {
      peers.forEach((p) => {
        p?.socket.removeAllListeners('close');
        p?.socket.end(); // end, not destroy: what was written last must still reach the peer
      });
      server.close();
    },
  };
  return group;
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${message} within ${ms / 1000} s`)), ms);
    p.then((v) => (clearTimeout(t), resolve(v)), (e) => (clearTimeout(t), reject(e)));
  });
}
