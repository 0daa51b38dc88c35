// --push_to_hub (lib/model/upload.ts, scripts/push_to_hub.ts, scripts/train.ts) against a stand-in for the
// Hugging Face hub: node:http on 127.0.0.1, started here, serving what @huggingface/hub's whoAmI, createRepo
// and uploadFiles ask of the real hub, and checking what it receives. The token and its rights; repo
// creation (409 when it exists); the preupload decision (LFS for *.safetensors and binary content, as the
// hub's default .gitattributes does; the rest inline); the LFS batch, with presigned-style basic PUTs and,
// above a size, multipart uploads whose parts are assembled by their ETags; every object's sha256 and size;
// the commit's NDJSON (inline files must match their preupload size and first bytes, LFS pointers must name
// stored objects). A failure can be injected in the middle of an upload. Only 127.0.0.1 is contacted.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { hubFiles, preparePush, pushCommand, pushFiles } from '../lib/model/upload.ts';
import { freePort, loopbackOnlyFetch, rejects, runScriptFile, withEnv } from './helpers.ts';

loopbackOnlyFetch();

const FIXTURES = path.resolve('test/fixtures');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'upload-'));
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** What the stand-in's tokens may do: alice writes to her namespace and to the org "lab". */
const TOKENS: Record<string, { user: string; write: boolean }> = { hf_alice_write: { user: 'alice', write: true }, hf_alice_read: { user: 'alice', write: false } };
const NAMESPACES: Record<string, string[]> = { alice: ['alice', 'lab'] };
/** Objects above this size go up in multipart, in parts of half of it. */
const MULTIPART_ABOVE = 16 * 1024;

interface Commit {
  title: string;
  oid: string;
  tree: Map<string, Buffer>;
}

interface StandInHub {
  url: string;
  repos: Map<string, { visibility: string | undefined; commits: Commit[]; declared: Map<string, { size: number; sample: Buffer; mode: string }> }>;
  /** LFS storage: repo -> oid -> bytes (an object is uploaded once per repo). */
  objects: Map<string, Map<string, Buffer>>;
  /** method + path of every request, with its status. */
  log: string[];
  /** Checks the stand-in refused: a well-behaved client causes none. */
  rejected: string[];
  /** Decides whether an LFS upload (basic PUT or part) is cut off: the connection is reset. */
  failUpload: ((repo: string) => boolean) | null;
  close(): Promise<void>;
}

