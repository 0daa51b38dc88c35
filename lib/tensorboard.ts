// TensorBoard event files for a training run, as Hugging Face's TensorBoardCallback writes them: each
// log-history record's numbers as scalars at its step, `eval_x` as `eval/x` and the rest as `train/x`,
// flushed after every record. They are written by tfjs-node's own summary writer (TensorFlow's C++ event
// writer), so only the tensorflow backend writes them.
//
// Resuming continues the same run's curves: the run's logging dir is reused, and a (tag, step) the dir
// already holds is not written again. A resumed run replays the very steps an uninterrupted one computes,
// so the values are the same; TensorBoard's own loader would otherwise hold both copies of a step (its
// Python EventAccumulator shows both, its fast loader keeps the later file's), and reading the dir's event
// files (TFRecord framing with masked CRC32C, the Event protobuf's step and scalar values) is what tells
// which steps an interrupted run got to disk before it stopped.
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { backendInfo } from './backend.ts';

export const REPORT_TO = ['all', 'none', 'tensorboard'] as const;
export type ReportTo = (typeof REPORT_TO)[number];

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** Hugging Face's default logging dir: `output_dir/runs/<%b%d_%H-%M-%S>_<hostname>`, local time. */
export function defaultLoggingDir(outputDir: string, now = new Date(), host = os.hostname()): string {
  const stamp = `${MONTHS[now.getMonth()]}${two(now.getDate())}_${two(now.getHours())}-${two(now.getMinutes())}-${two(now.getSeconds())}`;
  return path.join(outputDir, 'runs', `${stamp}_${host}`);
}

/**
 * The scalars of one log-history record, tagged as Hugging Face's rewrite_logs does. `step` is the x axis,
 * not a scalar; an evaluation record's `epoch` is left out so that `train/epoch` has one point per step.
 */
export function scalarTags(record: Record<string, number>): [string, number][] {
  const isEval = Object.keys(record).some((k) => k.startsWith('eval_'));
  return Object.entries(record)
    .filter(([k, v]) => k !== 'step' && !(isEval && k === 'epoch') && typeof v === 'number' && Number.isFinite(v))
    .map(([k, v]) => [k.startsWith('eval_') ? `eval/${k.slice(5)}` : k.startsWith('test_') ? `test/${k.slice(5)}` : `train/${k}`, v]);
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** TFRecord's masked CRC32C (Castagnoli) of `bytes`. */
export function maskedCrc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  c = (c ^ 0xffffffff) >>> 0;
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Fields of a protobuf message: number, wire type, and the varint value or the bytes' range. */
function* protoFields(buf: Uint8Array, start = 0, end = buf.length): Generator<{ field: number; wire: number; value: number; at: number; len: number }> {
  let i = start;
  const varint = () => {
    let v = 0;
    for (let scale = 1; ; scale *= 128) {
      if (i >= end) throw new Error('truncated varint');
      const b = buf[i++];
      v += (b & 0x7f) * scale; // exact to 2^53: steps stay far below that
      if (b < 0x80) return v;
    }
  };
  while (i < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) yield { field, wire, value: varint(), at: i, len: 0 };
    else if (wire === 1 || wire === 5) {
      const len = wire === 1 ? 8 : 4;
      yield { field, wire, value: 0, at: i, len };
      i += len;
    } else if (wire === 2) {
      const len = varint();
      yield { field, wire, value: 0, at: i, len };
      i += len;
    } else throw new Error(`unsupported wire type ${wire}`);
    if (i > end) throw new Error('field runs past its message');
  }
}

export interface ScalarEvent {
  step: number;
  tag: string;
  value: number;
}

/**
 * The scalar summaries of one event file, in file order. Reading stops at the first record that is cut
 * short or fails its checksum (what a killed writer leaves behind), as TensorBoard's reader does.
 */
