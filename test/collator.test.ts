import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collateGroups, collateSequences, rowSlice } from '../lib/data/collator.ts';
import { SPECIAL } from './helpers.ts';

const rows = (ids: Int32Array, L: number) => Array.from({ length: ids.length / L }, (_, r) => Array.from(ids.subarray(r * L, (r + 1) * L)));

test('[CLS] content[:max−2] [SEP], padded to max length, with the attention mask', () => {
  const b = collateSequences([[7, 8, 9, 10, 11], [5], []], 5, SPECIAL);
  assert.is(b.rows, 3);
  assert.is(b.length, 5);
  assert.equal(rows(b.inputIds, 5), [[1, 7, 8, 9, 2], [1, 5, 2, 0, 0], [1, 2, 0, 0, 0]]);
  assert.equal(rows(b.attentionMask, 5), [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]);
  assert.throws(() => collateSequences([[1]], 1, SPECIAL), /max length must be an integer >= 2/);
});

test('groups: queries [B, q_max_len], passages [B·n, p_max_len], rows i·n … i·n+n−1 are group i, positive first', () => {
  const groups = [
    { query: [30], passages: [[40], [41], [42]] },
    { query: [31, 32], passages: [[50], [51], [52]] },
  ];
  const { queries, passages } = collateGroups(groups, { qMaxLen: 4, pMaxLen: 3, special: SPECIAL });
  assert.equal(rows(queries.inputIds, 4), [[1, 30, 2, 0], [1, 31, 32, 2]]);
  assert.equal(rows(passages.inputIds, 3).map((r) => r[1]), [40, 41, 42, 50, 51, 52]);
  const second = rowSlice(passages, 3, 6);
  assert.equal(rows(second.inputIds, 3).map((r) => r[1]), [50, 51, 52]);
  assert.throws(
    () => collateGroups([groups[0], { query: [1], passages: [[1]] }], { qMaxLen: 4, pMaxLen: 3, special: SPECIAL }),
    /group 1 has 1 passages, group 0 has 3/,
  );
});

test.run();
