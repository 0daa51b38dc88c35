// Hub datasets (--dataset_name) against a local stand-in for the Hugging Face hub (node:http on 127.0.0.1):
// /api/datasets/{repo}/revision/{rev} and /datasets/{repo}/resolve/{rev}/{file}, with a script dataset whose
// rows live on the auto-converted parquet branch refs/convert/parquet. The parquet fixture and its JSON Lines
// twin are written by Python (test/fixtures/make_hub_dataset.py); the rows read back must equal the JSON's.
// Only 127.0.0.1 is ever contacted: fetch is wrapped to refuse anything else.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDatasetName, resolveDataset, selectDataFiles, selectParquetExport } from '../lib/data/hub-dataset.ts';
import { listDataFiles, readDataRows, readRows } from '../lib/data/load.ts';
import { loopbackOnlyFetch, withEnv } from './helpers.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIX = path.join(HERE, 'fixtures/hub-dataset');
loopbackOnlyFetch();

const bytes = (f: string) => new Uint8Array(readFileSync(path.join(FIX, f)));
const text = (s: string) => new TextEncoder().encode(s);
const sha1 = (b: Uint8Array) => createHash('sha1').update(b).digest('hex');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const PARQUET = 'refs/convert/parquet';

type Files = Record<string, Uint8Array>;
/** repo → revision → files; a revision's commit is the sha1 of its name. */
type Repos = Record<string, Record<string, Files>>;

const REPOS: Repos = {
  'Tevatron/wikipedia-nq': {
    main: { 'wikipedia-nq.py': text('# a loading script\n'), 'README.md': text('# nq\n') },
    [PARQUET]: { 'default/train/0000.parquet': bytes('nq-tiny.parquet'), 'default/test/0000.parquet': bytes('pretokenized.parquet') },
  },
  'org/mixed': {
    main: { 'data/train-00000-of-00001.parquet': bytes('nq-tiny.parquet'), 'data/test-00000-of-00001.jsonl': bytes('nq-tiny.jsonl'), 'README.md': text('x') },
  },
  'castorini/mr-tydi': {
    main: { 'bengali/train.jsonl': bytes('pretokenized.jsonl'), 'english/train.jsonl': bytes('nq-tiny.jsonl'), 'bengali/test.jsonl': bytes('nq-tiny.jsonl') },
  },
};

let server: http.Server;
let url = '';
const log: { path: string; auth?: string }[] = [];

test.before(async () => {
  server = http.createServer((req, res) => {
    const u = new URL(req.url!, 'http://127.0.0.1');
    log.push({ path: u.pathname, auth: req.headers.authorization });
    const notFound = (code: string, message: string) => res.writeHead(404, { 'x-error-code': code, 'x-error-message': message }).end();
    const api = /^\/api\/datasets\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(u.pathname);
    const resolve = /^\/datasets\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(u.pathname);
    const m = api ?? resolve;
    if (!m) return notFound('EndpointNotFound', 'no such endpoint');
    const repo = REPOS[m[1]];
    if (!repo) return notFound('RepoNotFound', 'Repository not found');
    const rev = decodeURIComponent(m[2]);
    const name = Object.keys(repo).find((r) => r === rev || sha1(text(r)) === rev);
    if (!name) return notFound('RevisionNotFound', `Invalid rev id: ${rev}`);
    const files = repo[name];
    if (api) {
      const siblings = Object.entries(files).map(([f, b]) => ({ rfilename: f, blobId: sha1(b), size: b.length, ...(f.endsWith('.parquet') ? { lfs: { sha256: sha256(b), size: b.length } } : {}) }));
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: m[1], sha: sha1(text(name)), siblings }));
    }
    const body = files[m[3].split('/').map(decodeURIComponent).join('/')];
    if (!body) return notFound('EntryNotFound', 'no such file');
    res.writeHead(200, { 'content-length': body.length, etag: `"${sha1(body)}"` }).end(body);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

test.after(async () => {
  await new Promise((ok) => server.close(ok));
});

const tempDir = () => mkdtempSync(path.join(os.tmpdir(), 'tevatron-hubds-'));

const env = (extra: Record<string, string | undefined> = {}) => ({ HF_ENDPOINT: url, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined, HF_HUB_CACHE: undefined, ...extra });

async function rejects(p: Promise<unknown>, pattern: RegExp, what: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.match((e as Error).message, pattern, `${what}: message was: ${(e as Error).message}`);
    return;
  }
  throw new Error(`${what}: expected an error matching ${pattern}`);
}

const rowsOf = async (file: string) => (await readDataRows(file)).map((r) => r.row);

