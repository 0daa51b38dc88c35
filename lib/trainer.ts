// The training loop: epochs of sampled, collated batches through trainStep, with Hugging Face
// Trainer's step accounting (max_steps or epochs, gradient accumulation, logging and save intervals)
// and exact resumption — data order, groups and dropout are pure functions of (seed, epoch, step), so
// a resumed run replays the very batches an uninterrupted one would have seen.
import type { SpecialTokens } from './data/collator.ts';
import { collateGroups } from './data/collator.ts';
import { epochBatches, stepsPerEpoch } from './data/sampler.ts';
import { asSource, checkExamples, sampleGroup, type TrainExample, type TrainSource } from './data/sample.ts';
import type { BiEncoder } from './model/types.ts';
import { warmupSteps } from './optim.ts';
import { trainStep, type TrainConfig, type TrainState } from './train.ts';

export interface LoopOptions {
  batchSize: number;
  nPassages: number;
  qMaxLen: number;
  pMaxLen: number;
  special: SpecialTokens;
  seed: number;
  numTrainEpochs: number;
  /** > 0 overrides numTrainEpochs. */
  maxSteps: number;
  gradientAccumulationSteps: number;
  warmupRatio: number;
  warmupSteps: number;
  loggingSteps: number;
  saveSteps: number;
  positiveNoShuffle?: boolean;
  negativeNoShuffle?: boolean;
}

export interface LogRecord {
  step: number;
  epoch: number;
  loss: number;
  learning_rate: number;
  grad_norm: number;
  samples_per_second: number;
  /** With loss scaling (--fp16): the scale after the step. */
  loss_scale?: number;
}

export interface LoopHooks {
  onLog?(record: LogRecord): void | Promise<void>;
  /** A step whose scaled gradients overflowed (--fp16): skipped; `lossScale` is the halved scale. */
  onSkip?(step: number, lossScale: number): void | Promise<void>;
  /** After every optimizer step (e.g. evaluation every eval_steps). */
  onStep?(state: TrainState, step: number, epoch: number, final: boolean): void | Promise<void>;
  /**
   * Called after optimizer step `step` when it is a save step, and after the last step (`final`); a state
   * resumed at or past the last step gets the final call alone (its run was stopped before the final save).
   */
  onSave?(state: TrainState, step: number, epoch: number, final: boolean): void | Promise<void>;
}

/** Total optimizer steps and the warmup, as Hugging Face's Trainer computes them. */
export function schedulePlan(numExamples: number, o: LoopOptions, worldSize = 1): { perEpoch: number; total: number; warmup: number; epochs: number } {
  const perEpoch = stepsPerEpoch(numExamples, o.batchSize, worldSize, o.gradientAccumulationSteps);
  if (perEpoch === 0) {
    throw new Error(`${numExamples} training examples make no full batch of ${o.batchSize * o.gradientAccumulationSteps * worldSize} (per_device_train_batch_size × gradient_accumulation_steps × processes); lower the batch size`);
  }
  const total = o.maxSteps > 0 ? o.maxSteps : Math.ceil(o.numTrainEpochs * perEpoch);
  return { perEpoch, total, warmup: warmupSteps(total, o.warmupRatio, o.warmupSteps), epochs: Math.ceil(total / perEpoch) };
}

/**
 * Trains from `state` (step state.optimizer.step, e.g. a resumed checkpoint) to the planned total.
 * `cfg` is the step configuration without the schedule totals, which the plan fills in.
 */
export async function trainLoop(
  model: BiEncoder,
  state: TrainState,
  examples: readonly TrainExample[] | TrainSource,
  o: LoopOptions,
  cfg: Omit<TrainConfig, 'totalSteps' | 'warmupSteps'>,
  hooks: LoopHooks = {},
): Promise<TrainState> {
  const W = cfg.group?.worldSize ?? 1;
  const rank = cfg.group?.rank ?? 0;
  const source = asSource(examples); // the tokenized store reads each batch's rows from disk when asked
  checkExamples(source, o.nPassages); // fail now, not at the step that samples the bad example
  const plan = schedulePlan(source.length, o, W);
  const full: TrainConfig = { ...cfg, totalSteps: plan.total, warmupSteps: plan.warmup };
  const accum = o.gradientAccumulationSteps;
  let window = { loss: 0, steps: 0, seconds: 0 }; // seconds spent in steps, not in hooks (evaluation, saving)
  if (state.optimizer.step >= plan.total) {
    await hooks.onSave?.(state, state.optimizer.step, state.optimizer.step / plan.perEpoch, true);
    return state;
  }
  for (let step = state.optimizer.step; step < plan.total; ) {
    const epoch = Math.floor(step / plan.perEpoch);
    const batches = epochBatches(source.length, { batchSize: o.batchSize, seed: o.seed, epoch, rank, worldSize: W });
    for (let k = (step % plan.perEpoch) * accum; k + accum <= batches.length && step < plan.total; k += accum) {
      const micro = batches.slice(k, k + accum).map((idx) =>
        collateGroups(
          idx.map((i) => sampleGroup(source.get(i), i, { nPassages: o.nPassages, seed: o.seed, epoch, positiveNoShuffle: o.positiveNoShuffle, negativeNoShuffle: o.negativeNoShuffle })),
          { qMaxLen: o.qMaxLen, pMaxLen: o.pMaxLen, special: o.special },
        ),
      );
      const t0 = performance.now();
      const res = await trainStep(model, state, micro, full);
      window.seconds += (performance.now() - t0) / 1000;
      state = res.state;
      step = state.optimizer.step;
      window.loss += res.metrics.loss;
      window.steps += 1;
      if (res.metrics.skipped) await hooks.onSkip?.(step, res.metrics.lossScale!);
      const epochFloat = step / plan.perEpoch;
      if (step % o.loggingSteps === 0 || step === plan.total) {
        await hooks.onLog?.({
          step,
          epoch: Number(epochFloat.toFixed(4)),
          loss: window.loss / window.steps,
          learning_rate: res.metrics.learningRate,
          grad_norm: res.metrics.gradNorm,
          samples_per_second: (window.steps * accum * o.batchSize * W) / window.seconds,
          ...(res.metrics.lossScale !== undefined ? { loss_scale: res.metrics.lossScale } : {}),
        });
        window = { loss: 0, steps: 0, seconds: 0 };
      }
      await hooks.onStep?.(state, step, epochFloat, step === plan.total);
      if (step % o.saveSteps === 0 || step === plan.total) await hooks.onSave?.(state, step, epochFloat, step === plan.total);
    }
  }
  return state;
}
