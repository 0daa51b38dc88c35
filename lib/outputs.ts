// What a training run writes and reads back: checkpoints (`checkpoint-N/`: the model in Hugging Face
// layout, tokenizer, optimizer moments, trainer_state.json), their rotation, the final model, and
// metrics.jsonl. Every directory is assembled under a temporary name and renamed into place; what a
// killed run leaves (a half-written checkpoint folder, metrics logged after its last checkpoint) is
// cleaned up by the run that follows it.
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { writeAtomic } from './files.ts';
import { loadModelDir, readJson, saveModelDir, type PoolerConfig } from './model/checkpoint.ts';
import { SETTINGS_FILE, splitPooler, type EncoderSettings } from './model/pretrained.ts';
import { parseSafetensors, serializeSafetensors, type TensorDict } from './model/safetensors.ts';
import type { ParamMap } from './model/types.ts';
import type { AdamWState } from './optim.ts';
import { saveTokenizer, type Tokenizer } from './tokenizer.ts';

export interface SavedModel {
  config: Record<string, unknown>;
  params: ParamMap;
  untied: boolean;
  /** The pooler's shape and normalisation when the model has one. */
  pooler: { inDim: number; outDim: number } | null;
  settings: EncoderSettings;
  tokenizer: Tokenizer;
}

export interface TrainerState {
  global_step: number;
  epoch: number;
  max_steps: number;
  seed: number;
  backend: unknown;
  log_history: Record<string, number>[];
  [extra: string]: unknown;
}

const toDict = (m: ParamMap, prefix = ''): TensorDict =>
  Object.fromEntries(Object.entries(m).map(([k, t]) => [prefix + k, { shape: t.shape, data: t.dataSync() as Float32Array }]));

/** Writes the model, tokenizer and encoder settings into `dir` (a new directory, or replacing the model in one). */
export async function writeModel(dir: string, m: SavedModel, overwrite = false): Promise<void> {
  const { encoder, pooler } = splitPooler(m.params);
  const poolerConfig: PoolerConfig | undefined = m.pooler
    ? { input_dim: m.pooler.inDim, output_dim: m.pooler.outDim, tied: !m.untied, normalize: m.settings.normalize }
    : undefined;
  await saveModelDir(dir, { config: m.config, params: encoder, untied: m.untied, pooler: poolerConfig ? { config: poolerConfig, params: pooler } : undefined }, { overwrite });
  await saveTokenizer(m.tokenizer, dir);
  await writeFile(path.join(dir, SETTINGS_FILE), JSON.stringify(m.settings, null, 2) + '\n');
}

const CHECKPOINT = /^checkpoint-(\d+)$/;

/** checkpoint-N directories of an output dir, oldest first. */
export function listCheckpoints(outputDir: string): string[] {
  if (!existsSync(outputDir)) return [];
  return readdirSync(outputDir)
    .filter((n) => CHECKPOINT.test(n))
    .sort((a, b) => Number(a.match(CHECKPOINT)![1]) - Number(b.match(CHECKPOINT)![1]))
    .map((n) => path.join(outputDir, n));
}

