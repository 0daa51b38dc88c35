// Hard-negative mining at full size: generates a Tevatron/wikipedia-nq-sized case from the shared NQ sample
// (58,622 training questions with their answers, a ranking of each at depth 100 over a corpus of millions of
// passages, real passage texts repeated), runs scripts/mine.ts on it in a child process and reports its wall
// time and peak RSS (the target: memory follows the ranked passages' count, not the corpus or the files);
// deletes what it generated unless --keep.
//   npx tsx bench/scale_mine.ts [--questions 58622] [--depth 100] [--passages 3000000] [--gzip] [--dir /tmp/...] [--keep]
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync, type WriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { PyRandom } from '../lib/data/pyrandom.ts';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const data = path.resolve(root, '../shared/data/nq');

const argv = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const questions = flag('questions', 58622);
const depth = flag('depth', 100);
const passages = flag('passages', 3_000_000);
const gzip = argv.includes('--gzip');
const dirFlag = argv.indexOf('--dir');
const dir = mkdtempSync(path.join(dirFlag >= 0 ? argv[dirFlag + 1] : os.tmpdir(), 'scale-mine-'));

/** Lines written through a stream in 1 MB writes, waiting for it to drain. */
async function writeLines(file: string, lines: (emit: (line: string) => Promise<void>) => Promise<void>, compress = false): Promise<number> {
  const out = createWriteStream(file);
  const sink: WriteStream | ReturnType<typeof createGzip> = compress ? createGzip() : out;
  if (compress) (sink as ReturnType<typeof createGzip>).pipe(out);
  let parts: string[] = [];
  let size = 0;
  const flush = async () => {
    if (!sink.write(parts.join(''))) await new Promise<void>((r) => sink.once('drain', () => r()));
    [parts, size] = [[], 0];
  };
  await lines(async (line) => {
    parts.push(line);
    if ((size += line.length) > 1 << 20) await flush();
  });
  await flush();
  await new Promise<void>((resolve, reject) => {
    out.once('close', resolve).once('error', reject);
    sink.end();
  });
  return statSync(file).size;
}

interface Passage {
  title: string;
  text: string;
}

try {
  const read = (f: string) => readFileSync(path.join(data, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const train = read('train.jsonl') as { query: string; answers: string[] }[];
  const texts = read('corpus.jsonl') as Passage[];
  const rng = new PyRandom(1);
  const t0 = performance.now();
  // passage i has the sample's text i mod 2,588; question q's positive is passage q mod passages
  const passage = (i: number) => ({ docid: String(i), title: texts[i % texts.length].title, text: texts[i % texts.length].text });
  const corpus = path.join(dir, gzip ? 'corpus.jsonl.gz' : 'corpus.jsonl');
  const corpusBytes = await writeLines(corpus, async (emit) => {
    for (let i = 0; i < passages; i++) await emit(JSON.stringify(passage(i)) + '\n');
  }, gzip);
  const trainFile = path.join(dir, 'train.jsonl');
  const trainBytes = await writeLines(trainFile, async (emit) => {
    for (let q = 0; q < questions; q++) {
      const t = train[q % train.length];
      const negatives = Array.from({ length: 5 }, () => passage(rng.randbelow(passages)));
      await emit(JSON.stringify({ query_id: String(q), query: t.query, answers: t.answers, positive_passages: [passage(q % passages)], negative_passages: negatives }) + '\n');
    }
  });
  // each question's positive at a random rank among `depth` uniformly drawn passages, best first
  const ranking = path.join(dir, 'run.txt');
  const rankingBytes = await writeLines(ranking, async (emit) => {
    for (let q = 0; q < questions; q++) {
      const at = rng.randbelow(depth);
      for (let r = 0; r < depth; r++) await emit(`${q}\t${r === at ? q % passages : rng.randbelow(passages)}\t${(100 - r * 0.25).toFixed(2)}\n`);
    }
  });
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
  console.log(`generated in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${passages} passages (${mb(corpusBytes)}${gzip ? ', gzipped' : ''}), ${questions} questions (${mb(trainBytes)}), a ranking at depth ${depth} (${mb(rankingBytes)})`);

  const rssFile = path.join(dir, 'peak-rss');
  const t1 = performance.now();
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--import', path.join(root, 'bench/peak-rss.ts'), path.join(root, 'scripts/mine.ts'), '--train_file', trainFile, '--ranking', ranking, '--corpus', corpus, '--save_to', path.join(dir, 'hn.jsonl'), '--depth', String(depth)],
    { encoding: 'utf8', env: { ...process.env, TEVATRON_PEAK_RSS_FILE: rssFile }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  if (r.status !== 0) throw new Error(`mine.ts failed (exit ${r.status})`);
  const seconds = (performance.now() - t1) / 1000;
  const peak = Number(readFileSync(rssFile, 'utf8')) / 1024;
  process.stdout.write(r.stdout);
  console.log(`mine.ts: ${seconds.toFixed(0)} s, peak RSS ${peak.toFixed(0)} MB; output ${mb(statSync(path.join(dir, 'hn.jsonl')).size)}`);
} finally {
  if (!argv.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  else console.log(`kept ${dir}`);
}
