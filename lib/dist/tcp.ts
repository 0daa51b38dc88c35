// A process group over TCP (node:net, no native dependency): a full mesh of connections made through
// a rendezvous at MASTER_ADDR:MASTER_PORT, ring all-reduce and all-gather (each rank sends and
// receives 2·(W−1)/W of the buffer, whatever W), direct broadcast.
// Nothing is trusted before it is proved: sockets listen on MASTER_ADDR's interface only (and close once
// the mesh is built); every connection first passes an HMAC challenge-response on the job's secret in both
// directions (auth.ts); every frame's type and length are checked against what the connection may send
// at that moment before anything is buffered, and its JSON against its shape. A bad connection is closed
// with a logged reason and never reaches a collective. Once joined, peers are watched: a dead peer (closed
// socket) fails the group at once, a silent one (stopped, frozen) after the timeout, naming the rank.
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { JOB_ID_BYTES, MAC_BYTES, NONCE_BYTES, SECRET_VAR, jobId, jobSecret, newNonce, proof, proofMatches } from './auth.ts';
import type { RankInfo } from './env.ts';
import { DEFAULT_TIMEOUT_MS, singleProcessGroup, type GroupOptions, type ProcessGroup, type ReduceOp } from './group.ts';
import { heartbeatPeriodMs, watchPeers, type PeerWatchdog } from './watchdog.ts';

/** Frame types: [type u8][payload length u32 LE][payload]. */
export const FRAME = { CHALLENGE: 1, RESPONSE: 2, PROOF: 3, HELLO: 4, WELCOME: 5, REFUSE: 6, TABLE: 7, DATA: 8, HEARTBEAT: 9, ABORT: 10, BYE: 11 } as const;
const MAGIC = Buffer.from('TVTS');
const VERSION = 1;
const HEADER = 5;
const CHALLENGE_BYTES = MAGIC.length + 1 + JOB_ID_BYTES + NONCE_BYTES;
const RESPONSE_BYTES = JOB_ID_BYTES + NONCE_BYTES + MAC_BYTES;
const TEXT_MAX = 4096; // HELLO, REFUSE, ABORT
const TABLE_MAX = 1 << 20;
const DATA_MAX = 0xffffffff;
/** What a joined connection may send (TABLE only from rank 0, see `expectTable`). */
const JOINED: Limits = { [FRAME.DATA]: DATA_MAX, [FRAME.HEARTBEAT]: 0, [FRAME.ABORT]: TEXT_MAX, [FRAME.BYE]: 0 };

export interface TcpGroupOptions extends GroupOptions {
  /** The job's secret (default: TEVATRON_JOB_SECRET from the environment). */
  secret?: string;
  /** How long a new connection may take to prove itself and say which rank it is (default 30 s, at most the timeout). */
  handshakeTimeoutMs?: number;
  /** How long the ranks may take to start and meet (default: the timeout, and at least 5 minutes). */
  rendezvousTimeoutMs?: number;
  /** Where refused connections are reported (default: stderr). */
  log?: (line: string) => void;
}

export type TcpGroup = ProcessGroup & {
  /** Stops the job on every rank with this error (each peer's fails naming this rank and the message). */
  abort(e: Error): void;
  close(): void;
};

interface Frame {
  type: number;
  payload: Buffer;
}

/** The largest payload of each frame type a connection may send now; a type absent is not allowed now. */
type Limits = Partial<Record<number, number>>;

interface ConnEvents {
  frame(f: Frame): void;
  /** The connection broke, or its peer broke the protocol: `reason` follows the peer's name ("rank 2 <reason>"). */
  lost(reason: string): void;
  bytes(): void;
}

const DISCONNECTED = 'disconnected (the process ended or was killed)';

/** One connection: length-prefixed frames checked against `limits`, and a FIFO of DATA payloads for the collectives. */
class Conn {
  rank = -1;
  failure: Error | null = null;
  /** The peer closed the group in order (BYE): its socket closing is no failure. */
  left = false;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private head: { type: number; need: number } | null = null;
  private queue: Buffer[] = [];
  private waiters: { resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];

