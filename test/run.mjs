// `npm test`: runs the uvu suite once per backend (the same specs on each, as tfjs does), then prints
// one closing line `N passed, M failed` summed over backends. Extra arguments are passed to uvu as its
// file pattern, e.g. `npm test -- gradcache`. TEVATRON_TEST_BACKENDS=wasm,cpu picks the backends.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const backends = (process.env.TEVATRON_TEST_BACKENDS ?? 'wasm,cpu').split(',').filter(Boolean);
const pattern = process.argv[2] ? `^[^/]*(${process.argv[2]})[^/]*\\.test\\.ts$` : '^[^/]*\\.test\\.ts$';

let passed = 0;
let failed = 0;
let skipped = 0;
for (const backend of backends) {
  console.log(`\n=== backend: ${backend} ===`);
  const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'node_modules/uvu/bin.js'), 'test', pattern], {
    cwd: root,
    env: { ...process.env, TEVATRON_BACKEND: backend, NO_COLOR: '1' },
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const out = `${run.stdout}${run.stderr}`;
  process.stdout.write(out);
  const count = (label) => Number(out.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm'))?.[1] ?? NaN);
  const total = count('Total');
  if (Number.isNaN(total)) {
    failed += 1; // the run died before uvu's summary (e.g. a file failed to import)
    console.log(`backend ${backend}: the suite did not finish (exit ${run.status})`);
    continue;
  }
  passed += count('Passed');
  failed += total - count('Passed');
  skipped += count('Skipped') || 0;
  if (run.status !== 0 && total === count('Passed')) failed += 1;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : 0);
