// `--dataset_name org/name[:config][/split]` → local data files: the hub dataset repo's files for that
// config and split, downloaded into the Hugging Face cache (`datasets--org--name/`) with the same offline
// rules as models (lib/model/hub.ts). The files are looked for on the requested revision (data files whose
// path names the split, `data/{split}-*.parquet`, a config folder), then on the hub's auto-converted parquet
// branch `refs/convert/parquet` (`{config}/{split}/*.parquet`), which is where script datasets such as
// Tevatron/wikipedia-nq have their rows. Which files were chosen is remembered beside the snapshot, so a
// second call (or HF_HUB_OFFLINE=1) needs no request.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  cachedSnapshot,
  download,
  fetchRepoInfo,
  hubSettings,
  HubClient,
  parseHubId,
  repoCacheDir,
  Snapshot,
  type ResolveOptions,
  type Sibling,
} from '../model/hub.ts';
import { writeAtomic } from '../files.ts';

export const PARQUET_REVISION = 'refs/convert/parquet';

export interface DatasetSpec {
  repo: string;
  /** Hugging Face's config name; Tevatron calls it the language. `default` when not given. */
  config: string;
  split: string;
  revision?: string;
}

/** Tevatron v1's parse (DataArguments.__post_init__): `org/name[:config][/split]`, split `train` by default. */
export function parseDatasetName(text: string): DatasetSpec {
  const info = text.split('/');
  const split = info.length === 3 ? info[2] : 'train';
  let name = info.length === 3 ? info.slice(0, 2).join('/') : info.join('/');
  let config = 'default';
  if (name.includes(':')) [name, config] = name.split(':');
  const id = parseHubId(name);
  if (!id || !split || !config) throw new Error(`--dataset_name ${text}: not a hub dataset id; write org/name, org/name/split or org/name:config/split (e.g. Tevatron/wikipedia-nq/train)`);
  return { repo: id.repo, config, split, revision: id.revision };
}

const DATA_FILE = /\.(jsonl|json)(\.gz)?$|\.parquet$/;
const META_FILES = new Set(['dataset_infos.json', 'dataset_info.json', 'dataset_dict.json', 'state.json', 'config.json']);
/** Hugging Face's split-name keywords (datasets' data_files patterns). */
const SPLIT_KEYWORDS: Record<string, string[]> = {
  train: ['train', 'training'],
  validation: ['validation', 'valid', 'dev', 'val'],
  test: ['test', 'testing', 'eval', 'evaluation'],
};
const keywordsOf = (split: string) => SPLIT_KEYWORDS[split] ?? [split];
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The keyword delimited by non-alphanumerics in the path: `nq-train.jsonl.gz`, `data/train-0000.parquet`, `train/x.jsonl`. */
const namesSplit = (file: string, split: string) => keywordsOf(split).some((k) => new RegExp(`(^|[^a-z0-9])${escape(k.toLowerCase())}([^a-z0-9]|$)`).test(file.toLowerCase()));
const namesAnySplit = (file: string) => Object.keys(SPLIT_KEYWORDS).some((s) => namesSplit(file, s));
const isDataFile = (file: string) => DATA_FILE.test(file) && !META_FILES.has(path.posix.basename(file)) && !file.split('/').some((p) => p.startsWith('.'));
const format = (file: string) => (file.endsWith('.parquet') ? 'parquet' : 'json');

/** One format only (a repo may carry the same rows twice): the format with more files, parquet on a tie. */
function oneFormat(files: string[]): string[] {
  const parquet = files.filter((f) => format(f) === 'parquet');
  const json = files.filter((f) => format(f) === 'json');
  return (parquet.length >= json.length ? parquet : json).sort();
}

/**
 * The data files of a repo's file list for (config, split): under a folder named `config` unless it is
 * `default`; those whose path names the split; for `train`, every data file when none names any split
 * (as Hugging Face's datasets does). Empty when nothing fits.
 */
export function selectDataFiles(files: string[], config: string, split: string): string[] {
  let scope = files.filter(isDataFile);
  if (config !== 'default') scope = scope.filter((f) => f.split('/').slice(0, -1).includes(config));
  const named = scope.filter((f) => namesSplit(f, split));
  if (named.length > 0) return oneFormat(named);
  if (split === 'train' && scope.length > 0 && !scope.some(namesAnySplit)) return oneFormat(scope);
  return [];
}

/** The parquet export's configs (top-level folders holding parquet files). */
export function parquetConfigs(files: string[]): string[] {
  return [...new Set(files.filter((f) => f.endsWith('.parquet') && f.includes('/')).map((f) => f.split('/')[0]))].sort();
}

/**
 * The files of `refs/convert/parquet` for (config, split): `{config}/{split}/*.parquet` (or the older
 * `{config}/{name}-{split}[-NNNNN-of-NNNNN].parquet`). Config `default` falls back to the only config there is.
 */
export function selectParquetExport(files: string[], config: string, split: string): string[] {
  const configs = parquetConfigs(files);
  const chosen = configs.includes(config) ? config : config === 'default' && configs.length === 1 ? configs[0] : null;
  if (!chosen) return [];
  const inConfig = files.filter((f) => f.startsWith(`${chosen}/`) && f.endsWith('.parquet'));
  const bySplitFolder = inConfig.filter((f) => f.split('/')[1] === split);
  if (bySplitFolder.length > 0) return bySplitFolder.sort();
  return inConfig.filter((f) => new RegExp(`[-_]${escape(split)}([-_.]|$)`).test(path.posix.basename(f))).sort();
}

