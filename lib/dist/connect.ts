// Joins the process group of a multi-process run, as --ddp_backend says: tcp (lib/dist/tcp.ts: authenticated,
// for ranks on one host and the wasm and cpu backends) or tensorflow (lib/dist/tensorflow.ts: TensorFlow's
// collective runtime, gRPC between hosts, NCCL between GPUs). Every run starts with the TCP group's
// authenticated rendezvous, where each rank says which address it reaches MASTER_ADDR from (its host, as
// the others see it) and a free port for a TensorFlow server. `auto` picks tensorflow when those addresses
// differ (the ranks span hosts) and every rank can run it (the tensorflow backend is built and chosen),
// tcp otherwise. The TensorFlow servers, unauthenticated, start only after that exchange, and only then.
import { lookup } from 'node:dns/promises';
import dgram from 'node:dgram';
import net from 'node:net';
import { backendInfo, requestedBackend, tensorflowBuilt, type BackendChoice } from '../backend.ts';
import type { RankInfo } from './env.ts';
import { singleProcessGroup, type GroupOptions, type ProcessGroup } from './group.ts';
import { connectTcpGroup } from './tcp.ts';
import { startTensorflowWorker, tensorflowGroup, type TensorflowGroup, type TensorflowGroupOptions } from './tensorflow.ts';

export type DdpBackend = 'auto' | 'tensorflow' | 'tcp';
export const DDP_BACKENDS: readonly DdpBackend[] = ['auto', 'tensorflow', 'tcp'];

export interface ConnectOptions extends GroupOptions, TensorflowGroupOptions {
  ddpBackend?: DdpBackend;
  /** --backend: the tensorflow group runs on the tensorflow backend only. */
  backend?: BackendChoice;
  /** The job's secret (default: TEVATRON_JOB_SECRET). */
  secret?: string;
}

export interface ConnectedGroup {
  group: ProcessGroup;
  /** For the training log: `tcp (…)` or `tensorflow (…)`. */
  description: string;
}

/** What each rank tells the others at the rendezvous. */
interface Peer {
  host: string;
  port: number;
  tensorflow: boolean;
}

const PEER_BYTES = 256;

/** The address this host uses to reach `target` (a connected UDP socket sends nothing). */
export async function addressTowards(target: string): Promise<string> {
  const { address, family } = net.isIP(target) ? { address: target, family: net.isIP(target) } : await lookup(target);
  const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(9, address, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

/** A port free on every interface right now (TensorFlow's server binds all of them, IPv4 and IPv6). */
async function freeServerPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Every rank's `peer`, through the group's allGather (one byte per float: the bytes arrive as sent). */
export async function exchangePeers(group: ProcessGroup, peer: Peer): Promise<Peer[]> {
  const bytes = Buffer.from(JSON.stringify(peer));
  if (bytes.length > PEER_BYTES) throw new Error(`the address ${peer.host} is too long to exchange`);
  const all = await group.allGather(Float32Array.from({ length: PEER_BYTES }, (_, i) => bytes[i] ?? 0));
  return Array.from({ length: group.worldSize }, (_, r) => {
    const mine = Array.from(all.subarray(r * PEER_BYTES, (r + 1) * PEER_BYTES));
    const end = mine.indexOf(0);
    const text = Buffer.from(mine.slice(0, end < 0 ? PEER_BYTES : end)).toString('utf8');
    let p: Peer;
    try {
      p = JSON.parse(text);
    } catch {
      throw new Error(`rendezvous: rank ${r} sent an address that is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    }
    if (typeof p !== 'object' || p === null || !net.isIP(String(p.host)) || !Number.isInteger(p.port) || p.port < 1 || p.port > 65535 || typeof p.tensorflow !== 'boolean') {
      throw new Error(`rendezvous: rank ${r} sent ${JSON.stringify(text.slice(0, 80))}, not {host, port, tensorflow}`);
    }
    return { host: p.host, port: p.port, tensorflow: p.tensorflow };
  });
}

const hostPort = (p: Peer) => (net.isIPv6(p.host) ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`);
const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

/**
 * The group of this rank (`info` from rankFromEnv). Call before initBackend: the tensorflow group starts
 * the tensorflow backend itself, with its context made a TensorFlow worker.
 */
export async function connectGroup(info: RankInfo, opts: ConnectOptions = {}): Promise<ConnectedGroup> {
  const choice = opts.ddpBackend ?? 'auto';
  if (!DDP_BACKENDS.includes(choice)) throw new Error(`--ddp_backend ${choice}: use one of ${DDP_BACKENDS.join(', ')}`);
  if (info.worldSize === 1) return { group: singleProcessGroup(), description: 'none (1 process)' };
  const backend = requestedBackend(opts.backend);
  if (choice === 'tensorflow' && backend !== 'auto' && backend !== 'tensorflow') {
    throw new Error(`--ddp_backend tensorflow runs on the tensorflow backend, not ${backend}: use --backend tensorflow (or auto), or --ddp_backend tcp`);
  }
  let tfGroup: TensorflowGroup | null = null;
  const control = await connectTcpGroup(info, {
    timeoutMs: opts.timeoutMs,
    secret: opts.secret,
    onFailure: (e) => (tfGroup ? tfGroup.controlFailed(e) : opts.onFailure?.(e)),
  });
  try {
    const me: Peer = {
      host: await addressTowards(info.masterAddr),
      port: await freeServerPort(),
      tensorflow: backend === 'tensorflow' || (backend === 'auto' && tensorflowBuilt()),
    };
    const peers = await exchangePeers(control, me);
    const hosts = new Set(peers.map((p) => p.host)).size;
    const where = `${plural(info.worldSize, 'rank')} on ${plural(hosts, 'host')}`;
    const useTensorflow = choice === 'tensorflow' || (choice === 'auto' && hosts > 1 && peers.every((p) => p.tensorflow));
    if (!useTensorflow) {
      const why = choice === 'auto' ? (hosts > 1 ? ', auto: not every rank has the tensorflow backend' : ', auto: one host') : '';
      return { group: control, description: `tcp (${where}, authenticated connections to ${info.masterAddr}${why})` };
    }
    const addresses = peers.map(hostPort);
    await startTensorflowWorker(addresses, info.rank);
    await control.barrier(); // every server is up before the first collective
    tfGroup = await tensorflowGroup(control, addresses, opts);
    const gpu = backendInfo().device === 'gpu';
    return {
      group: tfGroup,
      description: `tensorflow (${where}, TensorFlow's collectives over ${gpu ? 'NCCL between GPUs' : 'a gRPC ring'}; its servers ${addresses.join(', ')} listen on every interface, unauthenticated: trusted networks only)`,
    };
  } catch (e) {
    control.abort(e as Error);
    throw e;
  }
}
