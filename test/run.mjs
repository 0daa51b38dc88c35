// `npm test`: runs the uvu suite once per backend (the same specs on each, as tfjs does), then prints
// one closing line `N passed, M failed, K skipped` summed over backends: a test that cannot run here
// (testUnless in test/helpers.ts) counts as skipped, a test file that fails to import as failed. Extra
// arguments are passed to uvu as its file pattern, e.g. `npm test -- gradcache`. The backends are tensorflow (when its binding loads: see
// `npm run setup:tensorflow`), wasm and cpu; TEVATRON_TEST_BACKENDS=wasm,cpu picks them instead. Each pass runs
// with TMPDIR set to a directory of its own, deleted when the pass ends.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const pattern = process.argv[2] ? `^[^/]*(${process.argv[2]})[^/]*\\.test\\.ts$` : '^[^/]*\\.test\\.ts$';

/** Asks a child process whether the tensorflow backend loads (loading it here would pin it for good). */
function tensorflowAvailability() {
  const probe = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', `
      import { tensorflowAvailability } from ${JSON.stringify(path.join(root, 'lib/backend.ts'))};
      console.log(JSON.stringify(tensorflowAvailability()));`],
    { cwd: root, encoding: 'utf8', timeout: 120_000 },
  );
  try {
    return JSON.parse(probe.stdout.trim().split('\n').at(-1));
  } catch {
    const line = `${probe.stderr}`.split('\n').find((l) => /Error/.test(l)) ?? `exit ${probe.status ?? probe.signal}`;
    return { available: false, reason: `the probe failed: ${line.trim()}` };
  }
}

let backends;
if (process.env.TEVATRON_TEST_BACKENDS) {
  backends = process.env.TEVATRON_TEST_BACKENDS.split(',').filter(Boolean);
} else {
  const tensorflow = tensorflowAvailability();
  backends = tensorflow.available ? ['tensorflow', 'wasm', 'cpu'] : ['wasm', 'cpu'];
  console.log(tensorflow.available ? `backends: ${backends.join(', ')} (tensorflow from ${tensorflow.package})` : `backends: wasm, cpu (tensorflow not available: ${tensorflow.reason})`);
}

let passed = 0;
let failed = 0;
let skipped = 0;
for (const backend of backends) {
  console.log(`\n=== backend: ${backend} ===`);
  // every temporary file of the pass (its tests', their child processes', Python's) goes under one TMPDIR,
  // removed afterwards, so neither a test that keeps its files nor one that fails before its clean-up leaves
  // anything on the shared disk
  const tmp = mkdtempSync(path.join(os.tmpdir(), `tevatron-test-${backend}-`));
  const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'test/suite.mjs'), 'test', pattern], {
    cwd: root,
    env: { ...process.env, TEVATRON_BACKEND: backend, NO_COLOR: '1', TMPDIR: tmp },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  rmSync(tmp, { recursive: true, force: true });
  const out = `${run.stdout}${run.stderr}`;
  process.stdout.write(out);
  const count = (label) => Number(out.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm'))?.[1] ?? NaN);
  const total = count('Total');
  if (Number.isNaN(total)) {
    failed += 1; // the run died before uvu's summary (e.g. a file failed to import)
    console.log(`backend ${backend}: the suite did not finish (exit ${run.status})`);
    continue;
  }
  const importFailures = count('Import failures') || 0;
  passed += count('Passed');
  failed += total - count('Passed') + importFailures;
  skipped += count('Skipped');
  if (run.status !== 0 && total === count('Passed') && importFailures === 0) failed += 1;
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
