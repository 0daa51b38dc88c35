// One optimizer step as a function of a value: (state, batches) -> (next state, metrics). Composes the
// plain or grad-cache gradient, micro-batch accumulation, the cross-rank average, dynamic loss scaling
// (--fp16), clipping, the learning-rate schedule and AdamW.
import * as tf from '@tensorflow/tfjs';
import type { ProcessGroup } from './dist/group.ts';
import { allReduceParams } from './dist/tensors.ts';
import { gradCacheStep } from './gradcache.ts';
import { initLossScale, updateLossScale, type LossScaleConfig, type LossScaleState } from './lossscale.ts';
import type { BiEncoder, ParamMap } from './model/types.ts';
import { adamwStep, clipByGlobalNorm, disposeParams, lrMultiplier, type AdamWConfig, type AdamWState, type ScheduleType } from './optim.ts';
import { foldIn, type Key } from './random.ts';
import { accumulate, fullBatchStep, type TrainBatch } from './step.ts';

export interface TrainState {
  params: ParamMap;
  optimizer: AdamWState;
  /** The run's random key; step s draws dropout from foldIn(key, s). */
  key: Key;
  /** With loss scaling (TrainConfig.lossScale); absent: it starts at the config's initial scale. */
  lossScale?: LossScaleState;
}

export interface TrainConfig {
  /** lr is the peak learning rate. */
  adamw: AdamWConfig;
  schedule: ScheduleType;
  warmupSteps: number;
  totalSteps: number;
  /** 0 disables clipping. */
  maxGradNorm: number;
  /** Grad-cache chunk sizes; null for the plain step. */
  gradCache: { qChunkSize: number; pChunkSize: number } | null;
  /** Train with the model's dropout (false: deterministic, e.g. for gradient checks). */
  dropout: boolean;
  temperature?: number;
  group?: ProcessGroup;
  negativesXDevice?: boolean;
  /** Dynamic loss scaling (--fp16 products); null or absent: none. */
  lossScale?: LossScaleConfig | null;
}

export interface StepMetrics {
  loss: number;
  gradNorm: number;
  learningRate: number;
  /** Loss scaling only: the scale after this step, and whether the step overflowed and was skipped. */
  lossScale?: number;
  skipped?: boolean;
}

/**
 * The gradient of one optimizer step and its loss: the mean over micro-batches (gradient accumulation),
 * then the mean over ranks. A rank whose loss is not finite sends NaN gradients, so that every rank sees
 * a non-finite result of the same all-reduce and stops at the same step (none waits in a collective).
 */
export async function stepGradients(model: BiEncoder, state: TrainState, batches: TrainBatch[], cfg: TrainConfig): Promise<{ grads: ParamMap; loss: number }> {
  const step = state.optimizer.step;
  const scaler = cfg.lossScale ? (state.lossScale ?? initLossScale(cfg.lossScale)) : null;
  let grads: ParamMap | null = null;
  let loss = 0;
  for (let i = 0; i < batches.length; i++) {
    const opts = {
      key: cfg.dropout ? foldIn(foldIn(state.key, step), i) : null,
      temperature: cfg.temperature,
      group: cfg.group,
      negativesXDevice: cfg.negativesXDevice,
      lossScale: scaler?.scale,
    };
    const res = cfg.gradCache ? await gradCacheStep(model, state.params, batches[i], { ...opts, ...cfg.gradCache }) : await fullBatchStep(model, state.params, batches[i], opts);
    loss += res.loss / batches.length;
    grads = accumulate(grads, res.grads);
  }
  // one division for the micro-batch mean and the loss scale (a power of two: exact); by NaN when the loss
  // is not finite, so that every gradient is
  const divisor = Number.isFinite(loss) ? batches.length * (scaler?.scale ?? 1) : NaN;
  if (divisor !== 1) {
    const summed = grads!;
    grads = Object.fromEntries(Object.entries(summed).map(([k, g]) => [k, tf.div(g, divisor)]));
    disposeParams(summed);
  }
  if (cfg.group && cfg.group.worldSize > 1) {
    const local = grads!;
    grads = await allReduceParams(local, cfg.group, 'mean');
    disposeParams(local);
  }
  return { grads: grads!, loss };
}

/**
 * One optimizer step over one or more micro-batches (gradient accumulation averages them). Consumes
 * `state`: its parameter and moment tensors are disposed once the next ones exist (memory is the limit).
 * With loss scaling, a step whose loss or gradients are not finite skips its update and halves the scale
 * (GradScaler) while the scale is above 1. Otherwise a loss or gradient norm that is not finite is an error
 * naming the step, thrown before any update: `state` is then left as it was, and nothing non-finite reaches
 * a checkpoint.
 */
export async function trainStep(model: BiEncoder, state: TrainState, batches: TrainBatch[], cfg: TrainConfig): Promise<{ state: TrainState; metrics: StepMetrics }> {
  const step = state.optimizer.step;
  const scaler = cfg.lossScale ? (state.lossScale ?? initLossScale(cfg.lossScale)) : null;
  const { grads, loss } = await stepGradients(model, state, batches, cfg);
  const clipped = clipByGlobalNorm(grads, cfg.maxGradNorm);
  const finite = Number.isFinite(loss) && Number.isFinite(clipped.norm);
  // GradScaler's overflow: skipped, the scale halved; once the scale is down to 1 the values themselves are
  // not finite, and that is divergence
  const overflow = !finite && scaler !== null && scaler.scale > 1;
  if (!finite && !overflow) {
    if (clipped.grads !== grads) disposeParams(clipped.grads);
    disposeParams(grads);
    const where = cfg.group && cfg.group.worldSize > 1 ? ` (on rank ${cfg.group.rank}; every rank stops at this step)` : '';
    throw new Error(
      `step ${step + 1}: the loss is ${loss} and the gradient norm ${clipped.norm}${where}: training diverged and stops before this update, ` +
        'so nothing non-finite is saved (checkpoints already written stay); lower --learning_rate, keep --max_grad_norm > 0, or check the data',
    );
  }
  // skipped steps (overflow) advance the global step but neither AdamW's step count nor the schedule,
  // as Hugging Face's Trainer does when GradScaler skips optimizer.step()
  const applied = step - (scaler?.skipped ?? 0);
  const learningRate = cfg.adamw.lr * lrMultiplier(cfg.schedule, applied, cfg.warmupSteps, cfg.totalSteps);
  let next = { params: state.params, state: { ...state.optimizer, step: step + 1 } };
  if (!overflow) {
    const updated = adamwStep(state.params, clipped.grads, { ...state.optimizer, step: applied }, { ...cfg.adamw, lr: learningRate });
    disposeParams(state.params, state.optimizer.m, state.optimizer.v);
    next = { params: updated.params, state: { ...updated.state, step: step + 1 } };
  }
  if (clipped.grads !== grads) disposeParams(clipped.grads);
  disposeParams(grads);
  const metrics: StepMetrics = { loss, gradNorm: clipped.norm, learningRate };
  if (!scaler) return { state: { ...state, params: next.params, optimizer: next.state }, metrics };
  const lossScale = updateLossScale(scaler, !overflow, cfg.lossScale!);
  return { state: { ...state, params: next.params, optimizer: next.state, lossScale }, metrics: { ...metrics, lossScale: lossScale.scale, skipped: overflow } };
}
