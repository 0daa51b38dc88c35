// Dynamic loss scaling for float16 products (--fp16), by the rules of PyTorch's GradScaler that Hugging
// Face's Trainer uses: the loss is multiplied by the scale before the backward pass so that small
// gradients survive float16; the gradients are divided by it before clipping; a step whose gradients
// overflowed (inf or nan) is skipped and the scale halved; after `growthInterval` good steps in a row
// the scale doubles. A value, like the rest of the training state.
import * as tf from '@tensorflow/tfjs';

export interface LossScaleConfig {
  /** 2^16, GradScaler's init_scale. */
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  /** Good steps in a row before the scale grows (GradScaler's growth_interval: 2000). */
  growthInterval: number;
}

export const GRAD_SCALER_DEFAULTS: Readonly<LossScaleConfig> = Object.freeze({ initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });

export interface LossScaleState {
  scale: number;
  /** Good steps since the scale last changed (GradScaler's _growth_tracker). */
  goodSteps: number;
  /** Steps skipped so far: AdamW's step count and the schedule advance only on the others. */
  skipped: number;
}

export function initLossScale(cfg: LossScaleConfig = GRAD_SCALER_DEFAULTS): LossScaleState {
  return { scale: cfg.initScale, goodSteps: 0, skipped: 0 };
}

/** The state after a step whose (unscaled) gradients were `finite` or not; a non-finite step is skipped. */
export function updateLossScale(state: LossScaleState, finite: boolean, cfg: LossScaleConfig = GRAD_SCALER_DEFAULTS): LossScaleState {
  if (!finite) return { scale: state.scale * cfg.backoffFactor, goodSteps: 0, skipped: state.skipped + 1 };
  const goodSteps = state.goodSteps + 1;
  if (goodSteps === cfg.growthInterval) return { ...state, scale: state.scale * cfg.growthFactor, goodSteps: 0 };
  return { ...state, goodSteps };
}

/** The scaler's state as trainer_state.json holds it (`loss_scale`), checked; `source` names the file in errors. */
export function lossScaleFromJson(json: unknown, source: string): LossScaleState {
  const s = json as Partial<Record<keyof LossScaleState, unknown>> | null;
  const ok = (v: unknown, min: number) => typeof v === 'number' && Number.isFinite(v) && v >= min;
  if (!s || typeof s !== 'object' || !ok(s.scale, Number.MIN_VALUE) || !ok(s.goodSteps, 0) || !ok(s.skipped, 0)) {
    throw new Error(`${source}: loss_scale must be {"scale": > 0, "goodSteps": >= 0, "skipped": >= 0}, got ${JSON.stringify(json)}; fix or delete it to restart the scaler`);
  }
  return { scale: s.scale as number, goodSteps: s.goodSteps as number, skipped: s.skipped as number };
}

/** The seed of the backward pass (d(scale·loss)/dloss): the scale as a scalar; none without scaling. */
export function lossScaleSeed(scale: number | undefined): tf.Scalar | undefined {
  return scale !== undefined && scale !== 1 ? tf.scalar(scale) : undefined;
}
