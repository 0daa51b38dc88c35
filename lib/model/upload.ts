// --push_to_hub: a training run's output directory uploaded to a Hugging Face hub (HF_ENDPOINT) with
// @huggingface/hub, as the Trainer pushes it: the repo is created when it does not exist (an existing one
// is used as is), then one commit holds everything in the directory but checkpoints (the model, tokenizer,
// tevatron_ts.json, pooler, model card, metrics and TensorBoard logs). With --hub_strategy every_save a
// checkpoint's model is pushed at each save. Files go up as the hub asks in its preupload answer: small
// text inline in the commit, weights through LFS (basic or multipart) or xet, whichever the hub offers.
// A failure is one Error line naming the repo, the hub and the cause; it never touches the local files.
import type { HubApiError } from '@huggingface/hub';
import { openAsBlob, readdirSync } from 'node:fs';
import path from 'node:path';
import { hubSettings, parseHubId } from './hub.ts';

export interface PushTarget {
  /** org/name */
  repo: string;
  endpoint: string;
  token: string;
}

export interface PushRequest {
  /** --hub_model_id: org/name, or name (the token owner's namespace); default: the output dir's name. */
  hubModelId: string | null;
  outputDir: string;
  /** --hub_token; default HF_TOKEN. */
  token: string | null;
  /** --hub_private_repo: null leaves the visibility to the namespace's default. */
  private: boolean | null;
  /** Default HF_ENDPOINT, else the public hub. */
  endpoint?: string;
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();
// Loaded when a push is asked for: importing it costs every training run a few hundred milliseconds.
const hubClient = () => import('@huggingface/hub');
const isApiError = (e: unknown): e is HubApiError => e instanceof Error && typeof (e as HubApiError).statusCode === 'number';

/** Why a hub call failed, in words a user can act on. */
function explain(e: unknown, what: string, t: { repo: string; endpoint: string }): Error {
  if (isApiError(e)) {
    const hint =
      e.statusCode === 401 ? 'the hub did not accept the token: check --hub_token / HF_TOKEN'
      : e.statusCode === 403 ? `the token cannot write to ${t.repo} (a read-only token, or no rights in that namespace)`
      : e.statusCode === 404 ? `no repo ${t.repo} there, or no access to it`
      : `the hub answered ${e.statusCode}`;
    return new Error(`${what} ${t.repo} at ${t.endpoint} failed: ${hint} (${oneLine(e.message)})`);
  }
  const err = e as Error & { cause?: Error & { code?: string } };
  if (err instanceof TypeError && err.message === 'fetch failed') {
    const code = err.cause?.code ?? 'network error';
    const how = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT'].includes(code)
      ? `cannot reach the hub at ${t.endpoint} (${code})`
      : `the connection to the hub at ${t.endpoint} broke off (${code}: ${oneLine(err.cause?.message ?? '')})`;
    return new Error(`${what} ${t.repo} failed: ${how}; check the network or HF_ENDPOINT`);
  }
  return new Error(`${what} ${t.repo} at ${t.endpoint} failed: ${oneLine(err.message ?? String(e))}`);
}

/**
 * Where to push, checked before training starts (Hugging Face's Trainer creates the repo at init): a token
 * is there and starts with hf_, the repo id is complete (the token owner's namespace when --hub_model_id
 * has none), and the repo exists or is created.
 */
export async function preparePush(r: PushRequest): Promise<PushTarget> {
  const hub = hubSettings({ endpoint: r.endpoint, token: r.token ?? undefined });
  const { createRepo, whoAmI } = await hubClient();
  const token = hub.token;
  if (!token) throw new Error('--push_to_hub needs a token with write access: pass --hub_token or set HF_TOKEN');
  if (!token.startsWith('hf_')) throw new Error('--hub_token / HF_TOKEN: a Hugging Face token starts with hf_; pass a write token from your hub settings');
  const name = r.hubModelId ?? path.basename(path.resolve(r.outputDir));
  let repo = name;
  if (!name.includes('/')) {
    let owner: { type: string; name: string };
    try {
      owner = await whoAmI({ accessToken: token, hubUrl: hub.endpoint });
    } catch (e) {
      throw explain(e, 'finding the namespace for', { repo: name, endpoint: hub.endpoint });
    }
    if (owner.type !== 'user') throw new Error(`--hub_model_id ${name}: the token belongs to ${owner.type} ${owner.name}, not a user; write the repo as org/name`);
    repo = `${owner.name}/${name}`;
  }
  if (!parseHubId(repo) || repo.includes('@')) throw new Error(`--hub_model_id ${repo}: not a hub repo id; write org/name (letters, digits, '-', '_', '.')`);
  const target = { repo, endpoint: hub.endpoint, token };
  try {
    await createRepo({ repo: { type: 'model', name: repo }, accessToken: token, hubUrl: hub.endpoint, visibility: r.private === null ? undefined : r.private ? 'private' : 'public' });
  } catch (e) {
    if (!(isApiError(e) && e.statusCode === 409)) throw explain(e, 'creating the repo', target); // 409: it exists
  }
  return target;
}

const SKIPPED = /^[._]|\.tmp-/; // hidden and `_` entries (as the Trainer's push), temporary files of an unfinished write

function walk(dir: string, base: string, out: Map<string, string>): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIPPED.test(e.name)) continue;
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) walk(path.join(dir, e.name), rel, out);
    else if (e.isFile()) out.set(rel, path.join(dir, e.name));
  }
}

/**
 * Repo path -> local file for a push: the output dir without its checkpoints; with `checkpoint`
 * (--hub_strategy every_save), that checkpoint's model in the repo's root, without its optimizer and
 * trainer state.
 */
export function hubFiles(outputDir: string, checkpoint?: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of readdirSync(outputDir, { withFileTypes: true })) {
    if (SKIPPED.test(e.name) || /^checkpoint-/.test(e.name)) continue;
    if (e.isDirectory()) walk(path.join(outputDir, e.name), e.name, out);
    else if (e.isFile()) out.set(e.name, path.join(outputDir, e.name));
  }
  if (checkpoint) {
    const model = new Map<string, string>();
    walk(checkpoint, '', model);
    for (const [rel, file] of model) if (!['optimizer.safetensors', 'trainer_state.json'].includes(rel)) out.set(rel, file);
  }
  return out;
}

/** One commit with `files` (read from disk as they go up, not loaded whole). */
export async function pushFiles(t: PushTarget, files: Map<string, string>, title: string): Promise<{ commit: string; url: string }> {
  const { uploadFiles } = await hubClient();
  try {
    const blobs = await Promise.all([...files].map(async ([rel, file]) => ({ path: rel, content: await openAsBlob(file) })));
    const out = await uploadFiles({ repo: { type: 'model', name: t.repo }, accessToken: t.token, hubUrl: t.endpoint, files: blobs, commitTitle: title });
    return { commit: out?.commit.oid ?? '', url: out?.commit.url ?? `${t.endpoint}/${t.repo}` };
  } catch (e) {
    throw explain(e, 'pushing to', t);
  }
}

/** The command that pushes an output dir again (what a failed push at the end of training tells the user). */
export function pushCommand(outputDir: string, repo: string): string {
  const word = (w: string) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);
  return `npx tsx scripts/push_to_hub.ts --output_dir ${word(outputDir)} --hub_model_id ${repo}`;
}