  constructor(
    readonly socket: net.Socket,
    public name: string,
    public limits: Limits,
    public on: ConnEvents,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d) => this.onData(d));
    // a reset is how a peer that died with unread data in its buffers disconnects
    socket.on('error', (e: NodeJS.ErrnoException) => this.lose(e.code === 'ECONNRESET' || e.code === 'EPIPE' ? DISCONNECTED : `had a connection error (${e.message})`));
    socket.on('close', () => this.lose(DISCONNECTED));
  }

  private lose(reason: string): void {
    if (!this.failure) this.on.lost(reason);
  }

  private onData(d: Buffer): void {
    if (this.failure) return;
    this.on.bytes();
    this.chunks.push(d);
    this.buffered += d.length;
    try {
      while (!this.failure) {
        if (!this.head) {
          if (this.buffered < HEADER) return;
          if (this.chunks[0].length < HEADER) this.chunks = [Buffer.concat(this.chunks)];
          const type = this.chunks[0][0];
          const length = this.chunks[0].readUInt32LE(1);
          const max = this.limits[type];
          // checked from the header alone, before the payload is waited for or buffered
          if (max === undefined) throw new Error(`sent a frame of type ${type}, which is not expected now`);
          if (length > max) throw new Error(`sent a frame of type ${type} of ${length} bytes, more than the ${max} allowed now`);
          this.head = { type, need: HEADER + length };
        }
        // concatenate once the whole frame is in: joining on every chunk would copy a large frame O(n²) times
        if (this.buffered < this.head.need) return;
        const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
        const frame = { type: this.head.type, payload: all.subarray(HEADER, this.head.need) };
        const rest = all.subarray(this.head.need);
        this.chunks = rest.length ? [rest] : [];
        this.buffered = rest.length;
        this.head = null;
        this.on.frame(frame);
      }
    } catch (e) {
      this.lose((e as Error).message);
    }
  }

  deliver(payload: Buffer): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(payload);
    else this.queue.push(payload);
  }

  /** Fails every pending and later receive; `end` lets what was written last reach the peer first. */
  fail(e: Error, how: 'destroy' | 'end'): void {
    if (this.failure) return;
    this.failure = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
    if (how === 'destroy') this.socket.destroy();
    else endSoon(this.socket);
  }

  send(type: number, payload: Uint8Array = new Uint8Array(0)): void {
    if (this.failure) throw this.failure;
    const head = Buffer.alloc(HEADER);
    head[0] = type;
    head.writeUInt32LE(payload.byteLength, 1);
    this.socket.write(head);
    if (payload.byteLength) this.socket.write(payload);
  }

  /** The next DATA payload; `onTimeout` makes the error (and fails the group) when none comes in time. */
  recv(timeoutMs: number, onTimeout: () => Error): Promise<Buffer> {
    const ready = this.queue.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (b: Buffer) => (clearTimeout(timer), resolve(b)),
        reject: (e: Error) => (clearTimeout(timer), reject(e)),
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(onTimeout());
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

/** Half-closes now and destroys a little later, so that a peer that never closes its side cannot keep us alive. */
function endSoon(socket: net.Socket): void {
  socket.end();
  setTimeout(() => socket.destroy(), 5000).unref();
}

const asBytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** A peer's text, safe to print on one line. */
const printable = (b: Buffer) => b.toString('utf8').replace(/[\x00-\x1f\x7f]/g, ' ');
const quoted = (b: Buffer) => JSON.stringify(b.toString('utf8').slice(0, 80));
const plainHost = (a: string | undefined) => (a ?? '').replace(/^::ffff:/, '');

function parseJson(payload: Buffer, what: string): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch {
    throw new Error(`sent a ${what} that is not JSON: ${quoted(payload)}`);
  }
}

const isInt = (v: unknown, lo: number, hi: number): v is number => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;

interface Hello {
  rank: number;
  worldSize: number;
  port: number;
}

function parseHello(payload: Buffer): Hello {
  const h = parseJson(payload, 'HELLO') as Record<string, unknown>;
  if (typeof h !== 'object' || h === null || Array.isArray(h) || Object.keys(h).length !== 3 || !isInt(h.rank, 0, 1 << 20) || !isInt(h.worldSize, 1, 1 << 20) || !isInt(h.port, 0, 65535)) {
    throw new Error(`sent a HELLO that is not {rank, worldSize, port}: ${quoted(payload)}`);
  }
  return h as unknown as Hello;
}

type Table = { host: string; port: number }[];