async function startHub(): Promise<StandInHub> {
  const secret = randomBytes(8).toString('hex'); // signs the upload hrefs the batch hands out (as presigned URLs)
  const parts = new Map<string, Map<number, Buffer>>();
  const hub: StandInHub = { url: '', repos: new Map(), objects: new Map(), log: [], rejected: [], failUpload: null, close: async () => {} };
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url!, 'http://127.0.0.1');
    const send = (status: number, json: unknown, headers: Record<string, string> = {}) => {
      hub.log.push(`${req.method} ${url.pathname} ${status}`);
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(json));
    };
    const refuse = (why: string) => {
      hub.rejected.push(why);
      send(400, { error: `stand-in hub: ${why}` });
    };
    const user = () => TOKENS[(req.headers.authorization ?? '').replace(/^Bearer /, '')];
    const canWrite = (repo: string) => user()?.write && NAMESPACES[user().user].includes(repo.split('/')[0]);
    /** The route needs a token that can write to `repo` (and the repo, unless creating it). */
    const authorize = (repo: string, mustExist = true): boolean => {
      if (!user()) return send(401, { error: 'Invalid credentials in Authorization header' }), false;
      if (!canWrite(repo)) return send(403, { error: `You don't have the rights to write to ${repo}` }), false;
      if (mustExist && !hub.repos.has(repo)) return send(404, { error: 'Repository not found' }), false;
      return true;
    };
    const signed = () => url.searchParams.get('sig') === secret;
    let m: RegExpExecArray | null;

    if (req.method === 'GET' && url.pathname === '/api/whoami-v2') {
      if (!user()) return send(401, { error: 'Invalid credentials in Authorization header' });
      const name = user().user;
      return send(200, { type: 'user', id: `id-${name}`, name, fullname: name, email: `${name}@example.org`, emailVerified: true, isPro: false, orgs: [{ type: 'org', name: 'lab' }], auth: { type: 'access_token', accessToken: { displayName: 'test', role: user().write ? 'write' : 'read', createdAt: '2026-01-01T00:00:00Z' } } });
    }
    if (req.method === 'POST' && url.pathname === '/api/repos/create') {
      const r = JSON.parse(body.toString());
      if (r.type !== 'model' || typeof r.name !== 'string' || typeof r.organization !== 'string') return refuse(`create: a model repo needs name and organization, got ${body}`);
      const id = `${r.organization}/${r.name}`;
      if (!authorize(id, false)) return;
      if (hub.repos.has(id)) return send(409, { error: 'You already created this model repo', url: `${hub.url}/${id}` });
      if (r.visibility !== undefined && !['public', 'private'].includes(r.visibility)) return refuse(`create: visibility ${r.visibility}`);
      hub.repos.set(id, { visibility: r.visibility, commits: [], declared: new Map() });
      hub.objects.set(id, new Map());
      return send(200, { url: `${hub.url}/${id}`, name: id, id: `repo-${hub.repos.size}` });
    }
    if (req.method === 'POST' && (m = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/main$/.exec(url.pathname))) {
      const repo = m[1];
      if (!authorize(repo)) return;
      const files = JSON.parse(body.toString()).files as { path: string; size: number; sample: string }[];
      const answer = files.map((f) => {
        const sample = Buffer.from(f.sample, 'base64');
        if (sample.length !== Math.min(512, f.size)) refuse(`preupload ${f.path}: a sample of ${sample.length} bytes for a file of ${f.size}`);
        const mode = f.path.endsWith('.safetensors') || sample.includes(0) ? 'lfs' : 'regular';
        hub.repos.get(repo)!.declared.set(f.path, { size: f.size, sample, mode });
        return { path: f.path, uploadMode: mode };
      });
      if (!res.headersSent) send(200, { files: answer });
      return;
    }
    if (req.method === 'POST' && (m = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(url.pathname))) {
      const repo = m[1];
      if (!authorize(repo)) return;
      if (req.headers['content-type'] !== 'application/vnd.git-lfs+json') return refuse(`batch: content-type ${req.headers['content-type']}`);
      const r = JSON.parse(body.toString());
      if (r.operation !== 'upload' || !r.transfers.includes('basic') || r.hash_algo !== 'sha_256') return refuse(`batch: ${body}`);
      const objects = (r.objects as { oid: string; size: number }[]).map(({ oid, size }) => {
        if (!/^[0-9a-f]{64}$/.test(oid) || !Number.isInteger(size)) return { oid, size, error: { code: 422, message: 'bad oid or size' } };
        if (hub.objects.get(repo)!.has(oid)) return { oid, size }; // already stored: nothing to upload
        const href = (p: string) => `${hub.url}/lfs/${repo}/${oid}${p}?size=${size}&sig=${secret}`;
        if (size <= MULTIPART_ABOVE) return { oid, size, actions: { upload: { href: href('') } } };
        const chunk = MULTIPART_ABOVE / 2;
        const header: Record<string, string> = { chunk_size: String(chunk) };
        for (let i = 1; i <= Math.ceil(size / chunk); i++) header[String(i).padStart(5, '0')] = href(`/part/${i}`);
        return { oid, size, actions: { upload: { href: href('/complete'), header } } };
      });
      return send(200, { transfer: 'basic', objects }, { 'content-type': 'application/vnd.git-lfs+json' });
    }
    if ((m = /^\/lfs\/([^/]+\/[^/]+)\/([0-9a-f]{64})(\/part\/(\d+)|\/complete)?$/.exec(url.pathname))) {
      const [, repo, oid, , part] = m;
      const size = Number(url.searchParams.get('size'));
      if (!signed()) return send(403, { error: 'bad signature' });
      if (req.method === 'PUT' && hub.failUpload?.(repo)) {
        hub.log.push(`${req.method} ${url.pathname} reset`);
        return void req.socket.destroy();
      }
      const store = (bytes: Buffer) => {
        if (bytes.length !== size || sha256(bytes) !== oid) return refuse(`object ${oid}: ${bytes.length} bytes with sha256 ${sha256(bytes)}`);
        hub.objects.get(repo)!.set(oid, bytes);
        send(200, {});
      };
      if (req.method === 'PUT' && !m[3]) return store(body);
      if (req.method === 'PUT' && part) {
        parts.set(`${repo}/${oid}`, (parts.get(`${repo}/${oid}`) ?? new Map()).set(Number(part), body));
        hub.log.push(`${req.method} ${url.pathname} 200`);
        return void res.writeHead(200, { etag: `"${sha256(body).slice(0, 16)}"` }).end();
      }
      if (req.method === 'POST') {
        const r = JSON.parse(body.toString()) as { oid: string; parts: { partNumber: number; etag: string }[] };
        const got = parts.get(`${repo}/${oid}`) ?? new Map<number, Buffer>();
        if (r.oid !== oid || r.parts.length !== got.size) return refuse(`complete ${oid}: ${r.parts.length} parts listed, ${got.size} received`);
        for (const p of r.parts) if (p.etag !== `"${sha256(got.get(p.partNumber) ?? Buffer.alloc(0)).slice(0, 16)}"`) return refuse(`complete ${oid}: part ${p.partNumber} etag ${p.etag}`);
        return store(Buffer.concat(r.parts.sort((a, b) => a.partNumber - b.partNumber).map((p) => got.get(p.partNumber)!)));
      }
    }
    if (req.method === 'POST' && (m = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/main$/.exec(url.pathname))) {
      const repo = m[1];
      if (!authorize(repo)) return;
      const state = hub.repos.get(repo)!;
      const lines = body.toString().split('\n').map((l) => JSON.parse(l));
      if (lines[0]?.key !== 'header' || typeof lines[0].value.summary !== 'string') return refuse('commit: no header first');
      const tree = new Map(state.commits.at(-1)?.tree ?? []);
      for (const { key, value } of lines.slice(1)) {
        const declared = state.declared.get(value.path);
        if (key === 'file') {
          const bytes = Buffer.from(value.content, value.encoding);
          if (!declared || declared.mode !== 'regular' || declared.size !== bytes.length || !bytes.subarray(0, 512).equals(declared.sample)) return refuse(`commit: inline ${value.path} does not match its preupload`);
          tree.set(value.path, bytes);
        } else if (key === 'lfsFile') {
          const bytes = hub.objects.get(repo)!.get(value.oid);
          if (!bytes || bytes.length !== value.size || value.algo !== 'sha256' || declared?.mode !== 'lfs') return refuse(`commit: LFS ${value.path} names no stored object ${value.oid}`);
          tree.set(value.path, bytes);
        } else return refuse(`commit: unexpected ${key}`);
      }
      const oid = createHash('sha1').update(`${repo}:${state.commits.length}`).digest('hex');
      state.commits.push({ title: lines[0].value.summary, oid, tree });
      return send(200, { commitOid: oid, commitUrl: `${hub.url}/${repo}/commit/${oid}`, hookOutput: '' });
    }
    send(404, { error: `stand-in hub: no route ${req.method} ${url.pathname}` });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  hub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  hub.close = () => new Promise((ok) => server.close(() => ok()));
  return hub;
}

