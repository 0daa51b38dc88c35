// Turns a model name into a local directory: an existing directory as is, else a Hugging Face hub id
// downloaded into the hub cache. The machinery below (cache layout, offline rules, downloads) also serves
// dataset repos (lib/data/hub-dataset.ts). Files land in the hub cache in Python huggingface_hub's layout (blobs/, snapshots/{commit}/,
// refs/{revision}, .no_exist/{commit}/), so Python and this code share one cache. It honours
// HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN and HF_HOME / HF_HUB_CACHE.
//
// Why not @huggingface/hub's downloadFileToCacheDir: it never writes refs/{revision}, so every call
// with a branch name goes to the network (no offline mode, no request-free second call), and it files
// each download under the commit that last touched that file rather than the revision's head commit,
// so config.json and the weights can land in different snapshot directories.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, rename, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { writeAtomic } from '../files.ts';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Tokenizer files fetched when the repo has them. */
export const TOKENIZER_FILES = ['vocab.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const WEIGHT_FILES = ['config.json', 'model.safetensors', 'model.safetensors.index.json'];
const POOLER_FILES = ['pooler_config.json', 'pooler.safetensors'];
/** Every file the default selection looks for; the absent ones are recorded in .no_exist/ so a cache hit can be told apart from a partial download. */
const MODEL_CANDIDATES = [
  ...WEIGHT_FILES,
  ...TOKENIZER_FILES,
  ...POOLER_FILES,
  ...['query_model', 'passage_model'].flatMap((tower) => WEIGHT_FILES.map((f) => `${tower}/${f}`)),
];

export interface ResolveOptions {
  /** The hub cache root (`models--org--name/` lives directly in it), like `--cache_dir`. Default: HF_HUB_CACHE, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Branch, tag or commit hash (default `main`); `name@revision` says the same. */
  revision?: string;
  /** Fetch exactly these repo files (e.g. the tokenizer files) instead of the model; absent ones are skipped. */
  files?: string[];
  /** Hub URL; default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Use the cache only; default: HF_HUB_OFFLINE is 1/true/yes/on. */
  offline?: boolean;
  /** Access token for private or gated repos; default HF_TOKEN. */
  token?: string;
}

/** A hub repo's kind: `models--` / `datasets--` in the cache, `/api/models` / `/api/datasets` on the hub. */
export type RepoType = 'model' | 'dataset';

export interface Sibling {
  rfilename: string;
  blobId?: string;
  size?: number;
  lfs?: { sha256: string; size: number };
}

export const isTrue = (v: string | undefined) => ['1', 'true', 'yes', 'on'].includes((v ?? '').trim().toLowerCase());
const isCommit = (rev: string) => /^[0-9a-f]{40}$/.test(rev);
export const expandHome = (p: string) => (p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p);

/** The Hugging Face hub cache directory, as Python's huggingface_hub computes it. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE;
  if (explicit) return path.resolve(expandHome(explicit));
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.resolve(expandHome(home), 'hub');
}

/** Splits `org/name@revision`; null when the text cannot be a hub model id. */
export function parseHubId(text: string): { repo: string; revision?: string } | null {
  const at = text.lastIndexOf('@');
  const repo = at > 0 ? text.slice(0, at) : text;
  const revision = at > 0 ? text.slice(at + 1) : undefined;
  if (revision === '') return null;
  // The hub's own rule: one or two segments of [A-Za-z0-9._-], no leading/trailing '.'/'-', no '--' or '..'.
  const segment = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$/;
  const parts = repo.split('/');
  if (parts.length > 2 || !parts.every((p) => segment.test(p)) || repo.includes('--') || repo.includes('..')) return null;
  return { repo, revision };
}

/** The repo's folder in the cache: `models--org--name` (`datasets--org--name` for a dataset). */
export function repoCacheDir(cacheDir: string, repo: string, type: RepoType = 'model'): string {
  return path.join(cacheDir, `${type}s--${repo.split('/').join('--')}`);
}

/** Where the hub and the cache are, and how to talk to the hub, from the options and the environment. */
export interface HubSettings {
  cacheDir: string;
  offline: boolean;
  endpoint: string;
  token: string | undefined;
}

export function hubSettings(options: Pick<ResolveOptions, 'cacheDir' | 'endpoint' | 'offline' | 'token'>): HubSettings {
  return {
    cacheDir: options.cacheDir ? path.resolve(expandHome(options.cacheDir)) : hubCacheDir(),
    offline: options.offline ?? isTrue(process.env.HF_HUB_OFFLINE),
    endpoint: (options.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ''),
    token: options.token ?? (process.env.HF_TOKEN || undefined),
  };
}

function checkRelative(file: string): void {
  if (path.isAbsolute(file) || file.split(/[\\/]/).some((p) => p === '..' || p === '')) throw new Error(`file "${file}": not a path inside a repo; name repo files like "vocab.txt" or "query_model/config.json"`);
}

/** What is in one snapshot of the cache, and what still has to be fetched. */
export class Snapshot {
  constructor(readonly storage: string, readonly commit: string) {}
  get dir(): string {
    return path.join(this.storage, 'snapshots', this.commit);
  }
  has(file: string): boolean {
    return existsSync(path.join(this.dir, file)); // follows the symlink: a dangling link to a lost blob is a miss
  }
  knownAbsent(file: string): boolean {
    return existsSync(path.join(this.storage, '.no_exist', this.commit, file));
  }
  /** Shards named by a cached index, or null when the index is unreadable. */
  shards(index: string): string[] | null {
    try {
      const map = JSON.parse(readFileSync(path.join(this.dir, index), 'utf8')).weight_map as Record<string, string>;
      const base = path.posix.dirname(index);
      return [...new Set(Object.values(map))].map((s) => (base === '.' ? s : `${base}/${s}`));
    } catch {
      return null;
    }
  }
  /** Missing parts of a model in `base` ('' for the root), or null when it has no model at all. */
  private modelGaps(base: string): string[] | null {
    const f = (name: string) => (base ? `${base}/${name}` : name);
    if (!this.has(f('config.json'))) return null;
    if (this.has(f('model.safetensors'))) return [];
    if (!this.has(f('model.safetensors.index.json'))) return null;
    const shards = this.shards(f('model.safetensors.index.json'));
    return shards ? shards.filter((s) => !this.has(s)) : [f('model.safetensors.index.json')];
  }
  /** A loadable model is here: a root model, or both untied towers. */
  usableModel(): boolean {
    const root = this.modelGaps('');
    if (root) return root.length === 0;
    const q = this.modelGaps('query_model');
    const p = this.modelGaps('passage_model');
    return !!q && !!p && q.length === 0 && p.length === 0;
  }
  /** Every file of the selection is here or recorded as absent (for the model: plus the shards its indexes name). */
  complete(files: string[] | undefined): boolean {
    const wanted = files ?? MODEL_CANDIDATES;
    if (!wanted.every((f) => this.has(f) || this.knownAbsent(f))) return false;
    if (files) return true;
    const indexes = wanted.filter((f) => f.endsWith('model.safetensors.index.json') && this.has(f));
    return indexes.every((i) => this.shards(i)?.every((s) => this.has(s)) ?? false) && this.usableModel();
  }
  /** Good enough without the network: the model loads (for `files`: at least one of them is here). */
  usable(files: string[] | undefined): boolean {
    return files ? files.some((f) => this.has(f)) : this.usableModel();
  }
}

export function cachedSnapshot(storage: string, revision: string): Snapshot | null {
  let commit = revision;
  if (!isCommit(revision)) {
    try {
      commit = readFileSync(path.join(storage, 'refs', revision), 'utf8').trim();
    } catch {
      return null;
    }
  }
  const snap = new Snapshot(storage, commit);
  return existsSync(snap.dir) ? snap : null;
}

export class HubClient {
  requests = 0;
  constructor(readonly endpoint: string, readonly token: string | undefined) {}

  /** GET with redirects followed by hand, so the token never travels to another host (the CDN). */
  async get(url: string): Promise<Response> {
    const origin = new URL(this.endpoint).origin;
    let current = url;
    for (let hop = 0; hop < 10; hop++) {
      const sameHost = new URL(current).origin === origin;
      const headers: Record<string, string> = { 'user-agent': 'tevatron-ts' };
      if (this.token && sameHost) headers.authorization = `Bearer ${this.token}`;
      this.requests++;
      const res = await fetch(current, { headers, redirect: 'manual' });
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        current = new URL(location, current).toString();
        continue;
      }
      return res;
    }
    throw new Error(`${url}: more than 10 redirects`);
  }
}

