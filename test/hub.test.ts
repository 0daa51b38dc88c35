// Hub resolution against a local stand-in for the Hugging Face hub (node:http on 127.0.0.1): the API's
// revision listing, /{repo}/resolve/{commit}/{file}, LFS files redirected to a second "CDN" server. Checks
// the cache layout, the loaded weights, request-free cache hits, HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN
// and the errors. Only 127.0.0.1 is ever contacted: fetch is wrapped to refuse anything else.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, lstatSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, unlink } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelDir, saveModelDir } from '../lib/model/checkpoint.ts';
import { hubCacheDir, parseHubId, repoCacheDir, resolveModel } from '../lib/model/hub.ts';
import type { ParamMap } from '../lib/model/types.ts';
import * as tf from '@tensorflow/tfjs';
import { disposeAll, loopbackOnlyFetch, rejects, withEnv } from './helpers.ts';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/checkpoint');
loopbackOnlyFetch();

type Files = Record<string, Uint8Array>;
interface Repo {
  refs: Record<string, string>;
  commits: Record<string, Files>;
}

const sha1 = (b: Uint8Array) => createHash('sha1').update(b).digest('hex');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const isLfs = (file: string) => file.endsWith('.safetensors');

async function readTree(dir: string, base = ''): Promise<Files> {
  const out: Files = {};
  for (const e of await readdir(path.join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) Object.assign(out, await readTree(dir, rel));
    else out[rel] = new Uint8Array(await readFile(path.join(dir, rel)));
  }
  return out;
}

const text = (s: string) => new TextEncoder().encode(s);
const TOKENIZER: Files = { 'vocab.txt': text(`[PAD]\n[UNK]\n[CLS]\n[SEP]\n${Array.from({ length: 26 }, (_, i) => String.fromCharCode(97 + i)).join('\n')}\n`), 'tokenizer_config.json': text('{"do_lower_case": true}\n') };
const commit = (seed: string) => sha1(text(seed));
const MAIN = commit('main');
const V1 = commit('v1');

interface Hub {
  url: string;
  repos: Record<string, Repo>;
  /** Every request either server saw: path and whether it carried a token. */
  log: { server: string; path: string; auth?: string }[];
  close(): Promise<void>;
}

async function listen(handler: http.RequestListener): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer(handler);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function startHub(repos: Record<string, Repo>): Promise<Hub> {
  const log: Hub['log'] = [];
  const blobs = new Map<string, Uint8Array>();
  const cdn = await listen((req, res) => {
    log.push({ server: 'cdn', path: req.url!, auth: req.headers.authorization });
    const body = blobs.get(req.url!.slice(1));
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': body.length, etag: `"cdn-${sha256(body).slice(0, 8)}"` }).end(body);
  });
  const hub = await listen((req, res) => {
    const url = new URL(req.url!, 'http://127.0.0.1');
    log.push({ server: 'hub', path: url.pathname, auth: req.headers.authorization });
    const notFound = (code: string, message: string) => res.writeHead(404, { 'x-error-code': code, 'x-error-message': message, 'content-type': 'application/json' }).end(JSON.stringify({ error: message }));
    const api = /^\/api\/models\/(.+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const m = api ?? resolve;
    if (!m) return notFound('EndpointNotFound', 'no such endpoint');
    const repo = repos[m[1]];
    if (!repo) return notFound('RepoNotFound', 'Repository not found');
    const rev = decodeURIComponent(m[2]);
    const sha = repo.refs[rev] ?? (repo.commits[rev] ? rev : undefined);
    if (!sha) return notFound('RevisionNotFound', `Invalid rev id: ${rev}`);
    const files = repo.commits[sha];
    if (api) {
      const siblings = Object.entries(files).map(([name, b]) => ({ rfilename: name, blobId: sha1(b), size: b.length, ...(isLfs(name) ? { lfs: { sha256: sha256(b), size: b.length, pointerSize: 134 } } : {}) }));
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: m[1], sha, siblings }));
    }
    const file = m[3].split('/').map(decodeURIComponent).join('/');
    const body = files[file];
    if (!body) return notFound('EntryNotFound', `${file} does not exist on "${rev}"`);
    if (isLfs(file)) {
      blobs.set(sha256(body), body);
      return void res.writeHead(302, { location: `${cdn.url}/${sha256(body)}`, 'x-repo-commit': sha, 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': body.length }).end();
    }
    res.writeHead(200, { 'content-length': body.length, etag: `"${sha1(body)}"`, 'x-repo-commit': sha }).end(body);
  });
  return {
    url: hub.url,
    repos,
    log,
    close: async () => {
      await new Promise((ok) => hub.server.close(ok));
      await new Promise((ok) => cdn.server.close(ok));
    },
  };
}