export function readEventScalars(file: string): ScalarEvent[] {
  const buf = new Uint8Array(readFileSync(file));
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: ScalarEvent[] = [];
  for (let at = 0; at + 12 <= buf.length; ) {
    const len = Number(view.getBigUint64(at, true));
    if (maskedCrc32c(buf.subarray(at, at + 8)) !== view.getUint32(at + 8, true) || at + 16 + len > buf.length) break;
    const data = buf.subarray(at + 12, at + 12 + len);
    if (maskedCrc32c(data) !== view.getUint32(at + 12 + len, true)) break;
    at += 16 + len;
    try {
      let step = 0;
      const values: { tag: string; value: number }[] = [];
      for (const f of protoFields(data)) {
        if (f.field === 2 && f.wire === 0) step = f.value;
        if (f.field !== 5 || f.wire !== 2) continue; // Event.summary
        for (const v of protoFields(data, f.at, f.at + f.len)) {
          if (v.field !== 1 || v.wire !== 2) continue; // Summary.value
          let tag = '';
          let value: number | null = null;
          for (const x of protoFields(data, v.at, v.at + v.len)) {
            if (x.field === 1 && x.wire === 2) tag = new TextDecoder().decode(data.subarray(x.at, x.at + x.len));
            if (x.field === 2 && x.wire === 5) value = new DataView(data.buffer, data.byteOffset + x.at, 4).getFloat32(0, true); // simple_value
          }
          if (value !== null) values.push({ tag, value });
        }
      }
      for (const v of values) out.push({ step, ...v });
    } catch {
      break; // a record whose checksum holds but whose protobuf does not parse: not an event file we can read further
    }
  }
  return out;
}

/** The event files of a logging dir, oldest first (their names start with the writer's start time). */
export function eventFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.startsWith('events.out.tfevents.')).sort().map((n) => path.join(dir, n));
}

/** The highest step each scalar tag has in a logging dir's event files. */
export function loggedSteps(dir: string): Map<string, number> {
  const last = new Map<string, number>();
  for (const file of eventFiles(dir)) for (const e of readEventScalars(file)) last.set(e.tag, Math.max(e.step, last.get(e.tag) ?? -Infinity));
  return last;
}

interface SummaryFileWriter {
  scalar(name: string, value: number, step: number): void;
  flush(): void;
}

export interface TensorboardWriter {
  readonly dir: string;
  /** Writes a log-history record's scalars at its step (skipping what the dir already holds) and flushes. */
  write(record: Record<string, number>): void;
}

/**
 * The writer for `--report_to`, or why there is none. `resume`: the dir belongs to the run being resumed,
 * so the steps it holds are not written again.
 */
export function openTensorboard(o: { reportTo: ReportTo; dir: string; resume: boolean }): { writer: TensorboardWriter | null; note: string | null } {
  if (o.reportTo === 'none') return { writer: null, note: null };
  const info = backendInfo();
  if (info.name !== 'tensorflow' || !info.package) {
    return { writer: null, note: `TensorBoard: no event files: tfjs-node's summary writer needs the tensorflow backend and this run uses ${info.name} (npm run setup:tensorflow; --report_to none silences this)` };
  }
  const tfn = createRequire(import.meta.url)(info.package) as { node: { summaryFileWriter(dir: string): SummaryFileWriter } };
  const skip = o.resume ? loggedSteps(o.dir) : new Map<string, number>();
  let writer: SummaryFileWriter | null = null; // made at the first record: a run that fails earlier leaves no empty event file
  return {
    note: null,
    writer: {
      dir: o.dir,
      write(record) {
        const scalars = scalarTags(record).filter(([tag]) => !(record.step <= (skip.get(tag) ?? -Infinity)));
        if (!scalars.length) return;
        writer ??= tfn.node.summaryFileWriter(o.dir);
        for (const [tag, value] of scalars) writer.scalar(tag, value, record.step);
        writer.flush();
      },
    },
  };
}
