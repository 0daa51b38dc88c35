// A worker thread of loadTrainData (lib/data/tokenized.ts): loads the tokenizer the main thread saved, then
// tokenizes each task it is sent (raw lines it parses itself, rows, or a parquet row range) into packed ids,
// exactly as the main thread would.
import { parentPort, workerData } from 'node:worker_threads';
import { loadTokenizer } from '../tokenizer.ts';
import { tokenizeTask, type TaskContext, type TokenizeTask } from './tokenized.ts';

const { tokenizerDir, qMaxLen, pMaxLen, separator, idBytes } = workerData as { tokenizerDir: string; qMaxLen: number; pMaxLen: number; separator: string; idBytes: 2 | 4 };
const tokenizer = await loadTokenizer(tokenizerDir);
const ctx: TaskContext = { o: { tokenize: (text, max) => tokenizer.encode(text).slice(0, max), qMaxLen, pMaxLen, separator }, idBytes, vocabSize: tokenizer.vocabSize, parquet: new Map() };

// one task at a time: the main thread sends the next one after this one's reply
parentPort!.on('message', async ({ id, task }: { id: number; task: TokenizeTask }) => {
  try {
    const part = await tokenizeTask(task, ctx);
    parentPort!.postMessage({ id, part }, [part.ids.buffer, part.lengths.buffer, part.counts.buffer] as ArrayBuffer[]);
  } catch (e) {
    parentPort!.postMessage({ id, error: (e as Error).message });
  }
});
