// Tevatron's training driver (`python -m tevatron.driver.train`), flag for flag:
//   npx tsx scripts/train.ts --output_dir out --model_name_or_path bert-base-uncased --train_dir train.jsonl ...
// One process per device under scripts/launch.ts; rank 0 logs and writes checkpoints.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { backendInfo, describeBackend, initBackend, type BackendChoice } from '../lib/backend.ts';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { resolveDataset } from '../lib/data/hub-dataset.ts';
import { listDataFiles } from '../lib/data/load.ts';
import { defaultTokenizedCacheDir, loadTrainData } from '../lib/data/tokenized.ts';
import { checkExamples } from '../lib/data/sample.ts';
import { rankFromEnv } from '../lib/dist/env.ts';
import { evaluateRetrieval, loadEvalSet } from '../lib/evaluation.ts';
import { connectGroup, type DdpBackend } from '../lib/dist/connect.ts';
import { broadcastParams } from '../lib/dist/tensors.ts';
import { exampleOptionsFromArgs, loadDenseModel, modelRequestFromArgs } from '../lib/model/pretrained.ts';
import { initAdamW, type ScheduleType } from '../lib/optim.ts';
import { appendMetrics, prepareOutputDir, readCheckpoint, resolveResume, truncateMetrics, writeCheckpoint, writeModel, type SavedModel, type TrainerState } from '../lib/outputs.ts';
import { modelCard } from '../lib/model/card.ts';
import { writeAtomic } from '../lib/files.ts';
import { hubFiles, preparePush, pushCommand, pushFiles } from '../lib/model/upload.ts';
import { GRAD_SCALER_DEFAULTS, lossScaleFromJson } from '../lib/lossscale.ts';
import { choosePrecision, precisionEnvironment } from '../lib/precision.ts';
import { keyFromSeed } from '../lib/random.ts';
import { reportHtml } from '../lib/report.ts';
import { defaultLoggingDir, openTensorboard, type ReportTo } from '../lib/tensorboard.ts';
import { schedulePlan, trainLoop, type LogRecord } from '../lib/trainer.ts';
import type { TrainState } from '../lib/train.ts';