const tempDir = () => mkdtemp(path.join(os.tmpdir(), 'tevatron-hub-'));

async function assertSameParams(a: ParamMap, b: ParamMap, what: string): Promise<void> {
  assert.equal(Object.keys(a).sort(), Object.keys(b).sort(), `${what}: names`);
  for (const name of Object.keys(b)) {
    assert.equal(Array.from(await a[name].data()), Array.from(await b[name].data()), `${what}: ${name}`);
  }
}

/** The hub variables a test starts from (unset). */
const CLEAN_ENV = { HF_ENDPOINT: undefined, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined, HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined };

let hub: Hub;
let work: string;

test.before(async () => {
  work = await tempDir();
  const untied = await loadModelDir(path.join(FIXTURES, 'untied'));
  const pooler = { config: { input_dim: 16, output_dim: 16, tied: false, normalize: true }, params: { 'linear_q.weight': tf.ones([16, 16]), 'linear_q.bias': tf.zeros([16]), 'linear_p.weight': tf.eye(16), 'linear_p.bias': tf.ones([16]) } };
  await saveModelDir(path.join(work, 'untied'), { ...untied, pooler });
  disposeAll(untied.params, pooler.params);
  hub = await startHub({
    'org/tiny': { refs: { main: MAIN, v1: V1 }, commits: { [MAIN]: { ...(await readTree(path.join(FIXTURES, 'sharded'))), ...TOKENIZER }, [V1]: await readTree(path.join(FIXTURES, 'f16')) } },
    'bert-tiny': { refs: { main: MAIN }, commits: { [MAIN]: { ...(await readTree(path.join(FIXTURES, 'f32'))), ...TOKENIZER } } },
    'org/untied': { refs: { main: MAIN }, commits: { [MAIN]: { ...(await readTree(path.join(work, 'untied'))), ...TOKENIZER } } },
    'org/bin-only': { refs: { main: MAIN }, commits: { [MAIN]: { 'config.json': text('{}'), 'pytorch_model.bin': text('pickle') } } },
  });
});

test.after(async () => {
  await hub.close();
  await rm(work, { recursive: true, force: true });
});

