import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { localProcessGroups, singleProcessGroup } from '../lib/dist/group.ts';

const f32 = (...v: number[]) => Float32Array.from(v);

test('single process: collectives are the identity', async () => {
  const g = singleProcessGroup();
  assert.equal(Array.from(await g.allGather(f32(1, 2))), [1, 2]);
  assert.equal(Array.from(await g.allReduce(f32(1, 2), 'mean')), [1, 2]);
  assert.equal(Array.from(await g.broadcast(f32(3))), [3]);
  await g.barrier();
});

test('local group: gather in rank order, sum, mean, broadcast from a root, barrier', async () => {
  const groups = localProcessGroups(3);
  const results = await Promise.all(
    groups.map(async (g) => {
      const mine = f32(g.rank, 10 * g.rank);
      return {
        gathered: Array.from(await g.allGather(mine)),
        sum: Array.from(await g.allReduce(mine, 'sum')),
        mean: Array.from(await g.allReduce(mine, 'mean')),
        bcast: Array.from(await g.broadcast(mine, 2)),
        done: await g.barrier(),
      };
    }),
  );
  for (const r of results) {
    assert.equal(r.gathered, [0, 0, 1, 10, 2, 20]);
    assert.equal(r.sum, [3, 30]);
    assert.equal(r.mean, [1, 10]);
    assert.equal(r.bcast, [2, 20]);
  }
});

test('local group: mismatched calls and lengths fail every rank with a clear error', async () => {
  const [a, b] = localProcessGroups(2);
  const outcomes = await Promise.allSettled([a.allReduce(f32(1, 2)), b.allReduce(f32(1))]);
  for (const o of outcomes) assert.match(String((o as PromiseRejectedResult).reason), /rank 1 passed 1 values, others 2/);
  const [c, d] = localProcessGroups(2);
  const mixed = await Promise.allSettled([c.allGather(f32(1)), d.barrier()]);
  for (const o of mixed) assert.match(String((o as PromiseRejectedResult).reason), /rank 1 called barrier/);
});

test('local group: a rank that never joins is named in an error, not a hang', async () => {
  const [a] = localProcessGroups(3, 50);
  try {
    await a.allGather(f32(1));
    assert.unreachable('should time out');
  } catch (e) {
    assert.match(String(e), /rank\(s\) 1, 2 did not join within 50 ms/);
  }
});

test.run();