function parseTable(payload: Buffer, W: number): Table {
  const t = parseJson(payload, 'TABLE');
  const ok = Array.isArray(t) && t.length === W && t.every((e) => typeof e === 'object' && e !== null && typeof e.host === 'string' && e.host.length <= 255 && isInt(e.port, 0, 65535));
  if (!ok) throw new Error(`sent an address table that is not ${W} entries of {host, port}`);
  return t as Table;
}

function connectWithRetry(host: string, port: number, deadline: number, who: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (e) => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`cannot reach ${who} at ${host}:${port} (${e.message}); check MASTER_ADDR/MASTER_PORT and that ${who} started`));
        else setTimeout(attempt, 200);
      });
    };
    attempt();
  });
}

function listen(server: net.Server, host: string, port: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const why =
        e.code === 'EADDRINUSE'
          ? `port ${port} is in use on ${host} (another job on the same MASTER_PORT, or an earlier run still exiting?); give each job its own MASTER_PORT`
          : e.code === 'EADDRNOTAVAIL'
            ? `${host} is not an address of this host; ${what} must run on the host MASTER_ADDR names`
            : e.message;
      reject(new Error(`cannot listen on ${host}:${port} for ${what}: ${why}`));
    });
    server.listen({ port, host, exclusive: true }, () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** MASTER_ADDR, a host name, as an address to bind to (resolved as the other ranks will resolve it). */
async function resolveHost(masterAddr: string): Promise<string> {
  try {
    return (await lookup(masterAddr)).address;
  } catch (e) {
    throw new Error(`MASTER_ADDR ${masterAddr} does not resolve (${(e as Error).message}); set it to rank 0's host name or address`);
  }
}

/**
 * Joins the group described by `info` (every rank calls this) and returns it once all are connected.
 * Every rank needs the same secret (`opts.secret`, else TEVATRON_JOB_SECRET).
 */
export async function connectTcpGroup(info: RankInfo, opts: TcpGroupOptions = {}): Promise<TcpGroup> {
  const { rank, worldSize: W } = info;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const handshakeMs = Math.min(timeoutMs, opts.handshakeTimeoutMs ?? 30_000);
  const log = opts.log ?? ((line: string) => console.error(line));
  if (W === 1) return { ...singleProcessGroup(), close: () => {}, abort: () => {} };
  const secret = opts.secret ?? jobSecret();
  const myJob = jobId(secret);
  const rendezvousMs = opts.rendezvousTimeoutMs ?? Math.max(timeoutMs, 300_000);
  const deadline = Date.now() + rendezvousMs;
  const peers = new Array<Conn | undefined>(W);
  const pending = new Set<Conn>();
  const servers: net.Server[] = [];
  let failure: Error | null = null;
  let closed = false;
  let ready = false; // onFailure is for failures after connectTcpGroup returned; before, it throws
  let dog: PeerWatchdog | null = null;
  let rendezvousFailed: (e: Error) => void = () => {};
  const rendezvousFailure = new Promise<never>((_, reject) => (rendezvousFailed = reject));
  rendezvousFailure.catch(() => {});

  /** The group is dead: tell the peers why (unless they told us), stop everything, fail every receive. */
  const failAll = (e: Error, tellPeers = true) => {
    if (failure || closed) return;
    failure = e;
    dog?.stop();
    for (const p of peers) {
      if (!p || p.failure) continue;
      if (tellPeers) p.send(FRAME.ABORT, Buffer.from(e.message.slice(0, TEXT_MAX)));
      p.fail(e, 'end');
    }
    dropPending();
    rendezvousFailed(e);
    if (ready) opts.onFailure?.(e);
  };
  /** Once every rank that connects here has joined, or the group ends: nothing more to accept. */
  const dropPending = () => {
    for (const s of servers) s.close();
    for (const c of pending) c.fail(new Error('the rendezvous is over'), 'destroy');
    pending.clear();
  };

  /** After the handshake, what every peer may send, on either side of the connection. */
  const joinedFrame = (c: Conn, f: Frame) => {
    if (f.type === FRAME.DATA) c.deliver(f.payload);
    else if (f.type === FRAME.ABORT) failAll(new Error(`${c.name} stopped the job: ${printable(f.payload)}`), false);
    else if (f.type === FRAME.BYE) {
      c.left = true;
      dog?.forget(c.rank);
      c.fail(new Error(`${c.name} closed the group while this rank still expected data from it (do all ranks run the same collectives?)`), 'end');
    }
  };
  const joinedLost = (c: Conn, reason: string) => {
    if (!c.left && !closed) failAll(new Error(`${c.name} ${reason}`));
  };

  /** A connection that has not joined: closed with a logged reason, never a failure of the group. */
  const refuse = (c: Conn, reason: string, tell?: string) => {
    if (c.failure) return;
    pending.delete(c);
    if (!closed && !failure) log(`process group (rank ${rank}): refused ${c.name}, which ${reason}`);
    if (tell) {
      c.send(FRAME.REFUSE, Buffer.from(tell.slice(0, TEXT_MAX)));
      c.fail(new Error(reason), 'end');
    } else c.fail(new Error(reason), 'destroy');
  };

  /**
   * Accepts ranks `from` on a listening socket: challenge, check the answer, prove ourselves, read HELLO.
   * `onJoin` gets each rank once it has joined.
   */
  const acceptRanks = (server: net.Server, from: Set<number>, port: number, onJoin: (c: Conn, h: Hello) => void) => {
    server.on('connection', (socket) => {
      if (failure || closed) return void socket.destroy();
      const serverNonce = newNonce();
      let phase: 'response' | 'hello' | 'joined' = 'response';
      const c: Conn = new Conn(socket, `a connection from ${plainHost(socket.remoteAddress)}:${socket.remotePort} on port ${port}`, { [FRAME.RESPONSE]: RESPONSE_BYTES }, {
        bytes: () => dog?.heard(c.rank),
        lost: (reason) => (phase === 'joined' ? joinedLost(c, reason) : refuse(c, reason === DISCONNECTED ? 'closed it during the handshake' : reason)),
        frame: (f) => {
          if (phase === 'joined') return joinedFrame(c, f);
          if (phase === 'response') {
            if (f.payload.length !== RESPONSE_BYTES) throw new Error(`sent an answer of ${f.payload.length} bytes, not ${RESPONSE_BYTES}`);
            const theirJob = f.payload.subarray(0, JOB_ID_BYTES);
            if (!theirJob.equals(myJob)) return refuse(c, `belongs to another job (job id ${hex(theirJob)}, ours ${hex(myJob)}): two jobs were started on port ${port}`);
            const clientNonce = f.payload.subarray(JOB_ID_BYTES, JOB_ID_BYTES + NONCE_BYTES);
            if (!proofMatches(f.payload.subarray(JOB_ID_BYTES + NONCE_BYTES), proof(secret, 'client', myJob, serverNonce, clientNonce))) {
              return refuse(c, `failed to prove that it knows ${SECRET_VAR}`);
            }
            c.send(FRAME.PROOF, proof(secret, 'server', myJob, serverNonce, clientNonce));
            phase = 'hello';
            c.limits = { [FRAME.HELLO]: TEXT_MAX };
            return;
          }
          const h = parseHello(f.payload);
          const clash = `two jobs with the same ${SECRET_VAR} on port ${port}?`;
          if (h.worldSize !== W) return refuse(c, `says WORLD_SIZE=${h.worldSize}, this rank has ${W}`, `rank ${rank} has WORLD_SIZE=${W}, this rank ${h.worldSize}: start every rank with the same WORLD_SIZE`);
          if (!from.has(h.rank)) return refuse(c, `says it is rank ${h.rank}, which does not connect here`, `rank ${rank} expects ranks ${Math.min(...from)} to ${Math.max(...from)} here, not rank ${h.rank} (${clash})`);
          if (peers[h.rank]) return refuse(c, `says it is rank ${h.rank}, which has already joined (${clash})`, `rank ${h.rank} has already joined rank ${rank} (${clash})`);
          clearTimeout(timer);
          pending.delete(c);
          phase = 'joined';
          c.rank = h.rank;
          c.name = `rank ${h.rank}`;
          c.limits = JOINED;
          peers[h.rank] = c;
          c.send(FRAME.WELCOME);
          onJoin(c, h);
        },
      });
      pending.add(c);
      const timer = setTimeout(() => phase !== 'joined' && refuse(c, `did not complete the handshake within ${handshakeMs / 1000} s`), handshakeMs);
      timer.unref();
      const challenge = Buffer.concat([MAGIC, Buffer.from([VERSION]), myJob, serverNonce]);
      c.send(FRAME.CHALLENGE, challenge);
    });
  };

  /** Connects to rank `to` and proves ourselves: answer its challenge, check its proof, say HELLO, wait for WELCOME. */
  const dial = (host: string, port: number, to: number, socket: net.Socket, hello: Hello, expectTable?: (t: Table) => void): Promise<Conn> => {
    const where = `rank ${to} at ${host}:${port}`;
    let phase: 'challenge' | 'proof' | 'welcome' | 'joined' = 'challenge';
    let clientNonce = Buffer.alloc(0);
    let serverNonce = Buffer.alloc(0);
    return new Promise<Conn>((resolve, reject) => {
      const stop = (e: Error, how: 'destroy' | 'end' = 'destroy') => {
        clearTimeout(timer);
        c.fail(e, how);
        reject(e);
      };
      const c: Conn = new Conn(socket, where, { [FRAME.CHALLENGE]: CHALLENGE_BYTES }, {
        bytes: () => dog?.heard(to),
        lost: (reason) => (phase === 'joined' ? joinedLost(c, reason) : stop(new Error(`${where} ${reason === DISCONNECTED ? 'closed the connection' : reason} during the handshake`))),
        frame: (f) => {
          if (phase === 'joined') {
            if (f.type === FRAME.TABLE) {
              c.limits = JOINED;
              return expectTable!(parseTable(f.payload, W));
            }
            return joinedFrame(c, f);
          }
          if (f.type === FRAME.REFUSE) return stop(new Error(`${where} refused this rank: ${printable(f.payload)}`));
          if (phase === 'challenge') {
            if (f.payload.length !== CHALLENGE_BYTES || !f.payload.subarray(0, MAGIC.length).equals(MAGIC)) {
              return stop(new Error(`${host}:${port} does not speak tevatron-ts's protocol (another program listens on that port?)`));
            }
            if (f.payload[MAGIC.length] !== VERSION) return stop(new Error(`${where} speaks version ${f.payload[MAGIC.length]} of the protocol, this rank ${VERSION}: run the same tevatron-ts on every rank`));
            const theirJob = f.payload.subarray(MAGIC.length + 1, MAGIC.length + 1 + JOB_ID_BYTES);
            if (!theirJob.equals(myJob)) {
              // our job id (with no proof), so that the other job logs the clash too
              c.send(FRAME.RESPONSE, Buffer.concat([myJob, Buffer.alloc(NONCE_BYTES + MAC_BYTES)]));
              return stop(new Error(`port ${port} on ${host} belongs to another job (job id ${hex(theirJob)}, ours ${hex(myJob)}): two jobs were started on the same MASTER_PORT; give each its own (if this is one job, every rank needs the same ${SECRET_VAR})`), 'end');
            }
            serverNonce = Buffer.from(f.payload.subarray(MAGIC.length + 1 + JOB_ID_BYTES));
            clientNonce = newNonce();
            phase = 'proof';
            c.limits = { [FRAME.PROOF]: MAC_BYTES, [FRAME.REFUSE]: TEXT_MAX };
            return c.send(FRAME.RESPONSE, Buffer.concat([myJob, clientNonce, proof(secret, 'client', myJob, serverNonce, clientNonce)]));
          }
          if (phase === 'proof') {
            if (!proofMatches(f.payload, proof(secret, 'server', myJob, serverNonce, clientNonce))) return stop(new Error(`${where} failed to prove that it knows ${SECRET_VAR}`));
            phase = 'welcome';
            c.limits = { [FRAME.WELCOME]: 0, [FRAME.REFUSE]: TEXT_MAX };
            return c.send(FRAME.HELLO, Buffer.from(JSON.stringify(hello)));
          }
          clearTimeout(timer);
          phase = 'joined';
          c.rank = to;
          c.name = `rank ${to}`;
          c.limits = expectTable ? { ...JOINED, [FRAME.TABLE]: TABLE_MAX } : JOINED;
          peers[to] = c;
          resolve(c);
        },
      });
      const timer = setTimeout(() => stop(new Error(`${where} accepted the connection but did not complete the handshake within ${handshakeMs / 1000} s (another program on that port?)`)), handshakeMs);
      timer.unref();
    });
  };

  const guard = <T>(p: Promise<T>, ms: number, message: () => string): Promise<T> => Promise.race([withTimeout(p, ms, message), rendezvousFailure]);

  try {
    if (rank === 0) {
      // an address is bound before anything else is awaited: ranks started in the same process find it listening
      const host = net.isIP(info.masterAddr) ? info.masterAddr : await resolveHost(info.masterAddr);
      const server = net.createServer();
      servers.push(server);
      const port = await listen(server, host, info.masterPort, 'rank 0');
      const hellos: { conn: Conn; hello: Hello }[] = [];
      let allJoined = () => {};
      const joined = new Promise<void>((resolve) => (allJoined = resolve));
      acceptRanks(server, new Set(Array.from({ length: W - 1 }, (_, i) => i + 1)), port, (conn, hello) => {
        hellos.push({ conn, hello });
        if (hellos.length === W - 1) allJoined();
      });
      await guard(joined, rendezvousMs, () => `rendezvous: only ${hellos.length} of ${W - 1} ranks joined rank 0 on ${host}:${port}`);
      dropPending();
      const table: Table = Array.from({ length: W }, (_, r) => {
        const h = hellos.find((x) => x.hello.rank === r);
        return h ? { host: plainHost(h.conn.socket.remoteAddress), port: h.hello.port } : { host: '', port: 0 };
      });
      for (const { conn } of hellos) conn.send(FRAME.TABLE, Buffer.from(JSON.stringify(table)));
    } else {
      const socket = await connectWithRetry(info.masterAddr, info.masterPort, deadline, 'rank 0');
      // Our listening socket goes on the address we reach rank 0 from: the one the others will reach us by.
      let accepted = Promise.resolve();
      let port = 0;
      if (rank < W - 1) {
        const server = net.createServer();
        servers.push(server);
        port = await listen(server, plainHost(socket.localAddress), 0, `rank ${rank}`);
        const from = new Set(Array.from({ length: W - 1 - rank }, (_, i) => rank + 1 + i));
        let count = 0;
        accepted = new Promise<void>((resolve) => acceptRanks(server, from, port, () => ++count === from.size && resolve()));
      }
      const hello = { rank, worldSize: W, port };
      let gotTable: (t: Table) => void = () => {};
      const tablePromise = new Promise<Table>((resolve) => (gotTable = resolve));
      await guard(dial(info.masterAddr, info.masterPort, 0, socket, hello, gotTable), rendezvousMs, () => 'rendezvous: rank 0 did not answer');
      const table = await guard(tablePromise, rendezvousMs, () => `rendezvous: rank 0 did not send the address table (not every rank joined it)`);
      for (let j = 1; j < rank; j++) {
        if (!table[j].host || table[j].port < 1) throw new Error(`rendezvous: rank 0's address table has no address for rank ${j}`);
        const s = await connectWithRetry(table[j].host, table[j].port, deadline, `rank ${j}`);
        await guard(dial(table[j].host, table[j].port, j, s, hello), rendezvousMs, () => `rendezvous: rank ${j} did not answer`);
      }
      await guard(accepted, rendezvousMs, () => `rendezvous: ranks above ${rank} did not connect`);
      dropPending();
    }
  } catch (e) {
    failAll(e as Error, false);
    throw failure ?? e;
  }
  ready = true;

  const silentPeer = (r: number, ms: number) =>
    `rank ${r} has sent nothing for ${(ms / 1000).toFixed(1)} s (timeout ${timeoutMs / 1000} s, --ddp_timeout): it is stopped, frozen, or its host is unreachable`;
  dog = watchPeers({
    ranks: Array.from({ length: W }, (_, r) => r).filter((r) => r !== rank),
    timeoutMs,
    onTick: () => peers.forEach((p) => p && !p.failure && p.send(FRAME.HEARTBEAT)),
    onSilent: (r, ms) => failAll(new Error(silentPeer(r, ms))),
  });

  const next = peers[(rank + 1) % W]!;
  const prev = peers[(rank - 1 + W) % W]!;
  const bounds = (n: number, c: number) => [Math.floor((c * n) / W), Math.floor(((c + 1) * n) / W)] as const;
  let seq = 0;

  /** A receive that names the culprit on timeout: a silent rank if one is (the ring waits on it through others), else the one we waited for. */
  const recvFloats = async (from: Conn, expected: number, what: string): Promise<Float32Array> => {
    const b = await from.recv(timeoutMs, () => {
      const silent = peers.filter((p) => p && !p.left && dog!.silentMs(p.rank) > 3 * heartbeatPeriodMs(timeoutMs)).sort((x, y) => dog!.silentMs(y!.rank) - dog!.silentMs(x!.rank))[0];
      const why = silent
        ? silentPeer(silent.rank, dog!.silentMs(silent.rank))
        : `nothing from ${from.name} within ${timeoutMs / 1000} s (--ddp_timeout), though it is alive: is it stuck, much slower, or running other collectives?`;
      failAll(new Error(`${what}: ${why}`));
      return failure!;
    });
    if (b.length !== expected * 4) throw new Error(`${what}: ${from.name} sent ${b.length / 4} values, expected ${expected} (do all ranks pass buffers of the same length?)`);
    const out = new Float32Array(expected);
    new Uint8Array(out.buffer).set(b);
    return out;
  };

  /** Runs a collective; any error in it fails the whole group (the streams are out of step after it). */
  const collective = async <T>(kind: string, body: (what: string) => Promise<T>): Promise<T> => {
    if (closed) throw new Error(`${kind}: the group was closed`);
    if (failure) throw failure;
    try {
      return await body(`${kind} #${seq++}`);
    } catch (e) {
      failAll(e as Error);
      throw failure ?? e;
    }
  };

  const group: TcpGroup = {
    rank,
    worldSize: W,
    allReduce: (data: Float32Array, op: ReduceOp = 'sum') =>
      collective('allReduce', async (what) => {
        const out = data.slice();
        const n = out.length;
        for (let s = 0; s < W - 1; s++) {
          const [a, b] = bounds(n, (rank - s + W) % W);
          next.send(FRAME.DATA, asBytes(out.subarray(a, b)));
          const [c, d] = bounds(n, (rank - s - 1 + W) % W);
          const got = await recvFloats(prev, d - c, what);
          for (let i = 0; i < got.length; i++) out[c + i] += got[i];
        }
        for (let s = 0; s < W - 1; s++) {
          const [a, b] = bounds(n, (rank + 1 - s + W) % W);
          next.send(FRAME.DATA, asBytes(out.subarray(a, b)));
          const [c, d] = bounds(n, (rank - s + W) % W);
          out.set(await recvFloats(prev, d - c, what), c);
        }
        if (op === 'mean') for (let i = 0; i < n; i++) out[i] /= W;
        return out;
      }),
    allGather: (data: Float32Array) =>
      collective('allGather', async (what) => {
        const m = data.length;
        const out = new Float32Array(m * W);
        out.set(data, rank * m);
        for (let s = 0; s < W - 1; s++) {
          const sendBlock = (rank - s + W) % W;
          next.send(FRAME.DATA, asBytes(out.subarray(sendBlock * m, (sendBlock + 1) * m)));
          const recvBlock = (rank - s - 1 + W) % W;
          out.set(await recvFloats(prev, m, what), recvBlock * m);
        }
        return out;
      }),
    broadcast: async (data: Float32Array, root = 0) => {
      if (!Number.isInteger(root) || root < 0 || root >= W) throw new Error(`broadcast: root ${root} is not a rank of a group of ${W}`);
      return collective('broadcast', async (what) => {
        if (rank !== root) return recvFloats(peers[root]!, data.length, what);
        peers.forEach((p) => p?.send(FRAME.DATA, asBytes(data)));
        return data.slice();
      });
    },
    async barrier() {
      await group.allReduce(new Float32Array(1));
    },
    abort(e: Error) {
      failAll(e);
    },
    close() {
      if (closed) return;
      closed = true;
      dog?.stop();
      dropPending();
      for (const p of peers) {
        if (!p || p.failure) continue;
        p.send(FRAME.BYE);
        p.fail(new Error('the group was closed'), 'end'); // end, not destroy: what was written last must still reach the peer
      }
    },
  };
  return group;
}

function withTimeout<T>(p: Promise<T>, ms: number, message: () => string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${message()} within ${ms / 1000} s`)), ms);
    p.then((v) => (clearTimeout(t), resolve(v)), (e) => (clearTimeout(t), reject(e)));
  });
}