test('parseHubId and the default cache directory follow huggingface_hub', () => {
  assert.equal(parseHubId('bert-base-uncased'), { repo: 'bert-base-uncased', revision: undefined });
  assert.equal(parseHubId('org/name@v1.0'), { repo: 'org/name', revision: 'v1.0' });
  for (const bad of ['a/b/c', '/abs/path', './x', '../x', 'a--b', 'name@', '-x', 'a b']) assert.is(parseHubId(bad), null, bad);
  assert.is(hubCacheDir({ HF_HOME: '/h' }), '/h/hub');
  assert.is(hubCacheDir({ HF_HOME: '/h', HF_HUB_CACHE: '/c' }), '/c');
  assert.is(hubCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/huggingface/hub');
  assert.is(hubCacheDir({}), path.join(os.homedir(), '.cache/huggingface/hub'));
  assert.is(repoCacheDir('/c', 'org/name'), '/c/models--org--name');
});

test('downloads a sharded model into the cache layout; the weights equal the served ones; a second call makes no request', async () => {
  const cache = await tempDir();
  try {
    await withEnv({ ...CLEAN_ENV, HF_ENDPOINT: hub.url }, async () => {
      const start = hub.log.length;
      const dir = await resolveModel('org/tiny', { cacheDir: cache });
      const storage = path.join(cache, 'models--org--tiny');
      assert.is(dir, path.join(storage, 'snapshots', MAIN));
      assert.is(readFileSync(path.join(storage, 'refs/main'), 'utf8'), MAIN);
      const served = hub.repos['org/tiny'].commits[MAIN];
      assert.equal((await readdir(dir)).sort(), Object.keys(served).sort(), 'exactly the served files');
      for (const [file, body] of Object.entries(served)) {
        const link = path.join(dir, file);
        assert.ok(lstatSync(link).isSymbolicLink(), `${file} is a link into blobs/`);
        const blob = isLfs(file) ? sha256(body) : sha1(body);
        assert.is(readlinkSync(link), `../../blobs/${blob}`, `${file} -> blob named by its etag`);
        assert.equal(new Uint8Array(readFileSync(link)), body, `${file} bytes`);
      }
      assert.ok(existsSync(path.join(storage, '.no_exist', MAIN, 'tokenizer.json')), 'absent optional file recorded');
      assert.ok(existsSync(path.join(storage, '.no_exist', MAIN, 'query_model/config.json')));
      const requests = hub.log.slice(start);
      assert.is(requests.filter((r) => r.server === 'hub' && r.path.startsWith('/api/')).length, 1, 'one listing');
      assert.is(requests.filter((r) => r.server === 'cdn').length, 3, 'three shards via the CDN redirect');
      assert.ok(requests.every((r) => r.path.includes('/api/') || r.path.includes(MAIN) || r.server === 'cdn'), 'files fetched by commit, not by branch');

      const got = await loadModelDir(dir);
      const want = await loadModelDir(path.join(FIXTURES, 'sharded'));
      await assertSameParams(got.params, want.params, 'served weights');
      disposeAll(got.params, want.params);

      const before = hub.log.length;
      assert.is(await resolveModel('org/tiny', { cacheDir: cache }), dir);
      assert.is(await resolveModel('org/tiny@main', { cacheDir: cache }), dir);
      assert.is(await resolveModel('org/tiny', { cacheDir: cache, revision: MAIN }), dir);
      assert.is(hub.log.length, before, 'cache hits make no request');
    });
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('revisions: @tag and the revision option give their own snapshot; a conflict is an error', async () => {
  const cache = await tempDir();
  try {
    const dir = await resolveModel('org/tiny@v1', { cacheDir: cache, endpoint: hub.url });
    assert.is(dir, path.join(cache, 'models--org--tiny/snapshots', V1));
    assert.is(readFileSync(path.join(cache, 'models--org--tiny/refs/v1'), 'utf8'), V1);
    const got = await loadModelDir(dir);
    const want = await loadModelDir(path.join(FIXTURES, 'f16'));
    await assertSameParams(got.params, want.params, 'v1 weights');
    disposeAll(got.params, want.params);
    assert.is(await resolveModel('org/tiny', { cacheDir: cache, endpoint: hub.url, revision: 'v1' }), dir);
    await rejects(resolveModel('org/tiny@v1', { cacheDir: cache, revision: 'main' }), /names revision v1 but the revision option says main/, 'conflict');
    await rejects(resolveModel('org/tiny@nope', { cacheDir: cache, endpoint: hub.url }), /revision "nope".*404 RevisionNotFound/, 'unknown revision');
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('HF_HUB_OFFLINE=1 resolves from the cache without requests and fails clearly on a miss', async () => {
  const cache = await tempDir();
  try {
    await resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url });
    const before = hub.log.length;
    await withEnv({ ...CLEAN_ENV, HF_HUB_OFFLINE: '1', HF_ENDPOINT: hub.url }, async () => {
      const dir = await resolveModel('bert-tiny', { cacheDir: cache });
      assert.is(dir, path.join(cache, 'models--bert-tiny/snapshots', MAIN));
      const msg = await rejects(resolveModel('org/tiny', { cacheDir: cache }), /org\/tiny: HF_HUB_OFFLINE is set/, 'offline miss');
      assert.ok(msg.includes(path.join(cache, 'models--org--tiny')) && msg.includes('no local directory'), msg);
      // A snapshot that lost a file no longer loads: offline says so instead of returning it.
      await unlink(path.join(dir, 'model.safetensors'));
      await rejects(resolveModel('bert-tiny', { cacheDir: cache }), /HF_HUB_OFFLINE is set.*snapshots.*is incomplete/, 'offline partial');
    });
    assert.is(hub.log.length, before, 'offline makes no request');
    // Online again, only the lost file is fetched (its blob is still there: nothing but the listing).
    const dir = await resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url });
    assert.ok(existsSync(path.join(dir, 'model.safetensors')));
    assert.equal(hub.log.slice(before).map((r) => r.path), [`/api/models/bert-tiny/revision/main`]);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('the default cache is $HF_HOME/hub; HF_TOKEN goes to the hub and never to the CDN', async () => {
  const home = await tempDir();
  try {
    await withEnv({ ...CLEAN_ENV, HF_HOME: home, HF_ENDPOINT: `${hub.url}/`, HF_TOKEN: 'hf_secret' }, async () => {
      const start = hub.log.length;
      const dir = await resolveModel('org/tiny');
      assert.is(dir, path.join(home, 'hub/models--org--tiny/snapshots', MAIN));
      const requests = hub.log.slice(start);
      assert.ok(requests.filter((r) => r.server === 'hub').every((r) => r.auth === 'Bearer hf_secret'), 'token sent to the hub');
      assert.ok(requests.filter((r) => r.server === 'cdn').every((r) => r.auth === undefined), 'token not sent across origins');
    });
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

test('untied repo: query_model/, passage_model/ and the pooler files are fetched and load', async () => {
  const cache = await tempDir();
  try {
    const dir = await resolveModel('org/untied', { cacheDir: cache, endpoint: hub.url });
    assert.equal((await readdir(dir)).sort(), ['passage_model', 'pooler.safetensors', 'pooler_config.json', 'query_model', 'tokenizer_config.json', 'vocab.txt']);
    const got = await loadModelDir(dir);
    const want = await loadModelDir(path.join(work, 'untied'));
    assert.is(got.untied, true);
    await assertSameParams(got.params, want.params, 'untied');
    await assertSameParams(got.pooler!.params, want.pooler!.params, 'pooler');
    disposeAll(got.params, want.params, got.pooler!.params, want.pooler!.params);
    const before = hub.log.length;
    await resolveModel('org/untied', { cacheDir: cache, endpoint: hub.url });
    assert.is(hub.log.length, before);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('files: fetches only the named files (tokenizer), absent ones skipped', async () => {
  const cache = await tempDir();
  try {
    const dir = await resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url, files: ['vocab.txt', 'tokenizer.json'] });
    assert.equal(await readdir(dir), ['vocab.txt']);
    const before = hub.log.length;
    await resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url, files: ['vocab.txt', 'tokenizer.json'] });
    assert.is(hub.log.length, before, 'cached, and tokenizer.json known absent');
    await rejects(resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url, files: ['merges.txt'] }), /has none of merges\.txt/, 'none present');
    await rejects(resolveModel('bert-tiny', { cacheDir: cache, files: ['../x'] }), /not a path inside a repo/, 'escaping path');
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('clear errors: unknown repo (404), pickle-only repo, a bad local path, an unreachable hub; a directory is used as is', async () => {
  const cache = await tempDir();
  try {
    const msg = await rejects(resolveModel('org/missing', { cacheDir: cache, endpoint: hub.url }), /org\/missing: no local directory .*org\/missing, and the hub has no model "org\/missing" at revision "main"/, '404');
    assert.ok(msg.includes(`${hub.url}/api/models/org/missing/revision/main?blobs=true returned 404 RepoNotFound`), msg);
    assert.ok(msg.includes(path.join(cache, 'models--org--missing')) && msg.includes('HF_TOKEN'), msg);
    await rejects(resolveModel('org/bin-only', { cacheDir: cache, endpoint: hub.url }), /pytorch_model\.bin.*AutoModel\.from_pretrained\('org\/bin-only'\)\.save_pretrained/, 'bin only');
    const before = hub.log.length;
    await rejects(resolveModel('./no/such/dir', { cacheDir: cache, endpoint: hub.url }), /no such directory .* and not a hub model id/, 'bad path');
    assert.is(hub.log.length, before, 'a path is not sent to the hub');
    assert.is(await resolveModel(path.join(FIXTURES, 'f32'), { cacheDir: cache, endpoint: hub.url }), path.join(FIXTURES, 'f32'));
    assert.is(hub.log.length, before, 'a local directory needs no request');
    await rejects(resolveModel('org/tiny', { cacheDir: cache, endpoint: 'http://127.0.0.1:1' }), /cannot reach the hub at http:\/\/127\.0\.0\.1:1/, 'unreachable');
    // With the model cached, an unreachable hub falls back to the cache (huggingface_hub does the same).
    const dir = await resolveModel('bert-tiny', { cacheDir: cache, endpoint: hub.url });
    await unlink(path.join(cache, 'models--bert-tiny/.no_exist', MAIN, 'tokenizer.json')); // makes the snapshot look incomplete
    assert.is(await resolveModel('bert-tiny', { cacheDir: cache, endpoint: 'http://127.0.0.1:1' }), dir);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test.run();