export async function describeFailure(res: Response): Promise<string> {
  const code = res.headers.get('x-error-code');
  const message = res.headers.get('x-error-message') ?? (await res.text().catch(() => '')).slice(0, 200).trim();
  return `${res.status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}`;
}

/** Fetches one repo file into blobs/ and links it from the snapshot (a no-op when it is there). */
export async function download(client: HubClient, repo: string, snap: Snapshot, file: string, sibling: Sibling | undefined, type: RepoType = 'model'): Promise<void> {
  const target = path.join(snap.dir, file);
  if (existsSync(target)) return;
  const blobs = path.join(snap.storage, 'blobs');
  await mkdir(blobs, { recursive: true });
  let etag = sibling?.lfs?.sha256 ?? sibling?.blobId;
  if (!etag || !existsSync(path.join(blobs, etag))) {
    const url = `${client.endpoint}/${type === 'dataset' ? 'datasets/' : ''}${repo}/resolve/${snap.commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
    const res = await client.get(url);
    if (!res.ok || !res.body) throw new Error(`${repo}: downloading ${file} failed: ${url} returned ${await describeFailure(res)}; try again, or check HF_ENDPOINT / HF_TOKEN`);
    const headerTag = (res.headers.get('x-linked-etag') ?? res.headers.get('etag'))?.replace(/^W\//, '').replace(/"/g, '');
    const tmp = path.join(blobs, `.tmp-${randomBytes(6).toString('hex')}.incomplete`);
    const hash = createHash('sha256');
    let size = 0;
    try {
      const counted = Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>);
      counted.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
      });
      await pipeline(counted, createWriteStream(tmp));
      const expected = sibling?.lfs?.size ?? sibling?.size;
      if (expected !== undefined && size !== expected) throw new Error(`${repo}: ${file} arrived with ${size} bytes, the hub lists ${expected}; the download was cut short, run again`);
      const digest = hash.digest('hex');
      if (sibling?.lfs && digest !== sibling.lfs.sha256) throw new Error(`${repo}: ${file} has sha256 ${digest}, the hub lists ${sibling.lfs.sha256}; the download is corrupt, run again`);
      etag ??= headerTag || digest;
      await rename(tmp, path.join(blobs, etag));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
  await mkdir(path.dirname(target), { recursive: true });
  const blob = path.join(blobs, etag);
  const tmpLink = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await symlink(path.relative(path.dirname(target), blob), tmpLink);
  } catch {
    await copyFile(blob, tmpLink); // filesystems without symlinks (Windows without developer mode)
  }
  await rename(tmpLink, target);
}

export async function markAbsent(snap: Snapshot, file: string): Promise<void> {
  const marker = path.join(snap.storage, '.no_exist', snap.commit, file);
  if (!existsSync(marker)) await writeAtomic(marker, '');
}

export type RepoInfo =
  | { kind: 'ok'; url: string; sha: string; siblings: Map<string, Sibling> }
  | { kind: 'unreachable'; url: string; cause: string }
  /** 401/403/404: no such repo or revision, or private / gated. */
  | { kind: 'missing'; url: string; detail: string }
  | { kind: 'failed'; url: string; detail: string };

/** The commit a revision points at and the files in it (`/api/{models,datasets}/{repo}/revision/{rev}`). */
export async function fetchRepoInfo(client: HubClient, type: RepoType, repo: string, revision: string): Promise<RepoInfo> {
  const url = `${client.endpoint}/api/${type}s/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  let res: Response;
  try {
    res = await client.get(url);
  } catch (e) {
    return { kind: 'unreachable', url, cause: (e as Error & { cause?: Error }).cause?.message ?? (e as Error).message };
  }
  if (res.status === 401 || res.status === 403 || res.status === 404) return { kind: 'missing', url, detail: await describeFailure(res) };
  if (!res.ok) return { kind: 'failed', url, detail: `${url} returned ${await describeFailure(res)}` };
  const info = (await res.json()) as { sha?: string; siblings?: Sibling[] };
  if (!info.sha || !Array.isArray(info.siblings)) return { kind: 'failed', url, detail: `${url} returned no commit sha / file list; is ${client.endpoint} a Hugging Face hub (HF_ENDPOINT)?` };
  return { kind: 'ok', url, sha: info.sha, siblings: new Map(info.siblings.map((s) => [s.rfilename, s])) };
}

/**
 * A local directory for `nameOrPath`: an existing directory is returned as is; a hub id (`bert-base-uncased`,
 * `org/name`, `org/name@revision`) is fetched into the hub cache — config, weights (single file or index +
 * shards), tokenizer files, untied `query_model/` + `passage_model/` and pooler files, those the repo has —
 * and its snapshot directory returned. A complete cached snapshot is used without any network request.
 */
export async function resolveModel(nameOrPath: string, options: ResolveOptions = {}): Promise<string> {
  const local = path.resolve(expandHome(nameOrPath));
  if (existsSync(local)) {
    if (!statSync(local).isDirectory()) throw new Error(`${nameOrPath}: is a file; pass the model directory (with config.json and model.safetensors) or a hub id`);
    return nameOrPath;
  }
  const id = parseHubId(nameOrPath);
  if (!id) throw new Error(`${nameOrPath}: no such directory (${local}), and not a hub model id like "bert-base-uncased" or "org/name[@revision]"; check the path`);
  if (id.revision && options.revision && id.revision !== options.revision) throw new Error(`${nameOrPath}: names revision ${id.revision} but the revision option says ${options.revision}; give one`);
  for (const f of options.files ?? []) checkRelative(f);
  const { repo } = id;
  const revision = options.revision ?? id.revision ?? 'main';
  const { cacheDir, offline, endpoint, token } = hubSettings(options);
  const storage = repoCacheDir(cacheDir, repo);
  const files = options.files;
  const tried = `no local directory ${local}`;

  const cached = cachedSnapshot(storage, revision);
  if (cached && (cached.complete(files) || (offline && cached.usable(files)))) return cached.dir;
  if (offline) {
    const where = cached ? `${cached.dir} is incomplete` : `nothing for revision "${revision}" under ${storage}`;
    throw new Error(`${nameOrPath}: HF_HUB_OFFLINE is set and the cache has ${where} (${tried}); run once with network access (unset HF_HUB_OFFLINE), set --cache_dir / HF_HOME to the cache that holds it, or pass a local directory`);
  }

  const client = new HubClient(endpoint, token);
  const info = await fetchRepoInfo(client, 'model', repo, revision);
  if (info.kind === 'unreachable') {
    if (cached?.usable(files)) return cached.dir; // like huggingface_hub: an unreachable hub falls back to the cache
    throw new Error(`${nameOrPath}: cannot reach the hub at ${endpoint} (${info.cause}); ${tried}, nothing usable in the cache ${storage}. Check the network or HF_ENDPOINT, or pass a local directory`);
  }
  if (info.kind === 'missing') {
    throw new Error(`${nameOrPath}: ${tried}, and the hub has no model "${repo}" at revision "${revision}" (or it is private or gated): ${info.url} returned ${info.detail}; nothing in the cache ${storage}. Check the name and revision; for a private or gated model set HF_TOKEN`);
  }
  if (info.kind === 'failed') throw new Error(`${nameOrPath}: ${info.detail}; try again later, or set HF_HUB_OFFLINE=1 to use the cache ${storage}`);
  const { siblings } = info;
  const infoUrl = info.url;
  const snap = new Snapshot(storage, info.sha);

  const wanted = files ?? MODEL_CANDIDATES;
  const present = wanted.filter((f) => siblings.has(f));
  if (files && present.length === 0) throw new Error(`${nameOrPath}: the repo has none of ${files.join(', ')} at revision ${revision} (${infoUrl})`);
  if (!files) {
    const root = siblings.has('config.json') && (siblings.has('model.safetensors') || siblings.has('model.safetensors.index.json'));
    const untied = ['query_model', 'passage_model'].every((t) => siblings.has(`${t}/config.json`) && (siblings.has(`${t}/model.safetensors`) || siblings.has(`${t}/model.safetensors.index.json`)));
    if (!root && !untied) {
      const bin = [...siblings.keys()].some((f) => /(^|\/)pytorch_model.*\.bin$/.test(f));
      const why = bin
        ? `it has only PyTorch pickle weights (pytorch_model.bin), which cannot be read here; convert it once with: python -c "from transformers import AutoModel; AutoModel.from_pretrained('${repo}').save_pretrained('DIR')" and pass DIR`
        : `it has no config.json + model.safetensors (files: ${[...siblings.keys()].slice(0, 12).join(', ')}${siblings.size > 12 ? ', ...' : ''}); pick a Hugging Face BERT model repo`;
      throw new Error(`${nameOrPath}: cannot use hub repo "${repo}" at revision "${revision}": ${why}`);
    }
  }
  for (const f of present) await download(client, repo, snap, f, siblings.get(f));
  for (const index of present.filter((f) => f.endsWith('.safetensors.index.json'))) {
    const shards = snap.shards(index);
    if (!shards) throw new Error(`${nameOrPath}: ${index} in hub repo "${repo}" is not a valid weight index; the repo is broken, pick another revision`);
    for (const shard of shards) {
      if (!siblings.has(shard)) throw new Error(`${nameOrPath}: ${index} in hub repo "${repo}" names ${shard}, which the repo lacks; the repo is broken, pick another revision`);
      await download(client, repo, snap, shard, siblings.get(shard));
    }
  }
  for (const f of wanted.filter((f) => !siblings.has(f))) await markAbsent(snap, f);
  if (revision !== info.sha) await writeAtomic(path.join(storage, 'refs', revision), info.sha);
  return snap.dir;
}