/** Every file under `dir`, by its path relative to it, with its bytes. */
function tree(dir: string, base = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(path.join(dir, base))) {
    const rel = base ? `${base}/${name}` : name;
    if (statSync(path.join(dir, rel)).isDirectory()) for (const [k, v] of tree(dir, rel)) out.set(k, v);
    else out.set(rel, readFileSync(path.join(dir, rel)));
  }
  return out;
}

/** A run's output dir as training leaves it, plus what must not go up. */
function outputDir(name = 'my-run'): string {
  const out = path.join(tmp(), name);
  cpSync(path.join(FIXTURES, 'tiny-bert'), out, { recursive: true, filter: (f) => !f.endsWith('expected.json') });
  writeFileSync(path.join(out, 'README.md'), '---\nlibrary_name: "transformers"\n---\n# my-run\n');
  writeFileSync(path.join(out, 'metrics.jsonl'), '{"step":1,"loss":2}\n');
  mkdirSync(path.join(out, 'runs/Jan01_00-00-00_host'), { recursive: true });
  writeFileSync(path.join(out, 'runs/Jan01_00-00-00_host/events.out.tfevents.1.host.1.0.v2'), Buffer.from([0x18, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]));
  cpSync(path.join(FIXTURES, 'tiny-bert/model.safetensors'), path.join(out, 'checkpoint-2/model.safetensors'), { recursive: true });
  mkdirSync(path.join(out, '.tmp-ab12'));
  writeFileSync(path.join(out, '.tmp-ab12/model.safetensors'), 'half written');
  writeFileSync(path.join(out, 'config.json.tmp-1f2e'), '{');
  writeFileSync(path.join(out, '_private.txt'), 'x');
  return out;
}