/** `output_dir/checkpoint-N`: model + optimizer + trainer state, assembled under a temporary name. */
export async function writeCheckpoint(outputDir: string, m: SavedModel, optimizer: AdamWState, state: TrainerState, keep: number | null): Promise<string> {
  const final = path.join(outputDir, `checkpoint-${state.global_step}`);
  const tmp = `${final}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  try {
    await writeModel(tmp, m);
    await writeFile(path.join(tmp, 'optimizer.safetensors'), serializeSafetensors({ ...toDict(optimizer.m, 'exp_avg.'), ...toDict(optimizer.v, 'exp_avg_sq.') }, { step: String(optimizer.step) }));
    await writeFile(path.join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
    await rm(final, { recursive: true, force: true });
    await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  if (keep !== null) for (const old of listCheckpoints(outputDir).slice(0, -keep)) await rm(old, { recursive: true, force: true });
  return final;
}

/** Reads back what writeCheckpoint wrote: parameters (pooler included), optimizer state, trainer state. */
export async function readCheckpoint(dir: string, untied: boolean, like: ParamMap): Promise<{ params: ParamMap; optimizer: AdamWState; state: TrainerState }> {
  const stateFile = path.join(dir, 'trainer_state.json');
  const optFile = path.join(dir, 'optimizer.safetensors');
  if (!existsSync(stateFile) || !existsSync(optFile)) throw new Error(`--resume_from_checkpoint ${dir}: not a training checkpoint (needs trainer_state.json and optimizer.safetensors)`);
  const ckpt = await loadModelDir(dir, { untied });
  const params: ParamMap = { ...ckpt.params, ...(ckpt.pooler?.params ?? {}) };
  const missing = Object.keys(like).filter((k) => !params[k]);
  if (missing.length) throw new Error(`--resume_from_checkpoint ${dir}: lacks ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}; resume with the flags the run was started with`);
  const opt = parseSafetensors(readFileSync(optFile), optFile);
  const moments = (prefix: string) =>
    Object.fromEntries(Object.keys(like).map((k) => {
      const t = opt.tensors[prefix + k];
      if (!t) throw new Error(`${optFile}: no ${prefix}${k}; the checkpoint is incomplete`);
      return [k, tf.tensor(t.data, t.shape)];
    }));
  const state = (await readJson(stateFile)) as TrainerState;
  if (!Number.isInteger(state.global_step) || state.global_step < 0) throw new Error(`${stateFile}: global_step ${state.global_step} is not a step count; the checkpoint is damaged, resume from an earlier one`);
  return { params, optimizer: { step: state.global_step, m: moments('exp_avg.'), v: moments('exp_avg_sq.') }, state };
}

const STAGED_CHECKPOINT = /^checkpoint-\d+\.tmp-(\d+)$/;

/** Whether a process with this id exists (EPERM: it does, owned by another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Checks --output_dir before a run writes into it (a directory; empty unless resuming or overwriting),
 * and removes the `checkpoint-N.tmp-PID` folders of saves that a kill interrupted, each the size of a
 * model and its optimizer state. Only folders whose PID is no live process go: a live one may be a save in
 * progress. Returns notes for the log.
 */
export function prepareOutputDir(outputDir: string, o: { resume: boolean; overwrite: boolean }): string[] {
  if (!existsSync(outputDir)) return [];
  if (!statSync(outputDir).isDirectory()) throw new Error(`--output_dir ${outputDir} is a file, not a directory; pass a directory path (it is created if absent)`);
  const entries = readdirSync(outputDir);
  if (!o.resume && !o.overwrite && entries.length > 0) {
    throw new Error(`--output_dir ${outputDir} exists and is not empty; pass --overwrite_output_dir to train over it, or --resume_from_checkpoint to continue`);
  }
  const stale = entries.filter((n) => STAGED_CHECKPOINT.test(n) && !processAlive(Number(n.match(STAGED_CHECKPOINT)![1])));
  for (const n of stale) rmSync(path.join(outputDir, n), { recursive: true, force: true });
  return stale.length ? [`removed ${stale.join(', ')} from ${outputDir}: checkpoints half-written by runs that are no longer running`] : [];
}

/**
 * A run resumed at step N logs steps N+1... again: metrics.jsonl keeps only the records of steps ≤ N
 * (and drops a line a kill cut short). Returns how many records were removed.
 */
export async function truncateMetrics(outputDir: string, step: number): Promise<number> {
  const file = path.join(outputDir, 'metrics.jsonl');
  if (!existsSync(file)) return 0;
  const lines = (await readFile(file, 'utf8')).split('\n').filter((l) => l.trim() !== '');
  const keep = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step?: unknown }).step as number <= step;
    } catch {
      return false;
    }
  });
  if (keep.length === lines.length) return 0;
  await writeAtomic(file, keep.map((l) => `${l}\n`).join(''));
  return lines.length - keep.length;
}

/** `--resume_from_checkpoint true`: the latest checkpoint in the output dir; a path: that checkpoint. */
export function resolveResume(flag: string, outputDir: string): string {
  if (!['true', 'True', '1'].includes(flag)) return flag;
  const all = listCheckpoints(outputDir);
  if (!all.length) throw new Error(`--resume_from_checkpoint: no checkpoint-N directory in ${outputDir} to resume from`);
  return all[all.length - 1];
}

export async function appendMetrics(outputDir: string, record: object): Promise<void> {
  await mkdir(outputDir, { recursive: true });
  await appendFile(path.join(outputDir, 'metrics.jsonl'), JSON.stringify(record) + '\n');
}