await runScript('train', async () => {
  const a = scriptArgs('train');
  const info = rankFromEnv(process.env, a.local_rank as number);
  const main = info.rank === 0;
  // On a terminal, a progress bar with ETA sits on the last line; log lines are printed above it.
  const tty = main && process.stdout.isTTY === true;
  let barShown = false;
  const clearBar = () => {
    if (barShown) process.stdout.write('\r\x1b[K');
    barShown = false;
  };
  const clock = (s: number) => (!Number.isFinite(s) ? '?' : s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`);
  const drawBar = (label: string, done: number, total: number, secondsPerUnit: number) => {
    if (!tty) return;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const line = `${label} [${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ${done}/${total} ${(frac * 100).toFixed(0)}%  eta ${clock(secondsPerUnit * (total - done))}`;
    process.stdout.write(`\r\x1b[K${line.slice(0, (process.stdout.columns || 80) - 1)}`);
    barShown = true;
  };
  const say = (line: string) => {
    if (!main) return;
    clearBar();
    console.log(line);
  };
  const outputDir = a.output_dir as string;
  const resume = a.resume_from_checkpoint as string | null;
  if (main) prepareOutputDir(outputDir, { resume: resume !== null, overwrite: a.overwrite_output_dir as boolean }).forEach(say);
  // Before any work, as Hugging Face's Trainer does at init: a missing token, no rights or no network fail now.
  const push = main && a.push_to_hub
    ? await preparePush({ hubModelId: a.hub_model_id as string | null, outputDir, token: a.hub_token as string | null, private: a.hub_private_repo as boolean | null })
    : null;
  if (push) say(`pushing to ${push.endpoint}/${push.repo} (${a.hub_strategy === 'end' ? 'at the end' : 'at every save and at the end'})`);
  // A peer that dies or freezes ends this rank at once, also between collectives (during an evaluation,
  // a checkpoint), so that no rank waits out the timeout of its next collective.
  const onFailure = (e: Error) => {
    console.error(`train: ${e.message}`);
    process.exit(1);
  };
  // before the backend starts: the tensorflow group starts it itself, its context a TensorFlow worker
  const { group, description: groupDescription } = await connectGroup(info, {
    ddpBackend: a.ddp_backend as DdpBackend, backend: a.backend as BackendChoice, timeoutMs: (a.ddp_timeout as number) * 1000,
    bucketBytes: a.ddp_bucket_cap_mb === null ? undefined : (a.ddp_bucket_cap_mb as number) * 2 ** 20, onFailure,
  });
  await initBackend(a.backend as BackendChoice);
  const precision = choosePrecision({ bf16: a.bf16 as boolean, fp16: a.fp16 as boolean }, precisionEnvironment(backendInfo()));
  precision.warnings.forEach(say);

  const loaded = await loadDenseModel({ ...modelRequestFromArgs(a), precision: precision.precision });
  loaded.notes.forEach(say);
  const tok = loaded.tokenizer;
  const exampleOpts = exampleOptionsFromArgs(tok, a);
  const started = performance.now();
  // Rank 0 downloads, tokenizes and writes the cache; the other ranks wait, then read it (Tevatron's barrier around process()).
  if (group.worldSize > 1 && !main) await group.barrier();
  // Tevatron: with both flags, --train_dir supplies the files (and --dataset_name only names the recipe)
  let files: string[];
  if (a.train_dir !== null) files = listDataFiles(a.train_dir as string);
  else {
    const ds = await resolveDataset(a.dataset_name as string, { cacheDir: (a.cache_dir as string | null) ?? undefined });
    say(`dataset ${ds.repo} (config ${ds.config}, split ${ds.split}): ${ds.files.length} file(s) from revision ${ds.source} (${ds.commit.slice(0, 10)})`);
    files = ds.files;
  }
  const data = await loadTrainData(files, exampleOpts, {
    tokenizer: tok,
    cacheDir: a.cache_dir ? path.join(a.cache_dir as string, 'tevatron_ts_tokenized') : defaultTokenizedCacheDir(),
    procNum: a.dataset_proc_num as number,
    onProgress: (done, total) => drawBar('tokenizing (MB)', Math.round(done / 1e6), Math.round(total / 1e6), (performance.now() - started) / 1e3 / Math.max(1, done / 1e6)),
    onWait: (lock) => say(`waiting for another process tokenizing the same data (lock ${lock}; delete it if no such process runs)`),
  });
  if (group.worldSize > 1 && main) await group.barrier();
  const examples = data.examples;
  data.notes.forEach(say);
  checkExamples(examples, a.train_n_passages as number);
  const how = data.fromCache ? `opened from the tokenized store ${data.fromCache}` : `tokenized${data.workers > 0 ? ` by ${data.workers} worker threads` : ''}${data.store ? ` into ${data.store.dir}` : ''}`;
  say(`backend ${describeBackend()}; ${examples.length} training queries ${how} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (group.worldSize > 1) say(`process group: ${groupDescription}`);
  say(`precision: ${precision.description}`);
  const evalSet = main && a.eval_queries ? loadEvalSet(a.eval_queries as string, a.eval_corpus as string, a.eval_qrels as string | null, exampleOpts) : null;
  const evalSteps = (a.eval_steps ?? a.logging_steps) as number;

  let state: TrainState = { params: loaded.params, optimizer: initAdamW(loaded.params), key: keyFromSeed(a.seed as number) };
  let history: Record<string, number>[] = [];
  let runLoggingDir: string | null = null;
  if (resume) {
    const dir = resolveResume(resume, outputDir);
    const ckpt = await readCheckpoint(dir, a.untie_encoder as boolean, loaded.params);
    state = { params: ckpt.params, optimizer: ckpt.optimizer, key: state.key };
    if (precision.lossScaling && ckpt.state.loss_scale !== undefined) state.lossScale = lossScaleFromJson(ckpt.state.loss_scale, path.join(dir, 'trainer_state.json'));
    history = ckpt.state.log_history;
    runLoggingDir = typeof ckpt.state.logging_dir === 'string' ? ckpt.state.logging_dir : null;
    say(`resuming from ${dir} at step ${ckpt.state.global_step}`);
    if (main && (await truncateMetrics(outputDir, ckpt.state.global_step)) > 0) say(`metrics.jsonl cut back to step ${ckpt.state.global_step}`);
  } else if (group.worldSize > 1) {
    state.params = await broadcastParams(state.params, group, 0);
  }

  const loop = {
    batchSize: a.per_device_train_batch_size as number,
    nPassages: a.train_n_passages as number,
    qMaxLen: a.q_max_len as number,
    pMaxLen: a.p_max_len as number,
    special: tok.special,
    seed: a.seed as number,
    numTrainEpochs: a.num_train_epochs as number,
    maxSteps: a.max_steps as number,
    gradientAccumulationSteps: a.gradient_accumulation_steps as number,
    warmupRatio: a.warmup_ratio as number,
    warmupSteps: a.warmup_steps as number,
    loggingSteps: a.logging_steps as number,
    saveSteps: a.save_steps as number,
    positiveNoShuffle: a.positive_passage_no_shuffle as boolean,
    negativeNoShuffle: a.negative_passage_no_shuffle as boolean,
  };
  const plan = schedulePlan(examples.length, loop, group.worldSize);
  say(
    `${plan.total} steps (${plan.perEpoch} per epoch), warmup ${plan.warmup}; batch ${loop.batchSize} x ${group.worldSize} process(es) x ${loop.nPassages} passages` +
      (a.grad_cache ? `, grad cache ${a.gc_q_chunk_size}/${a.gc_p_chunk_size}` : '') +
      (a.negatives_x_device ? ', negatives across processes' : ''),
  );
  // A resumed run continues its own TensorBoard curves (the dir its checkpoint names), unless --logging_dir says otherwise.
  const loggingDir = (a.logging_dir as string | null) ?? runLoggingDir ?? defaultLoggingDir(outputDir);
  const tb = main ? openTensorboard({ reportTo: a.report_to as ReportTo, dir: loggingDir, resume: resume !== null }) : null;
  if (tb?.note) say(tb.note);
  const trainerState = (step: number, epoch: number, s: TrainState): TrainerState => ({
    global_step: step, epoch, max_steps: plan.total, seed: a.seed as number, backend: backendInfo(), world_size: group.worldSize,
    train_batch_size: loop.batchSize, precision: precision.precision, ...(s.lossScale ? { loss_scale: s.lossScale } : {}), logging_dir: loggingDir, log_history: history,
  });
  const writeCard = () => writeAtomic(path.join(outputDir, 'README.md'), modelCard({
    args: a, settings: loaded.settings, pooler: loaded.options.pooler ?? null, fromScratch: loaded.fromScratch, worldSize: group.worldSize, plan, history,
    repoId: push?.repo ?? null, backend: describeBackend(),
  }));
  let pushFailure: string | null = null;
  const saved = (params: TrainState['params']): SavedModel => ({
    config: loaded.rawConfig, params, untied: a.untie_encoder as boolean, pooler: loaded.options.pooler ?? null, settings: loaded.settings, tokenizer: tok,
  });
  const report = () => writeFile(path.join(outputDir, 'report.html'), reportHtml(`tevatron-ts: ${(a.run_name as string | null) ?? outputDir}`, history, { model: a.model_name_or_path as string, backend: describeBackend(), steps: plan.total }));
  const t0 = performance.now();
  const firstStep = state.optimizer.step;

  state = await trainLoop(
    loaded.model,
    state,
    examples,
    loop,
    {
      adamw: { lr: a.learning_rate as number, beta1: a.adam_beta1 as number, beta2: a.adam_beta2 as number, eps: a.adam_epsilon as number, weightDecay: a.weight_decay as number },
      schedule: a.lr_scheduler_type as ScheduleType,
      maxGradNorm: a.max_grad_norm as number,
      gradCache: a.grad_cache ? { qChunkSize: a.gc_q_chunk_size as number, pChunkSize: a.gc_p_chunk_size as number } : null,
      dropout: true,
      temperature: loaded.settings.temperature,
      group,
      negativesXDevice: a.negatives_x_device as boolean,
      lossScale: precision.lossScaling ? GRAD_SCALER_DEFAULTS : null,
    },
    {
      onSkip: (step, scale) => say(`step ${step}: the gradients overflowed in float16; step skipped, loss scale now ${scale}`),
      onLog: async (r: LogRecord) => {
        if (!main) return;
        history.push({ ...r });
        const eta = ((performance.now() - t0) / 1000 / (r.step - firstStep)) * (plan.total - r.step);
        clearBar();
        console.log(`step ${r.step}/${plan.total}  epoch ${r.epoch.toFixed(2)}  loss ${r.loss.toFixed(4)}  lr ${r.learning_rate.toExponential(2)}  grad_norm ${r.grad_norm.toFixed(3)}  ${r.samples_per_second.toFixed(1)} samples/s  eta ${eta.toFixed(0)} s`);
        await appendMetrics(outputDir, r);
        tb?.writer?.write({ ...r });
        await report();
      },
      onStep: async (s, step, epoch, final) => {
        if (main) drawBar(`step`, step, plan.total, (performance.now() - t0) / 1000 / (step - firstStep));
        if (final) clearBar();
        if (!evalSet || (step % evalSteps !== 0 && !final)) return;
        const metrics = await evaluateRetrieval(loaded.model, s.params, evalSet, { qMaxLen: loop.qMaxLen, pMaxLen: loop.pMaxLen, special: tok.special });
        const record = { step, epoch: Number(epoch.toFixed(4)), ...metrics };
        history.push(record);
        clearBar();
        console.log(`eval at step ${step}: ${Object.entries(metrics).map(([k, v]) => `${k.replace('eval_', '')} ${v.toFixed(4)}`).join('  ')}`);
        await appendMetrics(outputDir, record);
        tb?.writer?.write(record);
      },
      onSave: async (s, step, epoch, final) => {
        if (!main) return;
        // (a run resumed at its last step is saved as the final model; its checkpoint is where it resumed from)
        const checkpoint = step % loop.saveSteps === 0 && step !== firstStep ? await writeCheckpoint(outputDir, saved(s.params), s.optimizer, trainerState(step, epoch, s), a.save_total_limit as number | null) : null;
        if (push && checkpoint && !final && a.hub_strategy === 'every_save') {
          await writeCard();
          // A failed push mid-run costs nothing that the push at the end does not redo: training goes on.
          await pushFiles(push, hubFiles(outputDir, checkpoint), `Training in progress, step ${step}`).then(
            (c) => say(`pushed step ${step} to ${push.repo} (${c.commit.slice(0, 10)})`),
            (e: Error) => say(`warning: ${e.message}; training goes on, the end of training pushes again`),
          );
        }
        // for tests: die as kill -9 would, after this save step's checkpoint and before the final model
        if (process.env.TEVATRON_TEST_KILL_AT_SAVE === String(step)) process.kill(process.pid, 'SIGKILL');
        if (final) {
          await writeModel(outputDir, saved(s.params), true);
          await writeFile(path.join(outputDir, 'trainer_state.json'), JSON.stringify(trainerState(step, epoch, s), null, 2) + '\n');
          await report();
          await writeCard();
          clearBar();
          console.log(`saved the model to ${outputDir} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          if (push) {
            await pushFiles(push, hubFiles(outputDir), 'End of training').then(
              (c) => say(`pushed ${outputDir} to ${c.url}`),
              (e: Error) => (pushFailure = `${e.message}. The model and logs are saved in ${outputDir}; push them with: ${pushCommand(outputDir, push.repo)}`),
            );
          }
        }
      },
    },
  );
  if (group.worldSize > 1) await group.barrier();
  data.store?.close();
  group.close?.();
  if (pushFailure) throw new Error(pushFailure);
});