/** What a push of `out` must put in the repo: everything but checkpoints, hidden, `_` and temporary entries. */
const pushable = (out: string) => new Map([...tree(out)].filter(([rel]) => !/^(checkpoint-|\.|_)|\.tmp-/.test(rel)));

const sameTree = (got: Map<string, Buffer>, want: Map<string, Buffer>, what: string) => {
  assert.equal([...got.keys()].sort(), [...want.keys()].sort(), `${what}: files`);
  for (const [rel, bytes] of want) assert.ok(got.get(rel)!.equals(bytes), `${what}: ${rel} bytes`);
};

let hub: StandInHub;
test.before(async () => {
  hub = await startHub();
});
test.after(() => hub.close());

test('pushes a run\'s output dir in one commit: every file byte for byte, weights through LFS multipart, text inline, checkpoints and temporary files left out; HF_ENDPOINT and HF_TOKEN honoured', async () => {
  const out = outputDir();
  await withEnv({ HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_alice_write' }, async () => {
    const target = await preparePush({ hubModelId: 'lab/tiny', outputDir: out, token: null, private: true });
    assert.equal(target, { repo: 'lab/tiny', endpoint: hub.url, token: 'hf_alice_write' });
    assert.is(hub.repos.get('lab/tiny')!.visibility, 'private');
    const start = hub.log.length;
    const files = hubFiles(out);
    assert.equal([...files.keys()].sort(), [...pushable(out).keys()].sort(), 'hubFiles leaves out checkpoints, hidden, _ and temporary files');
    const commit = await pushFiles(target, files, 'End of training');
    const repo = hub.repos.get('lab/tiny')!;
    assert.is(repo.commits.length, 1);
    assert.is(commit.commit, repo.commits[0].oid);
    assert.is(repo.commits[0].title, 'End of training');
    sameTree(repo.commits[0].tree, pushable(out), 'the repo');
    const weights = sha256(readFileSync(path.join(out, 'model.safetensors')));
    const requests = hub.log.slice(start);
    assert.is(requests.filter((r) => r.startsWith(`PUT /lfs/lab/tiny/${weights}/part/`)).length, Math.ceil(statSync(path.join(out, 'model.safetensors')).size / (MULTIPART_ABOVE / 2)), 'the weights in parts');
    assert.ok(requests.includes(`POST /lfs/lab/tiny/${weights}/complete 200`));
    assert.ok(hub.objects.get('lab/tiny')!.has(sha256(readFileSync(path.join(out, 'runs/Jan01_00-00-00_host/events.out.tfevents.1.host.1.0.v2')))), 'a binary event file through LFS');
    assert.not.ok(hub.objects.get('lab/tiny')!.has(sha256(readFileSync(path.join(out, 'config.json')))), 'config.json inline');
    // Unchanged weights are not sent again: the batch answers that the hub has them.
    const again = hub.log.length;
    await pushFiles(target, files, 'again');
    assert.not.ok(hub.log.slice(again).some((r) => r.startsWith('PUT ')), 'no upload of stored objects');
    assert.is(repo.commits.length, 2);
  });
  assert.equal(hub.rejected, []);
});

test('the default repo is the output dir\'s name in the token owner\'s namespace; an existing repo is used as is', async () => {
  const out = outputDir('nq-run');
  const target = await preparePush({ hubModelId: null, outputDir: out, token: 'hf_alice_write', private: null, endpoint: hub.url });
  assert.is(target.repo, 'alice/nq-run');
  assert.ok(hub.log.includes('GET /api/whoami-v2 200'));
  assert.is(hub.repos.get('alice/nq-run')!.visibility, undefined, 'no --hub_private_repo: the namespace\'s default');
  await preparePush({ hubModelId: 'alice/nq-run', outputDir: out, token: 'hf_alice_write', private: true, endpoint: hub.url });
  assert.ok(hub.log.at(-1)!.startsWith('POST /api/repos/create 409'));
  assert.is(hub.repos.get('alice/nq-run')!.visibility, undefined, 'an existing repo keeps its visibility');
});

