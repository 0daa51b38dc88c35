// lib/encoded.ts: encode outputs written batch by batch and read back in blocks, against the arrays
// written and against Python's safetensors reader; untrusted shard files fail with one line naming them.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { createEncodedWriter, encodedBlocks, encodedBlocksAhead, openEncoded, readEncoded, writeEncoded } from '../lib/encoded.ts';
import { pythonWith, testUnless } from './helpers.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'encoded-'));
const randomRows = (seed: number, n: number) => {
  const r = new PyRandom(seed);
  return Float32Array.from({ length: n }, () => r.random() * 2 - 1);
};

test('rows appended batch by batch read back as written, in blocks of any size, read ahead or not; ids split across read chunks', async () => {
  const dim = 3;
  // the first id is 1.2 MB of 3-byte characters: the reader's 1 MiB chunk ends inside one of them
  const ids = ['€'.repeat(400_000), ...Array.from({ length: 999 }, (_, i) => `dé-${i}`)];
  const data = randomRows(1, ids.length * dim);
  const file = path.join(dir, 'stream.st');
  const w = createEncodedWriter(file);
  for (const [a, b] of [[0, 1], [1, 1], [1, 8], [8, 1000]]) w.append(ids.slice(a, b), data.subarray(a * dim, b * dim), dim);
  assert.equal(w.close(), { rows: 1000, dim });
  assert.equal(readdirSync(dir).sort(), ['stream.st', 'stream.st.ids']);
  const whole = readEncoded(file);
  assert.equal(whole.ids, ids);
  assert.equal(Array.from(whole.data), Array.from(data));
  for (const blockRows of [1, 7, 1000, 5000]) {
    const got: number[] = [];
    const gotIds: string[] = [];
    for (const b of encodedBlocks(openEncoded(file), blockRows)) {
      assert.is(b.start, gotIds.length);
      got.push(...b.data);
      gotIds.push(...b.ids);
    }
    assert.equal(gotIds, ids, `ids, blocks of ${blockRows}`);
    assert.equal(got, Array.from(data), `rows, blocks of ${blockRows}`);
    const ahead: number[] = [];
    for await (const b of encodedBlocksAhead(openEncoded(file), blockRows)) ahead.push(...b.data); // copied before the next block reuses its buffer
    assert.equal(ahead, Array.from(data), `rows read ahead, blocks of ${blockRows}`);
  }
  // an ids file without a final newline has as many ids
  writeFileSync(`${file}.ids`, readFileSync(`${file}.ids`, 'utf8').slice(0, -1));
  assert.equal(readEncoded(file).ids, ids);
});

test('abort leaves nothing behind; an unwritable path is one line', () => {
  const sub = mkdtempSync(path.join(dir, 'abort-'));
  const w = createEncodedWriter(path.join(sub, 'x.st'));
  w.append(['a', 'b'], Float32Array.from([1, 2, 3, 4]), 2);
  w.abort();
  assert.equal(readdirSync(sub), []);
  assert.throws(() => createEncodedWriter(path.join(sub, 'missing', 'x.st')), (e: Error) => /missing\/x\.st: cannot write .*directory exists/.test(e.message) && !e.message.includes('\n'));
  assert.equal(readdirSync(sub), []);
});

const { python, reason } = pythonWith(['safetensors', 'numpy']);
testUnless(reason, "a streamed shard reads in Python's safetensors; Python's F16 and empty shards read here", () => {
  const file = path.join(dir, 'py.st');
  const data = randomRows(2, 11 * 5);
  const w = createEncodedWriter(file);
  w.append(['a', 'b', 'c'], data.subarray(0, 15), 5);
  w.append(Array.from({ length: 8 }, (_, i) => `x${i}`), data.subarray(15), 5);
  w.close();
  writeEncoded(path.join(dir, 'empty.st'), { ids: [], data: new Float32Array(0), dim: 0 });
  const script = `
import json, sys, numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])['embeddings']
e = load_file(sys.argv[2])['embeddings']
h = (np.arange(12, dtype=np.float32).reshape(4, 3) / 7 - 0.5).astype(np.float16)
save_file({'embeddings': h}, sys.argv[3])
print(json.dumps({'shape': list(t.shape), 'dtype': str(t.dtype), 'values': t.ravel().tolist(), 'empty': list(e.shape), 'f16': h.astype(np.float32).ravel().tolist()}))`;
  const r = spawnSync(python!, ['-c', script, file, path.join(dir, 'empty.st'), path.join(dir, 'f16.st')], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const py = JSON.parse(r.stdout);
  assert.equal(py.shape, [11, 5]);
  assert.is(py.dtype, 'float32');
  assert.equal(py.values, Array.from(data));
  assert.equal(py.empty, [0, 0]);
  writeFileSync(path.join(dir, 'f16.st.ids'), 'p\nq\nr\ns\n');
  const got: number[] = [];
  for (const b of encodedBlocks(openEncoded(path.join(dir, 'f16.st')), 3)) got.push(...b.data);
  assert.equal(got, py.f16);
});

/** A file with an 8-byte header length, a header (JSON text or an object) and `body` bytes. */
function rawSafetensors(file: string, header: unknown, body: number, ids = 'a\nb\n'): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(body)]));
  writeFileSync(`${file}.ids`, ids);
  return file;
}

test('bad shard files: one line naming the file and what is wrong', () => {
  const f = (name: string) => path.join(dir, name);
  const good = { embeddings: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] } };
  const cases: [string, RegExp][] = [
    [(writeFileSync(f('short.st'), 'abc'), f('short.st')), /short\.st: not a valid safetensors file \(shorter than its 8-byte header length\)/],
    [(writeFileSync(f('huge.st'), Buffer.from([0, 0x10, 0xa5, 0xd4, 0xe8, 0, 0, 0, 1, 2])), f('huge.st')), /huge\.st: not a valid safetensors file \(header length 1000000000000 exceeds the file\)/],
    [rawSafetensors(f('json.st'), '{"embeddings": ', 24), /json\.st: not a valid safetensors file \(its header is not JSON\)/],
    [rawSafetensors(f('entry.st'), { embeddings: { dtype: 'F32', shape: 'x' } }, 24), /entry\.st: .*tensor embeddings lacks a dtype, a shape of counts or two data_offsets/],
    [rawSafetensors(f('shape.st'), { embeddings: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 24), /shape\.st: .*tensor embeddings has 20 bytes for shape \[2,3\] of F32/],
    [rawSafetensors(f('truncated.st'), good, 20), /truncated\.st: .*past the end of the data \(20 bytes\)/],
    [rawSafetensors(f('other.st'), { other: good.embeddings }, 24), /other\.st: holds no 2-D float tensor named "embeddings"/],
    [rawSafetensors(f('ints.st'), { embeddings: { dtype: 'I64', shape: [2, 3], data_offsets: [0, 48] } }, 48), /ints\.st: holds no 2-D float tensor named "embeddings"/],
    [rawSafetensors(f('ids.st'), good, 24, 'a\nb\nc\n'), /ids\.st\.ids lists 3 ids for 2 rows/],
    [f('absent.st'), /absent\.st: cannot read the encoded representations \(ENOENT/],
  ];
  for (const [file, expected] of cases) {
    assert.throws(() => openEncoded(file), (e: Error) => expected.test(e.message) && !e.message.includes('\n'), file);
  }
  rawSafetensors(f('noids.st'), good, 24);
  rmSync(`${f('noids.st')}.ids`);
  assert.throws(() => openEncoded(f('noids.st')), /noids\.st\.ids: cannot read the encoded representations \(ENOENT/);
});

test.run();
