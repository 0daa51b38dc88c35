// Collectives on parameter maps: flatten every tensor into one buffer (one message per step, not one
// per tensor), run the collective, and rebuild tensors with the same names and shapes. A group whose
// collectives run inside the backend takes the tensors themselves (it buckets them).
import * as tf from '@tensorflow/tfjs';
import type { ParamMap } from '../model/types.ts';
import type { ProcessGroup, ReduceOp } from './group.ts';

const sortedValues = (params: ParamMap) => Object.keys(params).sort().map((k) => params[k]);
const byName = (like: ParamMap, tensors: tf.Tensor[]): ParamMap => Object.fromEntries(Object.keys(like).sort().map((k, i) => [k, tensors[i]]));

/** Names in a fixed order (sorted), so every rank lays out the flat buffer identically. */
export function flattenParams(params: ParamMap): { names: string[]; data: Float32Array } {
  const names = Object.keys(params).sort();
  const total = names.reduce((n, k) => n + params[k].size, 0);
  const data = new Float32Array(total);
  let at = 0;
  for (const k of names) {
    data.set(params[k].dataSync() as Float32Array, at);
    at += params[k].size;
  }
  return { names, data };
}

export function unflattenParams(like: ParamMap, names: string[], data: Float32Array): ParamMap {
  const out: ParamMap = {};
  let at = 0;
  for (const k of names) {
    const { shape, size } = like[k];
    out[k] = tf.tensor(data.subarray(at, at + size), shape, 'float32');
    at += size;
  }
  return out;
}

/** The element-wise mean (or sum) of every rank's gradients: what each rank then applies. */
export async function allReduceParams(grads: ParamMap, group: ProcessGroup, op: ReduceOp = 'mean'): Promise<ParamMap> {
  if (group.worldSize === 1) return { ...grads };
  if (group.allReduceTensors) return byName(grads, await group.allReduceTensors(sortedValues(grads), op));
  const { names, data } = flattenParams(grads);
  return unflattenParams(grads, names, await group.allReduce(data, op));
}

/** Rank `root`'s parameters on every rank (the start of a multi-process run). */
export async function broadcastParams(params: ParamMap, group: ProcessGroup, root = 0): Promise<ParamMap> {
  if (group.worldSize === 1) return { ...params };
  if (group.broadcastTensors) return byName(params, await group.broadcastTensors(sortedValues(params), root));
  const { names, data } = flattenParams(params);
  return unflattenParams(params, names, await group.broadcast(data, root));
}