test('errors are one line naming the repo, the hub and the fix', async () => {
  const out = outputDir();
  const ask = (token: string | null, id: string | null, endpoint = hub.url) => preparePush({ hubModelId: id, outputDir: out, token, private: null, endpoint });
  const messages = await withEnv({ HF_TOKEN: undefined }, async () => [
    await rejects(ask(null, 'lab/x'), /--push_to_hub needs a token with write access: pass --hub_token or set HF_TOKEN/, 'no token'),
    await rejects(ask('secret', 'lab/x'), /starts with hf_/, 'not a token'),
    await rejects(ask('hf_nobody', 'lab/x'), /creating the repo lab\/x at http:\/\/127\.0\.0\.1:\d+ failed: the hub did not accept the token: check --hub_token \/ HF_TOKEN/, '401'),
    await rejects(ask('hf_nobody', null), /finding the namespace for my-run .* did not accept the token/, '401 on whoami'),
    await rejects(ask('hf_alice_read', 'lab/x'), /the token cannot write to lab\/x/, 'read-only token'),
    await rejects(ask('hf_alice_write', 'other/x'), /the token cannot write to other\/x/, 'someone else\'s namespace'),
    await rejects(ask('hf_alice_write', 'lab/a b'), /--hub_model_id lab\/a b: not a hub repo id/, 'bad id'),
    await rejects(ask('hf_alice_write', 'lab/x', `http://127.0.0.1:${await freePort()}`), /creating the repo lab\/x failed: cannot reach the hub at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\); check the network or HF_ENDPOINT/, 'unreachable'),
  ]);
  for (const m of messages) assert.not.match(m, /\n/, m);
  assert.not.ok(hub.repos.has('lab/x') || hub.repos.has('other/x'));
});