export interface ResolvedDataset extends Required<DatasetSpec> {
  /** Local paths of the data files, in order. */
  files: string[];
  /** The revision the files came from (the requested one, or refs/convert/parquet) and its commit. */
  source: string;
  commit: string;
}

interface Selection {
  source: string;
  commit: string;
  files: string[];
}

/** Where the chosen files are remembered: beside huggingface_hub's folders, under a name of our own. */
function selectionFile(storage: string, revision: string, config: string, split: string): string {
  const safe = (s: string) => encodeURIComponent(s);
  return path.join(storage, '.tevatron_ts', 'selections', safe(revision), safe(config), `${safe(split)}.json`);
}

function cachedSelection(storage: string, revision: string, config: string, split: string): Selection | null {
  let sel: Selection;
  try {
    sel = JSON.parse(readFileSync(selectionFile(storage, revision, config, split), 'utf8'));
  } catch {
    return null;
  }
  // the recorded commit must still be what the revision points at (a later run may have moved the ref)
  const snap = cachedSnapshot(storage, sel.source);
  if (!snap || snap.commit !== sel.commit || !Array.isArray(sel.files) || sel.files.length === 0 || !sel.files.every((f) => snap.has(f))) return null;
  return sel;
}

/**
 * Local files for a hub dataset (`--dataset_name`): downloaded into the hub cache when needed. A cached
 * selection whose files are all present is used without any request; HF_HUB_OFFLINE=1 uses only the cache.
 */
export async function resolveDataset(name: string, options: Omit<ResolveOptions, 'files'> = {}): Promise<ResolvedDataset> {
  const spec = parseDatasetName(name);
  if (spec.revision && options.revision && spec.revision !== options.revision) throw new Error(`--dataset_name ${name}: names revision ${spec.revision} but the revision option says ${options.revision}; give one`);
  const revision = options.revision ?? spec.revision ?? 'main';
  const { repo, config, split } = spec;
  const { cacheDir, offline, endpoint, token } = hubSettings(options);
  const storage = repoCacheDir(cacheDir, repo, 'dataset');
  const what = `config "${config}", split "${split}"`;
  const done = (sel: Selection): ResolvedDataset => ({
    repo, config, split, revision, source: sel.source, commit: sel.commit,
    files: sel.files.map((f) => path.join(new Snapshot(storage, sel.commit).dir, f)),
  });

  const cached = cachedSelection(storage, revision, config, split);
  if (cached) return done(cached);
  if (offline) {
    throw new Error(`--dataset_name ${name}: HF_HUB_OFFLINE is set and the cache ${storage} holds no complete download of ${what} at revision "${revision}"; run once with network access (unset HF_HUB_OFFLINE), set --cache_dir / HF_HOME to the cache that holds it, or pass the files with --train_dir`);
  }

  const client = new HubClient(endpoint, token);
  const tried: string[] = [];
  for (const source of revision === 'main' ? [revision, PARQUET_REVISION] : [revision]) {
    const info = await fetchRepoInfo(client, 'dataset', repo, source);
    if (info.kind === 'unreachable') throw new Error(`--dataset_name ${name}: cannot reach the hub at ${endpoint} (${info.cause}), and the cache ${storage} holds no download of ${what}; check the network or HF_ENDPOINT, or pass the files with --train_dir`);
    if (info.kind === 'failed') throw new Error(`--dataset_name ${name}: ${info.detail}; try again later, or pass the files with --train_dir`);
    if (info.kind === 'missing') {
      if (source === PARQUET_REVISION) {
        tried.push(`no parquet export (${PARQUET_REVISION})`);
        continue;
      }
      throw new Error(`--dataset_name ${name}: the hub has no dataset "${repo}" at revision "${source}" (or it is private or gated): ${info.url} returned ${info.detail}; check the name, or set HF_TOKEN for a private or gated dataset`);
    }
    const listed = [...info.siblings.keys()];
    const chosen = source === PARQUET_REVISION ? selectParquetExport(listed, config, split) : selectDataFiles(listed, config, split);
    if (chosen.length === 0) {
      const data = listed.filter(isDataFile).sort();
      tried.push(source === PARQUET_REVISION
        ? `${PARQUET_REVISION} has configs [${parquetConfigs(listed).join(', ')}] with files ${data.slice(0, 8).join(', ')}${data.length > 8 ? ', ...' : ''}`
        : `revision "${source}" has ${data.length ? `data files ${data.slice(0, 8).join(', ')}${data.length > 8 ? ', ...' : ''}` : `no data files (${listed.slice(0, 8).join(', ')})`}`);
      continue;
    }
    const snap = new Snapshot(storage, info.sha);
    for (const f of chosen) await download(client, repo, snap, f, info.siblings.get(f) as Sibling, 'dataset');
    if (source !== info.sha) await writeAtomic(path.join(storage, 'refs', source), info.sha);
    const sel: Selection = { source, commit: info.sha, files: chosen };
    await writeAtomic(selectionFile(storage, revision, config, split), JSON.stringify(sel, null, 1) + '\n');
    return done(sel);
  }
  throw new Error(`--dataset_name ${name}: found no data files for ${what} in hub dataset "${repo}": ${tried.join('; ')}; pick a config/split that exists (org/name:config/split) or pass the files with --train_dir`);
}
