// TensorBoard event files of scripts/train.ts runs, read back two independent ways: TensorBoard's own
// EventAccumulator (Python, where a Python with tensorboard is found) and the reader below, written from the
// TFRecord and Event formats (length, masked CRC32C of length and data, Event.step, Summary.Value's tag and
// simple_value) and checked against the CRC-32C check value. Also: Hugging Face's default logging dir and
// tag names, a resumed run continuing its curves without a duplicate step, and no event files (one line)
// without the tensorflow backend.
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultLoggingDir, eventFiles, loggedSteps, maskedCrc32c, readEventScalars, scalarTags } from '../lib/tensorboard.ts';
import { backend, freePort, pythonWith, runScriptFile, testUnless } from './helpers.ts';

const FIXTURES = path.resolve('test/fixtures');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'tensorboard-'));
const NO_TENSORFLOW = backend === 'tensorflow' ? null : `this pass runs ${backend}; event files come from the tensorflow backend`;
const py = pythonWith(['tensorboard']);

// ---- the reference reader ----

/** CRC-32C bit by bit (reflected polynomial 0x82F63B78), no table: independent of lib's. */
function crc32c(bytes: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return ~c >>> 0;
}
const mask = (crc: number) => ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;

interface RefEvent {
  step: number;
  fileVersion?: string;
  scalars: { tag: string; value: number }[];
  /** Byte offset just past this record. */
  end: number;
}