test('parseDatasetName follows Tevatron v1 (org/name[:config][/split], split train by default)', () => {
  assert.equal(parseDatasetName('Tevatron/wikipedia-nq/test'), { repo: 'Tevatron/wikipedia-nq', config: 'default', split: 'test', revision: undefined });
  assert.equal(parseDatasetName('castorini/mr-tydi:bengali/test'), { repo: 'castorini/mr-tydi', config: 'bengali', split: 'test', revision: undefined });
  assert.equal(parseDatasetName('Tevatron/wikipedia-nq'), { repo: 'Tevatron/wikipedia-nq', config: 'default', split: 'train', revision: undefined });
  assert.equal(parseDatasetName('castorini/mr-tydi:english'), { repo: 'castorini/mr-tydi', config: 'english', split: 'train', revision: undefined });
  assert.throws(() => parseDatasetName('a/b/c/d'), /--dataset_name a\/b\/c\/d: not a hub dataset id/);
  assert.throws(() => parseDatasetName('org/na me'), /not a hub dataset id/);
});

test('file selection: split words, data/{split}-*, config folders, the parquet export layouts', () => {
  const files = ['README.md', 'data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet', 'data/test-00000-of-00001.parquet', 'nq-dev.jsonl.gz', 'dataset_infos.json'];
  assert.equal(selectDataFiles(files, 'default', 'train'), ['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']);
  assert.equal(selectDataFiles(files, 'default', 'validation'), ['nq-dev.jsonl.gz']);
  assert.equal(selectDataFiles(files, 'default', 'contest'), []);
  assert.equal(selectDataFiles(['a.jsonl', 'b.jsonl.gz', 'x/state.json'], 'default', 'train'), ['a.jsonl', 'b.jsonl.gz'], 'no split names: everything is train');
  assert.equal(selectDataFiles(['a.jsonl', 'b.jsonl'], 'default', 'test'), []);
  assert.equal(selectDataFiles(['nq-train.jsonl', 'nq-train.parquet', 'nq-train-2.parquet'], 'default', 'train'), ['nq-train-2.parquet', 'nq-train.parquet'], 'one format');
  assert.equal(selectDataFiles(['bengali/train.jsonl', 'english/train.jsonl'], 'bengali', 'train'), ['bengali/train.jsonl']);
  assert.equal(selectDataFiles(['bengali/train.jsonl'], 'hindi', 'train'), []);
  assert.equal(selectParquetExport(['default/train/0000.parquet', 'default/train/0001.parquet', 'default/test/0000.parquet'], 'default', 'train'), ['default/train/0000.parquet', 'default/train/0001.parquet']);
  assert.equal(selectParquetExport(['plain_text/wikipedia-nq-train.parquet', 'plain_text/wikipedia-nq-test.parquet'], 'default', 'test'), ['plain_text/wikipedia-nq-test.parquet'], 'the only config stands in for default');
  assert.equal(selectParquetExport(['a/train/0.parquet', 'b/train/0.parquet'], 'default', 'train'), [], 'default is ambiguous among two configs');
});

test('parquet rows equal the JSON Lines rows Python wrote (nested lists of structs, empty lists, int64 ids as numbers)', async () => {
  assert.equal(await rowsOf(path.join(FIX, 'nq-tiny.parquet')), readRows(path.join(FIX, 'nq-tiny.jsonl')).map((r) => r.row));
  assert.equal(await rowsOf(path.join(FIX, 'pretokenized.parquet')), readRows(path.join(FIX, 'pretokenized.jsonl')).map((r) => r.row));
  const rows = await readDataRows(path.join(FIX, 'nq-tiny.parquet'));
  assert.is(rows[4].where, `${path.join(FIX, 'nq-tiny.parquet')}: row 5`);
  assert.ok(listDataFiles(FIX).includes(path.join(FIX, 'nq-tiny.parquet')), '--train_dir lists parquet files');
  assert.throws(() => readRows(path.join(FIX, 'nq-tiny.parquet')), /a parquet file; read it with readDataRows/);
});

