// Tevatron's build_train_hn: a new training file whose negatives are the passages a trained model ranks
// high for each training question, minus its positives and the passages that contain an answer.
import { runScript, scriptArgs } from '../lib/cli.ts';
import { mineHardNegatives, mineSummaryLine } from '../lib/mine.ts';

await runScript('mine', async () => {
  const a = scriptArgs('mine');
  const o = {
    trainFile: a.train_file as string,
    ranking: a.ranking as string,
    corpus: a.corpus as string[],
    saveTo: a.save_to as string,
    depth: a.depth as number,
    skipTop: a.skip_top as number,
    nSample: a.n_sample as number,
    seed: a.seed as number,
    keepNegatives: a.keep_negatives as boolean,
    log: (line: string) => console.error(`mine: ${line}`),
  };
  console.log(mineSummaryLine(await mineHardNegatives(o), o));
});
