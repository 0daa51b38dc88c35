// One backend's pass of the suite, as `uvu test PATTERN` runs it (uvu's parse and exec), except that a
// test file that fails to import (a syntax error, a throwing top-level await) is named and counted as
// failed, and the other files still run: uvu's own runner would end the whole pass at that file.
//   node --import tsx test/suite.mjs DIR PATTERN    (test/run.mjs starts it once per backend)
import { pathToFileURL } from 'node:url';
import { parse } from 'uvu/parse';

const [dir, pattern] = process.argv.slice(2);
const { suites } = await parse(dir, pattern);
globalThis.UVU_DEFER = 1; // tests queue up instead of running as their files load (what uvu/run sets)
const uvu = await import('uvu');
const broken = [];
for (const [i, suite] of suites.entries()) {
  globalThis.UVU_INDEX = i;
  globalThis.UVU_QUEUE.push([suite.name]);
  try {
    await import(pathToFileURL(suite.file).href);
  } catch (e) {
    broken.push(suite.name);
    // what the file registered before it threw would otherwise run with the next file's tests: flush it, drop it
    uvu.test.run();
    globalThis.UVU_QUEUE[i] = [suite.name];
    console.error(`${suite.name}: failed to import: ${e?.stack ?? e}`);
  }
}
await uvu.exec();
console.log(`  Import failures: ${broken.length}${broken.length ? ` (${broken.join(', ')})` : ''}`);
if (broken.length) process.exitCode = 1;
