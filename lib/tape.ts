// Reverse-mode gradients over tfjs's tape that release memory as they go. tfjs's engine.gradients keeps
// every node's saved tensors and every intermediate gradient until the whole backward pass ends; here a
// node's saved tensors (clones the engine made for it alone) and its outputs' gradients are disposed as
// soon as that node has been differentiated, as PyTorch's autograd frees a node's buffers. Peak memory
// of a step falls to the forward activations plus the gradient frontier. Uses the engine's tape
// internals of @tensorflow/tfjs-core 4.22 (the version package.json pins).
import * as tf from '@tensorflow/tfjs';
// a pure function (no engine state), so this module copy of it is as good as the bundled one
import { getFilteredNodesXToY } from '@tensorflow/tfjs-core/dist/tape.js';

interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(name: string, f: () => T): T;
}

/**
 * value = f() and the gradients of value (or, with `dy`, the vector-Jacobian product dy·∂f/∂x) with
 * respect to each of xs; null for an x that f does not reach. What tf.engine().gradients computes.
 */
export function gradients(f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor): { value: tf.Tensor; grads: (tf.Tensor | null)[] } {
  const engine = tf.engine() as unknown as EngineInternals;
  const y = engine.scopedRun(() => engine.startTape(), () => engine.endTape(), () => engine.tidy('forward', f));
  const fullTape = engine.state.activeTape!;
  const tape = getFilteredNodesXToY(fullTape as never, xs, y) as unknown as TapeNode[];
  const keepIds = new Set(xs.map((x) => x.id));
  return engine.tidy('backward', () => {
    // gradient of each tensor id so far; one tensor object may be the gradient of several ids
    const acc = new Map<number, tf.Tensor>();
    const holders = new Map<tf.Tensor, number>();
    const put = (id: number, g: tf.Tensor) => {
      acc.set(id, g);
      holders.set(g, (holders.get(g) ?? 0) + 1);
    };
    const release = (id: number) => {
      const g = acc.get(id)!;
      acc.delete(id);
      const n = holders.get(g)! - 1;
      if (n > 0) holders.set(g, n);
      else {
        holders.delete(g);
        if (g !== dy) g.dispose(); // the caller's dy stays theirs
      }
    };
    put(y.id, dy ?? tf.onesLike(y));
    for (let i = tape.length - 1; i >= 0; i--) {
      const node = tape[i];
      if (!node.gradient) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      const inputs = Object.entries(node.inputs);
      // one scope for the node: a custom gradient's intermediates (and its gradients for pruned inputs) go at once
      const dxs = tf.tidy(() => {
        const thunks = node.gradient!(node.outputs.map((o) => acc.get(o.id) ?? null));
        return inputs.map(([name]) => thunks[name]());
      });
      for (const [j, [, x]] of inputs.entries()) {
        const dx = dxs[j];
        if (acc.has(x.id)) {
          const sum = tf.add(acc.get(x.id)!, dx);
          release(x.id);
          if (!holders.has(dx)) dx.dispose();
          put(x.id, sum);
        } else put(x.id, dx);
      }
      // this node is done: its outputs' gradients and its saved tensors (clones made for it) are not read again
      for (const o of node.outputs) if (acc.has(o.id) && !keepIds.has(o.id)) release(o.id);
      for (const t of node.saved ?? []) t.dispose();
    }
    const grads = xs.map((x) => acc.get(x.id) ?? null);
    if (engine.state.gradientDepth === 0) {
      for (const node of fullTape) for (const t of node.saved ?? []) t.dispose();
      engine.state.activeTape = null;
    }
    return { value: y, grads } as never;
  });
}