/** Protobuf fields as [field number, value]: varints as bigint, length-delimited as bytes, fixed32 as bytes. */
function fields(buf: Uint8Array): [number, bigint | Uint8Array][] {
  const out: [number, bigint | Uint8Array][] = [];
  let i = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const [field, wire] = [key >> 3, key & 7];
    if (wire === 0) out.push([field, varint()]);
    else if (wire === 2) {
      const len = Number(varint());
      out.push([field, buf.subarray(i, i + len)]);
      i += len;
    } else if (wire === 5 || wire === 1) {
      const len = wire === 5 ? 4 : 8;
      out.push([field, buf.subarray(i, i + len)]);
      i += len;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

/** Every complete record of an event file (both CRCs must hold); `tail` counts bytes of a record cut short. */
function readRecords(file: string): { events: RefEvent[]; tail: number } {
  const buf = new Uint8Array(readFileSync(file));
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const events: RefEvent[] = [];
  let at = 0;
  while (at + 12 <= buf.length) {
    const len = Number(dv.getBigUint64(at, true));
    assert.is(dv.getUint32(at + 8, true), mask(crc32c(buf.subarray(at, at + 8))), `${file}@${at}: length CRC`);
    if (at + 16 + len > buf.length) break;
    const data = buf.subarray(at + 12, at + 12 + len);
    assert.is(dv.getUint32(at + 12 + len, true), mask(crc32c(data)), `${file}@${at}: data CRC`);
    at += 16 + len;
    const ev: RefEvent = { step: 0, scalars: [], end: at };
    for (const [f, v] of fields(data)) {
      if (f === 2) ev.step = Number(v as bigint);
      if (f === 3) ev.fileVersion = new TextDecoder().decode(v as Uint8Array);
      if (f === 5)
        for (const [sf, sv] of fields(v as Uint8Array)) {
          if (sf !== 1) continue;
          const value = fields(sv as Uint8Array);
          const tag = new TextDecoder().decode(value.find(([k]) => k === 1)![1] as Uint8Array);
          const simple = value.find(([k]) => k === 2)?.[1] as Uint8Array | undefined;
          assert.ok(simple, `${tag}: a scalar written as simple_value`);
          ev.scalars.push({ tag, value: new DataView(simple.buffer, simple.byteOffset, 4).getFloat32(0, true) });
        }
    }
    events.push(ev);
  }
  return { events, tail: buf.length - at };
}

/** tag -> [step, value] in file order, over a run dir's event files. */
function curves(dir: string): Map<string, [number, number][]> {
  const out = new Map<string, [number, number][]>();
  for (const f of readdirSync(dir).filter((n) => n.startsWith('events.out.tfevents.')).sort()) {
    const { events } = readRecords(path.join(dir, f));
    assert.is(events[0].fileVersion, 'brain.Event:2', `${f} starts with its file version`);
    for (const e of events) for (const s of e.scalars) out.set(s.tag, [...(out.get(s.tag) ?? []), [e.step, s.value]]);
  }
  return out;
}

/** The same, from TensorBoard's EventAccumulator. */
function tensorboardCurves(dir: string): Map<string, [number, number][]> {
  const code = `
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}))`;
  const r = spawnSync(py.python!, ['-c', code, dir], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  return new Map(Object.entries(JSON.parse(r.stdout.trim().split('\n').at(-1)!)));
}

// ---- a short run ----

/** Pre-tokenized eval files from the fixture's queries and positives (query i's gold passage is p<i>). */
function evalFiles(dir: string): string[] {
  const rows = readFileSync(path.join(FIXTURES, 'train-step/train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const files = ['queries.jsonl', 'corpus.jsonl', 'qrels.tsv'].map((f) => path.join(dir, f));
  writeFileSync(files[0], rows.map((r, i) => JSON.stringify({ text_id: `q${i}`, text: r.query })).join('\n') + '\n');
  writeFileSync(files[1], rows.flatMap((r, i) => [{ text_id: `p${i}`, text: r.positives[0] }, { text_id: `n${i}`, text: r.negatives[0] }]).map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(files[2], rows.map((_, i) => `q${i}\tp${i}\t1`).join('\n') + '\n');
  return files;
}

/** tiny-bert on the fixture's 4 queries, batch 2: 4 steps, a log every step, a checkpoint and an evaluation every 2; `flags` override. */
function trainArgs(out: string, flags: Record<string, string> = {}): string[] {
  const [queries, corpus, qrels] = evalFiles(tmp());
  const all: Record<string, string> = {
    output_dir: out, model_name_or_path: path.join(FIXTURES, 'tiny-bert'), train_dir: path.join(FIXTURES, 'train-step/train.jsonl'),
    per_device_train_batch_size: '2', train_n_passages: '2', q_max_len: '8', p_max_len: '12', learning_rate: '1e-3',
    max_steps: '4', logging_steps: '1', save_steps: '2', eval_steps: '2', eval_queries: queries, eval_corpus: corpus, eval_qrels: qrels,
    ...flags,
  };
  return Object.entries(all).flatMap(([k, v]) => [`--${k}`, v]);
}

const TRAIN_TAGS = ['train/epoch', 'train/grad_norm', 'train/learning_rate', 'train/loss', 'train/samples_per_second'];
const EVAL_TAGS = ['eval/mrr@10', 'eval/ndcg@10', 'eval/recall@1', 'eval/recall@100', 'eval/recall@20', 'eval/recall@5'];

/** The run dirs of the end-to-end tests below, read again with TensorBoard's reader. */
const runs: { plain?: string; resumed?: string } = {};

const runDir = (out: string) => {
  const runs = readdirSync(path.join(out, 'runs'));
  assert.is(runs.length, 1, `one run dir: ${runs.join(', ')}`);
  return path.join(out, 'runs', runs[0]);
};

test('defaultLoggingDir is Hugging Face\'s output_dir/runs/%b%d_%H-%M-%S_<hostname>', () => {
  assert.is(defaultLoggingDir('out', new Date(2026, 0, 5, 7, 8, 9), 'box'), path.join('out', 'runs', 'Jan05_07-08-09_box'));
  assert.is(defaultLoggingDir('/o', new Date(2025, 11, 31, 23, 59, 0), 'gpu-3'), '/o/runs/Dec31_23-59-00_gpu-3');
});

test('scalarTags: rewrite_logs\' names; step is the x axis; an evaluation leaves train/epoch alone', () => {
  assert.equal(scalarTags({ step: 3, epoch: 0.5, loss: 2, learning_rate: 1e-3, grad_norm: 4, samples_per_second: 9 }), [
    ['train/epoch', 0.5], ['train/loss', 2], ['train/learning_rate', 1e-3], ['train/grad_norm', 4], ['train/samples_per_second', 9],
  ]);
  assert.equal(scalarTags({ step: 4, epoch: 1, 'eval_recall@20': 0.5, eval_mrr: 0.25, test_x: 1 }), [['eval/recall@20', 0.5], ['eval/mrr', 0.25], ['test/x', 1]]);
  assert.equal(scalarTags({ step: 1, loss: NaN }), [], 'a NaN is not a point');
});

test('maskedCrc32c: the CRC-32C check value, masked as TFRecord does', () => {
  const digits = new TextEncoder().encode('123456789');
  assert.is(crc32c(digits), 0xe3069283, 'reference CRC-32C check value');
  for (const s of ['', 'a', '123456789', 'x'.repeat(1000)]) {
    const b = new TextEncoder().encode(s);
    assert.is(maskedCrc32c(b), mask(crc32c(b)), JSON.stringify(s.slice(0, 10)));
  }
});

testUnless(NO_TENSORFLOW, 'a short run writes the training scalars every logging step and each evaluation, once per step; both readers agree with metrics.jsonl', async () => {
  const out = path.join(tmp(), 'out');
  const r = await runScriptFile('train.ts', trainArgs(out));
  assert.is(r.code, 0, r.err);
  const dir = runDir(out);
  assert.match(path.basename(dir), /^[A-Z][a-z]{2}\d\d_\d\d-\d\d-\d\d_/);
  const got = curves(dir);
  assert.equal([...got.keys()].sort(), [...EVAL_TAGS, ...TRAIN_TAGS].sort());
  for (const t of TRAIN_TAGS) assert.equal(got.get(t)!.map(([s]) => s), [1, 2, 3, 4], t);
  for (const t of EVAL_TAGS) assert.equal(got.get(t)!.map(([s]) => s), [2, 4], t);
  const logged = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  for (const rec of logged)
    for (const [k, v] of Object.entries(rec)) {
      if (k === 'step' || (k === 'epoch' && 'eval_mrr@10' in rec)) continue;
      const tag = k.startsWith('eval_') ? `eval/${k.slice(5)}` : `train/${k}`;
      const point = got.get(tag)!.find(([s]) => s === rec.step);
      assert.ok(point && point[1] === Math.fround(v as number), `${tag} at step ${rec.step}: ${point?.[1]} vs ${v}`);
    }
  // lib's own reader (used on resume) reads the same
  const ours = eventFiles(dir).flatMap(readEventScalars);
  assert.is(ours.length, [...got.values()].reduce((n, c) => n + c.length, 0));
  assert.equal([...loggedSteps(dir)].sort(), [...got].map(([t, c]) => [t, Math.max(...c.map(([s]) => s))]).sort());
  const state = JSON.parse(readFileSync(path.join(out, 'trainer_state.json'), 'utf8'));
  assert.is(state.logging_dir, dir, 'the run names its logging dir (a resume continues it)');
  runs.plain = dir;
});

testUnless(NO_TENSORFLOW, 'a resumed run continues its curves in the same dir: steps the interrupted run wrote are not written twice, the lost ones are', async () => {
  const out = path.join(tmp(), 'out');
  assert.is((await runScriptFile('train.ts', trainArgs(out))).code, 0);
  const dir = runDir(out);
  const [file] = eventFiles(dir);
  const first = curves(dir);
  // The interruption: the process died while writing step 4 (a record cut in half); checkpoint-2 is the last complete one.
  const { events } = readRecords(file);
  const step3 = events.filter((e) => e.step === 3).at(-1)!.end;
  const step4 = events.find((e) => e.step === 4)!.end;
  truncateSync(file, step3 + Math.floor((step4 - step3) / 2));
  assert.ok(readRecords(file).tail > 0, 'a torn record at the end');
  rmSync(path.join(out, 'checkpoint-4'), { recursive: true });
  const r = await runScriptFile('train.ts', trainArgs(out, { resume_from_checkpoint: 'true' }));
  assert.is(r.code, 0, r.err);
  assert.is(runDir(out), dir, 'the same run dir');
  assert.is(eventFiles(dir).length, 2, 'the resumed run appends its own event file');
  const after = curves(dir);
  for (const t of TRAIN_TAGS) assert.equal(after.get(t)!.map(([s]) => s), [1, 2, 3, 4], `${t}: each step once`);
  for (const t of EVAL_TAGS) assert.equal(after.get(t)!.map(([s]) => s), [2, 4], `${t}: each step once`);
  // a resumed run replays the same steps: the values are the interrupted run's (samples/s aside)
  for (const t of TRAIN_TAGS.filter((x) => x !== 'train/samples_per_second')) assert.equal(after.get(t), first.get(t), t);
  runs.resumed = dir;
});

testUnless(NO_TENSORFLOW ?? py.reason, 'TensorBoard\'s EventAccumulator (Python) reads the same tags, steps and values, each step once after the resume', () => {
  for (const what of ['plain', 'resumed'] as const) {
    const dir = runs[what];
    assert.ok(dir, `the ${what} run above passed`);
    const tb = tensorboardCurves(dir);
    assert.equal([...tb.keys()].sort(), [...EVAL_TAGS, ...TRAIN_TAGS].sort(), what);
    for (const t of TRAIN_TAGS) assert.equal(tb.get(t)!.map(([s]) => s), [1, 2, 3, 4], `${what}: ${t}`);
    assert.equal(tb, curves(dir), `${what}: the same points as the reference reader`);
  }
});

testUnless(NO_TENSORFLOW, 'two processes (launch.ts): rank 0 alone writes, one event file with every step', async () => {
  const out = path.join(tmp(), 'out');
  const r = await runScriptFile('launch.ts', ['--nproc_per_node', '2', '--master_port', String(await freePort()), 'scripts/train.ts', ...trainArgs(out, { per_device_train_batch_size: '1' })]);
  assert.is(r.code, 0, r.err);
  const dir = runDir(out);
  assert.is(eventFiles(dir).length, 1, readdirSync(dir).join(', '));
  const got = curves(dir);
  for (const t of TRAIN_TAGS) assert.equal(got.get(t)!.map(([s]) => s), [1, 2, 3, 4], t);
  for (const t of EVAL_TAGS) assert.equal(got.get(t)!.map(([s]) => s), [2, 4], t);
});

test('without the tensorflow backend: one line says so and no event file is written; --report_to none: no line', async () => {
  const out = path.join(tmp(), 'out');
  const r = await runScriptFile('train.ts', trainArgs(out, { backend: 'wasm', max_steps: '1', eval_steps: '1' }));
  assert.is(r.code, 0, r.err);
  assert.is(r.out.split('\n').filter((l) => l.includes('TensorBoard')).length, 1, r.out);
  assert.match(r.out, /TensorBoard: no event files: .*needs the tensorflow backend and this run uses wasm/);
  assert.not.ok(existsSync(path.join(out, 'runs')));
  const quiet = path.join(tmp(), 'quiet');
  const q = await runScriptFile('train.ts', trainArgs(quiet, { backend: 'wasm', max_steps: '1', eval_steps: '1', report_to: 'none' }));
  assert.is(q.code, 0, q.err);
  assert.not.match(q.out, /TensorBoard/);
  assert.not.ok(existsSync(path.join(quiet, 'runs')));
});

test('the lib reader stops at a record cut short or a failed checksum, keeping what precedes it', () => {
  const dir = tmp();
  const file = path.join(dir, 'events.out.tfevents.1.host.1.0.v2');
  // One record by hand (Event{step: 7, summary{value{tag: "a", simple_value: 1.5}}}), framed as TFRecord.
  const value = [0x0a, 0x01, 0x61, 0x15, ...new Uint8Array(new Float32Array([1.5]).buffer)];
  const data = new Uint8Array([0x10, 0x07, 0x2a, value.length + 2, 0x0a, value.length, ...value]);
  const record = (d: Uint8Array) => {
    const head = new Uint8Array(8);
    new DataView(head.buffer).setBigUint64(0, BigInt(d.length), true);
    const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
    return Buffer.concat([head, u32(mask(crc32c(head))), d, u32(mask(crc32c(d)))]);
  };
  writeFileSync(file, record(data));
  assert.equal(readEventScalars(file), [{ step: 7, tag: 'a', value: 1.5 }]);
  appendFileSync(file, record(data).subarray(0, 20));
  assert.equal(readEventScalars(file), [{ step: 7, tag: 'a', value: 1.5 }], 'a torn tail is ignored');
  const bad = record(data);
  bad[bad.length - 1] ^= 1;
  writeFileSync(file, Buffer.concat([record(data), bad, record(data)]));
  assert.is(readEventScalars(file).length, 1, 'reading stops at a bad checksum');
  assert.equal([...loggedSteps(dir)], [['a', 7]]);
});

test.run();
