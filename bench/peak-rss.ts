// Preloaded into each stage of bench/scale.ts (node --import tsx --import bench/peak-rss.ts SCRIPT): at exit,
// writes the process's peak resident set (kB, worker threads included) to $TEVATRON_PEAK_RSS_FILE, so each
// stage's peak is its own.
import { writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

const file = process.env.TEVATRON_PEAK_RSS_FILE;
if (file && isMainThread) process.on('exit', () => writeFileSync(file, String(process.resourceUsage().maxRSS)));