test('a script dataset resolves through refs/convert/parquet into datasets--org--name; a second call and HF_HUB_OFFLINE make no request', async () => {
  const cache = tempDir();
  try {
    await withEnv(env(), async () => {
      const ds = await resolveDataset('Tevatron/wikipedia-nq', { cacheDir: cache });
      const storage = path.join(cache, 'datasets--Tevatron--wikipedia-nq');
      const commit = sha1(text(PARQUET));
      assert.equal({ config: ds.config, split: ds.split, source: ds.source, commit: ds.commit }, { config: 'default', split: 'train', source: PARQUET, commit });
      assert.equal(ds.files, [path.join(storage, 'snapshots', commit, 'default/train/0000.parquet')]);
      assert.is(readFileSync(path.join(storage, 'refs', PARQUET), 'utf8'), commit);
      assert.is(readlinkSync(ds.files[0]), `../../../../blobs/${sha256(bytes('nq-tiny.parquet'))}`, 'a link into blobs/, named by the LFS sha256');
      assert.equal(await rowsOf(ds.files[0]), readRows(path.join(FIX, 'nq-tiny.jsonl')).map((r) => r.row));

      const before = log.length;
      assert.equal((await resolveDataset('Tevatron/wikipedia-nq', { cacheDir: cache })).files, ds.files);
      await withEnv({ HF_HUB_OFFLINE: '1' }, async () => assert.equal((await resolveDataset('Tevatron/wikipedia-nq/train', { cacheDir: cache })).files, ds.files));
      assert.is(log.length, before, 'no requests once cached');
      await withEnv({ HF_HUB_OFFLINE: '1' }, () =>
        rejects(resolveDataset('Tevatron/wikipedia-nq/test', { cacheDir: cache }), /--dataset_name Tevatron\/wikipedia-nq\/test: HF_HUB_OFFLINE is set and the cache .* holds no complete download of config "default", split "test"/, 'offline miss'),
      );
      assert.is(log.length, before, 'offline: no requests');
      const test = await resolveDataset('Tevatron/wikipedia-nq/test', { cacheDir: cache });
      assert.equal(await rowsOf(test.files[0]), readRows(path.join(FIX, 'pretokenized.jsonl')).map((r) => r.row));
    });
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('data files on main: data/{split}-*.parquet, a jsonl split, a config folder; the token goes along', async () => {
  const cache = tempDir();
  try {
    await withEnv(env({ HF_TOKEN: 'hf_secret' }), async () => {
      const start = log.length;
      const train = await resolveDataset('org/mixed', { cacheDir: cache });
      assert.is(train.source, 'main');
      assert.equal(train.files.map((f) => path.basename(f)), ['train-00000-of-00001.parquet']);
      const testSplit = await resolveDataset('org/mixed/test', { cacheDir: cache });
      assert.equal(await rowsOf(testSplit.files[0]), await rowsOf(train.files[0]), 'the jsonl twin of the parquet file');
      assert.ok(log.slice(start).every((r) => r.auth === 'Bearer hf_secret'), 'HF_TOKEN sent');
      const bn = await resolveDataset('castorini/mr-tydi:bengali', { cacheDir: cache });
      assert.equal(bn.files.map((f) => path.relative(path.join(cache, 'datasets--castorini--mr-tydi/snapshots', bn.commit), f)), ['bengali/train.jsonl']);
      assert.ok(existsSync(path.join(cache, 'datasets--castorini--mr-tydi/refs/main')));
    });
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('errors name the dataset, what was tried and the fix', async () => {
  const cache = tempDir();
  try {
    await withEnv(env(), async () => {
      await rejects(resolveDataset('org/missing', { cacheDir: cache }), /--dataset_name org\/missing: the hub has no dataset "org\/missing" at revision "main" .*404 RepoNotFound.*HF_TOKEN/, 'no repo');
      await rejects(
        resolveDataset('org/mixed/validation', { cacheDir: cache }),
        /--dataset_name org\/mixed\/validation: found no data files for config "default", split "validation" in hub dataset "org\/mixed": revision "main" has data files data\/test-00000-of-00001.jsonl, data\/train-00000-of-00001.parquet; no parquet export \(refs\/convert\/parquet\); pick a config\/split/,
        'no such split',
      );
      await rejects(resolveDataset('Tevatron/wikipedia-nq:fr/train', { cacheDir: cache }), /refs\/convert\/parquet has configs \[default\]/, 'no such config');
    });
    await withEnv(env({ HF_ENDPOINT: 'http://127.0.0.1:9' }), () => rejects(resolveDataset('org/mixed', { cacheDir: cache }), /--dataset_name org\/mixed: cannot reach the hub at http:\/\/127.0.0.1:9 .*--train_dir/, 'unreachable'));
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('scripts/train.ts --dataset_name trains from the hub dataset (one step); with --train_dir too, the local files win', async () => {
  const work = tempDir();
  try {
    const model = path.join(work, 'model');
    cpSync(path.join(HERE, 'fixtures/tiny-bert'), model, { recursive: true });
    const run = (out: string, extra: string[]) =>
      new Promise<{ code: number | null; out: string }>((ok) => {
        const child = spawn(process.execPath, ['--import', 'tsx', path.join(HERE, '../scripts/train.ts'), '--output_dir', path.join(work, out), '--model_name_or_path', model,
          '--do_train', '--max_steps', '1', '--per_device_train_batch_size', '2', '--train_n_passages', '1', '--q_max_len', '8', '--p_max_len', '16',
          '--cache_dir', path.join(work, 'cache'), ...extra], { env: { ...process.env, ...env(), HF_HUB_OFFLINE: '', TEVATRON_BACKEND: 'cpu' } });
        let text = '';
        child.stdout.on('data', (d) => (text += d));
        child.stderr.on('data', (d) => (text += d));
        child.on('close', (code) => ok({ code, out: text }));
      });
    const a = await run('a', ['--dataset_name', 'Tevatron/wikipedia-nq']);
    assert.is(a.code, 0, a.out);
    assert.match(a.out, /dataset Tevatron\/wikipedia-nq \(config default, split train\): 1 file\(s\) from revision refs\/convert\/parquet/);
    assert.match(a.out, /12 training queries tokenized/);
    assert.ok(existsSync(path.join(work, 'a/model.safetensors')));
    const b = await run('b', ['--dataset_name', 'Tevatron/nothing-here', '--train_dir', path.join(FIX, 'nq-tiny.jsonl')]);
    assert.is(b.code, 0, b.out);
    assert.match(b.out, /12 training queries (tokenized|opened from the tokenized store)/);
    assert.not.match(b.out, /dataset Tevatron\/nothing-here/);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

test.run();