test('a connection lost in the middle of an upload: no commit, the local files untouched; scripts/push_to_hub.ts then pushes them', async () => {
  const out = outputDir();
  const before = tree(out);
  const target = await preparePush({ hubModelId: 'lab/cut', outputDir: out, token: 'hf_alice_write', private: null, endpoint: hub.url });
  hub.failUpload = (repo) => repo === 'lab/cut';
  try {
    const msg = await rejects(pushFiles(target, hubFiles(out), 'End of training'), /^pushing to lab\/cut failed: the connection to the hub at http:\/\/127\.0\.0\.1:\d+ broke off \(\w+: .*\); check the network or HF_ENDPOINT$/, 'cut');
    assert.not.match(msg, /\n/);
  } finally {
    hub.failUpload = null;
  }
  assert.ok(hub.log.some((r) => r.endsWith(' reset')), 'the stand-in cut an upload');
  assert.is(hub.repos.get('lab/cut')!.commits.length, 0, 'no commit');
  sameTree(tree(out), before, 'the output dir');
  const r = await runScriptFile('push_to_hub.ts', ['--output_dir', out, '--hub_model_id', 'lab/cut'], { ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_alice_write' });
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /pushed \d+ files from .* to http:\/\/127\.0\.0\.1:\d+\/lab\/cut\/commit\//);
  sameTree(hub.repos.get('lab/cut')!.commits[0].tree, pushable(out), 'the repo after the retry');
  assert.equal(hub.rejected, []);
});

test('pushCommand: the output dir survives the shell, spaces and quotes included', () => {
  for (const dir of ['/tmp/run-1', "/tmp/my run/it's", '/tmp/a$b"c']) {
    const words = spawnSync('bash', ['-c', `printf '%s\\n' ${pushCommand(dir, 'lab/x')}`], { encoding: 'utf8' }).stdout.trim().split('\n');
    assert.equal(words, ['npx', 'tsx', 'scripts/push_to_hub.ts', '--output_dir', dir, '--hub_model_id', 'lab/x'], dir);
  }
});

const trainArgs = (out: string, extra: string[]) => [
  '--output_dir', out, '--model_name_or_path', path.join(FIXTURES, 'tiny-bert'), '--train_dir', path.join(FIXTURES, 'train-step/train.jsonl'),
  '--per_device_train_batch_size', '2', '--train_n_passages', '2', '--q_max_len', '8', '--p_max_len', '12', '--max_steps', '4', '--save_steps', '2', '--logging_steps', '1',
  '--push_to_hub', ...extra,
];
const hubEnv = () => ({ ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_alice_write' });

test('train.ts --push_to_hub --hub_strategy end: one commit of the output dir without checkpoints, model card included', async () => {
  const out = path.join(tmp(), 'run-end');
  const r = await runScriptFile('train.ts', trainArgs(out, ['--hub_strategy', 'end']), hubEnv());
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /pushing to http:\/\/127\.0\.0\.1:\d+\/alice\/run-end \(at the end\)/);
  const repo = hub.repos.get('alice/run-end')!;
  assert.equal(repo.commits.map((c) => c.title), ['End of training']);
  sameTree(repo.commits[0].tree, pushable(out), 'the repo');
  for (const f of ['model.safetensors', 'config.json', 'vocab.txt', 'tokenizer_config.json', 'tevatron_ts.json', 'README.md', 'trainer_state.json']) assert.ok(repo.commits[0].tree.has(f), f);
  assert.match(repo.commits[0].tree.get('README.md')!.toString(), /^---\nlibrary_name: "transformers"\n/);
});

test('train.ts --push_to_hub without a token, or with one that cannot write: one line before training, nothing written', async () => {
  for (const [token, message] of [[undefined, /^train: --push_to_hub needs a token with write access: pass --hub_token or set HF_TOKEN$/], ['hf_alice_read', /^train: creating the repo lab\/no at .* the token cannot write to lab\/no/]] as const) {
    const out = path.join(tmp(), 'never');
    const r = await runScriptFile('train.ts', trainArgs(out, ['--hub_model_id', 'lab/no']), { ...process.env, HF_ENDPOINT: hub.url, HF_TOKEN: token });
    assert.is(r.code, 1);
    assert.match(r.err.trim(), message);
    assert.is(r.err.trim().split('\n').length, 1, r.err);
    assert.not.ok(existsSync(out), 'nothing written');
  }
});

test('train.ts --hub_strategy every_save: a commit per save; the final push cut off mid-upload exits 1 with one line and the retry command, which works', async () => {
  const out = path.join(tmp(), 'run-cut');
  hub.failUpload = (repo) => (hub.repos.get(repo)?.commits.length ?? 0) >= 1; // the step-2 push goes through, the final one is cut
  let r;
  try {
    r = await runScriptFile('train.ts', trainArgs(out, ['--hub_model_id', 'lab/run-cut']), hubEnv());
  } finally {
    hub.failUpload = null;
  }
  assert.is(r.code, 1, r.out);
  const line = r.err.trim();
  assert.is(line.split('\n').length, 1, r.err);
  assert.match(line, /^train: pushing to lab\/run-cut failed: the connection to the hub .* broke off .*The model and logs are saved in .*run-cut; push them with: npx tsx scripts\/push_to_hub\.ts --output_dir \S+ --hub_model_id lab\/run-cut$/);
  const repo = hub.repos.get('lab/run-cut')!;
  assert.equal(repo.commits.map((c) => c.title), ['Training in progress, step 2']);
  const ckpt = new Map([...tree(path.join(out, 'checkpoint-2'))].filter(([f]) => !['optimizer.safetensors', 'trainer_state.json'].includes(f)));
  for (const [f, bytes] of ckpt) assert.ok(repo.commits[0].tree.get(f)?.equals(bytes), `step 2 pushed checkpoint-2's ${f}`);
  for (const f of ['model.safetensors', 'README.md', 'trainer_state.json', 'checkpoint-4/optimizer.safetensors']) assert.ok(statSync(path.join(out, f)).size > 0, `${f} is on disk`);
  const [, command] = /push them with: npx tsx (.*)$/.exec(line)!;
  const args = command.split(' ');
  const retry = await runScriptFile(path.basename(args[0]), args.slice(1), hubEnv());
  assert.is(retry.code, 0, retry.err);
  assert.equal(repo.commits.map((c) => c.title), ['Training in progress, step 2', 'End of training']);
  sameTree(repo.commits[1].tree, pushable(out), 'the repo after the retry');
  assert.equal(hub.rejected, []);
});

test.run();
