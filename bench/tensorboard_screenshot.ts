// A PNG of TensorBoard's curves for a training run (the README's screenshot), rendered headless:
//   npx tsx bench/tensorboard_screenshot.ts LOGDIR OUT.png [--tags REGEX] [--size 1600x780]
// TensorBoard (./.venv's, else the one on PATH) serves LOGDIR on 127.0.0.1 only; Chromium (Debian: apt-get
// install chromium), with no network beyond it and a fresh profile, opens its Scalars dashboard through the
// DevTools protocol on a pipe: smoothing off and outliers kept in the y range (TensorBoard's default clips
// them, which with a few evaluations hides the first and the last), the tags filtered, then a screenshot.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';

const argv = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i < 0 ? fallback : argv.splice(i, 2)[1];
};
const tags = option('tags', 'train/(loss|learning_rate|grad_norm)|eval/(recall@20|mrr@10|ndcg@10)');
const [width, height] = option('size', '1600x780').split('x').map(Number);
const [logdir, out] = argv;
if (!logdir || !out) {
  console.error('usage: npx tsx bench/tensorboard_screenshot.ts LOGDIR OUT.png [--tags REGEX] [--size WIDTHxHEIGHT]');
  process.exit(2);
}
const which = (names: string[]) => names.map((n) => (n.includes('/') ? n : (process.env.PATH ?? '').split(':').map((d) => path.join(d, n)).find(existsSync))).find((p) => p && existsSync(p));
const tensorboard = which(['.venv/bin/tensorboard', 'tensorboard']);
const chromium = which(['chromium', 'chromium-browser', 'google-chrome']);
if (!tensorboard || !chromium) {
  console.error(`tensorboard_screenshot: needs ${!tensorboard ? 'tensorboard (pip install tensorboard)' : 'Chromium (apt-get install chromium)'}`);
  process.exit(1);
}

const children: ChildProcess[] = [];
const work = mkdtempSync(path.join(os.tmpdir(), 'tb-shot-'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
try {
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  children.push(spawn(tensorboard, ['--logdir', logdir, '--host', '127.0.0.1', '--port', String(port)], { stdio: 'ignore' }));
  for (let i = 0; ; i++) {
    const runs = await fetch(`${base}/data/runs`).then((r) => r.json() as Promise<string[]>, () => []);
    if (runs.length) break;
    if (i === 120) throw new Error(`TensorBoard found no run in ${logdir} after 2 minutes`);
    await sleep(1000);
  }

  // DevTools protocol over a pipe: Chromium reads commands on fd 3 and answers on fd 4, NUL-separated JSON.
  const browser = spawn(chromium, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
    `--user-data-dir=${path.join(work, 'profile')}`, '--hide-scrollbars', `--window-size=${width},${height}`, '--remote-debugging-pipe', 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
  children.push(browser);
  const [toBrowser, fromBrowser] = [browser.stdio[3] as Writable, browser.stdio[4] as Readable];
  const pending = new Map<number, (m: { result?: Record<string, unknown>; error?: { message: string } }) => void>();
  let buffered = '';
  fromBrowser.on('data', (chunk: Buffer) => {
    const parts = (buffered + chunk.toString()).split('\0');
    buffered = parts.pop()!;
    for (const p of parts) {
      const m = JSON.parse(p);
      if (m.id !== undefined) pending.get(m.id)?.(m);
    }
  });
  let nextId = 0;
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = ++nextId;
      pending.set(id, (m) => (m.error ? reject(new Error(`${method}: ${m.error.message}`)) : resolve(m.result ?? {})));
      toBrowser.write(JSON.stringify({ id, method, params, sessionId }) + '\0');
    });

  const { targetInfos } = (await send('Target.getTargets')) as { targetInfos: { targetId: string; type: string }[] };
  const page = targetInfos.find((t) => t.type === 'page')!;
  const { sessionId } = (await send('Target.attachToTarget', { targetId: page.targetId, flatten: true })) as { sessionId: string };
  await send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
  const url = `${base}/#scalars&_smoothingWeight=0&tagFilter=${encodeURIComponent(tags)}`;
  await send('Page.navigate', { url }, sessionId);
  await sleep(3000);
  // The dashboard reads this setting from localStorage only: set it, then load the page again with it.
  await send('Runtime.evaluate', { expression: "localStorage.setItem('_ignoreYOutliers', 'false')" }, sessionId);
  await send('Page.reload', {}, sessionId);
  await sleep(10000); // the charts fetch their data and draw
  const { data } = (await send('Page.captureScreenshot', { format: 'png' }, sessionId)) as { data: string };
  writeFileSync(out, Buffer.from(data, 'base64'));
  console.log(`tensorboard_screenshot: ${out} (${width}x${height}) from ${logdir}, tags /${tags}/`);
} finally {
  for (const c of children) c.kill();
  rmSync(work, { recursive: true, force: true });
}
