// A model saved here loads in Python's transformers.AutoModel unchanged (no missing or unexpected
// weights) and computes the very hidden states this library computes: the tied layout, and an untied
// model's query_model/ and passage_model/ (with Tevatron's pooler files beside them); the tokenizer
// saved with it gives the same ids in AutoTokenizer. Runs where a Python with torch and transformers is
// found (TORCH_PYTHON, .venv), and is reported as skipped elsewhere.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collateSequences } from '../lib/data/collator.ts';
import { bertForward, initBertParams } from '../lib/model/bert.ts';
import { PASSAGE_PREFIX, QUERY_PREFIX } from '../lib/model/checkpoint.ts';
import { initPoolerParams } from '../lib/model/dense.ts';
import { loadDenseModel } from '../lib/model/pretrained.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { writeModel } from '../lib/outputs.ts';
import { testUnless, pythonWith } from './helpers.ts';

const { python, reason } = pythonWith(['torch', 'transformers']);

// loads each directory with AutoModel (eval mode), and prints its loading report and last hidden state
const PROGRAM = `
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
spec = json.load(open(sys.argv[1]))
out = {}
for name, d in spec["dirs"].items():
    model, info = AutoModel.from_pretrained(d, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        h = model(input_ids=torch.tensor(spec["ids"]), attention_mask=torch.tensor(spec["mask"])).last_hidden_state
    out[name] = {"cls": type(model).__name__, "loading": {k: list(v) for k, v in info.items() if v}, "hidden": h.flatten().tolist()}
out["tokens"] = AutoTokenizer.from_pretrained(spec["tokenizer"])(spec["text"])["input_ids"]
print(json.dumps(out))
`;

testUnless(reason, 'saved models load in transformers\' AutoModel unchanged and give the same hidden states (tied; untied towers with a pooler)', async () => {
  const work = mkdtempSync(path.join(tmpdir(), 'transformers-'));
  const loaded = await loadDenseModel({ modelNameOrPath: path.resolve('test/fixtures/tiny-bert'), untied: false, pooler: null, settings: {}, seed: 0 });
  const tied = path.join(work, 'tied');
  await writeModel(tied, { config: loaded.rawConfig, params: loaded.params, untied: false, pooler: null, settings: loaded.settings, tokenizer: loaded.tokenizer });
  // untied: the fixture as the query tower, another random BERT as the passage tower, and an untied pooler
  const untiedParams: ParamMap = {
    ...Object.fromEntries(Object.entries(loaded.params).map(([k, t]) => [QUERY_PREFIX + k, t])),
    ...initBertParams(loaded.config, 7, { prefix: PASSAGE_PREFIX }),
    ...initPoolerParams({ inDim: 32, outDim: 16 }, 8, true),
  };
  const untied = path.join(work, 'untied');
  await writeModel(untied, { config: loaded.rawConfig, params: untiedParams, untied: true, pooler: { inDim: 32, outDim: 16 }, settings: loaded.settings, tokenizer: loaded.tokenizer });

  const text = 'tok12 tok7 tok33 tok7';
  const batch = collateSequences([[5, 17, 40, 61, 9, 12], [33, 22], [70, 71, 72]], 8, loaded.tokenizer.special);
  const spec = path.join(work, 'spec.json');
  const dirs = { tied, query: path.join(untied, 'query_model'), passage: path.join(untied, 'passage_model') };
  writeFileSync(spec, JSON.stringify({ dirs, ids: chunk(batch.inputIds, batch.length), mask: chunk(batch.attentionMask, batch.length), tokenizer: tied, text }));
  const r = spawnSync(python!, ['-c', PROGRAM, spec], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, HF_HUB_OFFLINE: '1', TRANSFORMERS_VERBOSITY: 'error' } });
  assert.is(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!);

  const ours: Record<string, [ParamMap, string]> = { tied: [loaded.params, ''], query: [untiedParams, QUERY_PREFIX], passage: [untiedParams, PASSAGE_PREFIX] };
  for (const [name, [params, prefix]] of Object.entries(ours)) {
    assert.is(got[name].cls, 'BertModel', name);
    assert.equal(got[name].loading, {}, `${name}: AutoModel reports ${JSON.stringify(got[name].loading)}`);
    const h = bertForward(loaded.config, params, batch, null, prefix);
    const mine = h.dataSync();
    h.dispose();
    let worst = 0;
    mine.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got[name].hidden[i]))));
    assert.ok(worst < 1e-4, `${name}: hidden states differ by up to ${worst}`);
  }
  const { cls, sep } = loaded.tokenizer.special;
  assert.equal(got.tokens, [cls, ...loaded.tokenizer.encode(text), sep], 'AutoTokenizer on the saved tokenizer');
  tf.dispose([...Object.values(untiedParams), ...Object.values(loaded.params)]);
  rmSync(work, { recursive: true, force: true });
});

function chunk(a: Int32Array, width: number): number[][] {
  return Array.from({ length: a.length / width }, (_, i) => Array.from(a.subarray(i * width, (i + 1) * width)));
}

test.run();
