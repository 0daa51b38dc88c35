// A worker thread of loadTrainData (lib/data/tokenized.ts): loads the tokenizer the main thread saved,
// then turns each chunk of rows it is sent into packed token ids, exactly as the main thread would.
import { parentPort, workerData } from 'node:worker_threads';
import { loadTokenizer } from '../tokenizer.ts';
import { toTrainExample, type ExampleOptions } from './load.ts';
import { packExamples } from './tokenized.ts';

const { tokenizerDir, qMaxLen, pMaxLen, separator } = workerData as { tokenizerDir: string; qMaxLen: number; pMaxLen: number; separator: string };
const tokenizer = await loadTokenizer(tokenizerDir);
const o: ExampleOptions = { tokenize: (text, max) => tokenizer.encode(text).slice(0, max), qMaxLen, pMaxLen, separator };

parentPort!.on('message', ({ chunk, rows }: { chunk: number; rows: { row: unknown; where: string }[] }) => {
  try {
    const { data, queryIds } = packExamples(rows.map(({ row, where }) => toTrainExample(row, where, o)));
    parentPort!.postMessage({ chunk, data, queryIds }, [data.buffer]);
  } catch (e) {
    parentPort!.postMessage({ chunk, error: (e as Error).message });
  }
});
