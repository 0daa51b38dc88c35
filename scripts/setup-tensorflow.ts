// `npm run setup:tensorflow`: gives @tensorflow/tfjs-node (or, with --gpu, -gpu) a native binding built
// against TensorFlow 2.21 from its pip wheel, because the package's own install script downloads a 2022
// libtensorflow from outside the npm registry. Steps, each cached so a second run takes seconds:
//   1. TensorFlow: `pip download` the wheel (tensorflow-cpu, or tensorflow plus its CUDA 12 wheels), keep
//      only the two shared libraries, the C API headers (and the CUDA libraries) in a cache folder outside
//      the repository -- or use an existing install (--tensorflow-dir).
//   2. Binding: compile the installed package's own binding/*.cc, patched by native/*.patch and joined by
//      tevatron-ts's entry points native/*.cc (mixed-precision products), with node-gyp, linked to those
//      libraries with an rpath to them (no LD_LIBRARY_PATH needed); the result is cached per
//      sources/patch/TF/platform.
//   3. Install it where the package's node-pre-gyp looks (lib/napi-v8/tfjs_binding.node), then load it
//      in a child process, run a matMul and check every entry point of native/ is there.
// Every failure is one line naming the cause and the fix. `--optional` (the npm install hook) reports a
// failure and exits 0, so a machine without Python or a compiler still installs and uses wasm/cpu.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { applyHunks, nativeExtensions, parseUnifiedDiff, type NativeExtensions } from './native-extensions.ts';

const TF_VERSION = '2.21.0';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NATIVE = nativeExtensions(path.join(ROOT, 'native'));
// native/tevatron_fused.cc: sqrt without errno, so its loops vectorize (the binding reads no errno)
const BINDING_CFLAGS = ['-fno-math-errno'];
const HELP = `usage: npm run setup:tensorflow -- [--gpu] [--tensorflow-dir DIR | --wheel FILE] [--force]

Builds the tensorflow backend: @tensorflow/tfjs-node's binding against TensorFlow ${TF_VERSION} from its pip wheel.

  --gpu                 build @tensorflow/tfjs-node-gpu against the GPU wheel tensorflow==${TF_VERSION} and its
                        CUDA 12 wheels (needs an NVIDIA driver at run time)           [env TEVATRON_TENSORFLOW=gpu]
  --cpu                 build @tensorflow/tfjs-node against tensorflow-cpu==${TF_VERSION} (the default)
  --tensorflow-dir DIR  use an existing TensorFlow instead of downloading one: a pip install's
                        site-packages/tensorflow (libtensorflow_cc.so.2 + include/) or a libtensorflow
                        tarball (lib/libtensorflow.so.2 + include/)                    [env TEVATRON_TENSORFLOW_DIR]
  --wheel FILE          use this TensorFlow wheel instead of running pip download     [env TEVATRON_TENSORFLOW_WHEEL]
  --python EXE          the Python that runs pip (default python3)                   [env TEVATRON_PYTHON]
  --force               redo every step even when cached
  --optional            report a failure on one line and exit 0 (the npm install hook uses this)

The cache lives in \${TEVATRON_CACHE_DIR:-\${XDG_CACHE_HOME:-~/.cache}/tevatron-ts}. At npm install,
TEVATRON_TENSORFLOW=skip skips this step.`;

/** A failure the user can act on: its message is one line naming the cause and the fix. */
class SetupError extends Error {}

type Variant = 'cpu' | 'gpu';
const VARIANTS = {
  cpu: { pkg: '@tensorflow/tfjs-node', wheel: `tensorflow-cpu==${TF_VERSION}`, cacheName: `tensorflow-${TF_VERSION}` },
  gpu: { pkg: '@tensorflow/tfjs-node-gpu', wheel: `tensorflow==${TF_VERSION}`, cacheName: `tensorflow-${TF_VERSION}-cuda12` },
} as const;

interface Options {
  variant: Variant;
  tensorflowDir?: string;
  wheel?: string;
  python: string;
  force: boolean;
  optional: boolean;
  cacheRoot: string;
}

/** Where TensorFlow's libraries and headers are. */
interface TensorflowLayout {
  libDir: string; // holds the C API library and libtensorflow_framework.so.2; the binding's rpath
  ccLib: string; // the file exporting TF_* / TFE_* (libtensorflow_cc.so.2 or libtensorflow.so.2)
  frameworkLib: string;
  includeDir: string;
  version?: string; // from the wheel's or dist-info's name, when known
  cudaLibDirs: string[]; // nvidia/*/lib of the CUDA wheels (GPU only)
}

const log = (line: string) => console.log(`setup:tensorflow: ${line}`);
const tilde = (p: string) => (p.startsWith(os.homedir() + path.sep) ? `~${p.slice(os.homedir().length)}` : p);

function parseOptions(argv: string[]): Options | null {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        gpu: { type: 'boolean' },
        cpu: { type: 'boolean' },
        'tensorflow-dir': { type: 'string' },
        wheel: { type: 'string' },
        python: { type: 'string' },
        force: { type: 'boolean' },
        optional: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new SetupError(`${(err as Error).message.split('\n')[0]}; see --help`);
  }
  if (values.help) {
    console.log(HELP);
    return null;
  }
  const envVariant = process.env.TEVATRON_TENSORFLOW;
  if (envVariant !== undefined && !['cpu', 'gpu', 'skip', ''].includes(envVariant)) {
    throw new SetupError(`TEVATRON_TENSORFLOW=${envVariant}: use cpu, gpu or skip`);
  }
  if (values.gpu && values.cpu) throw new SetupError('--gpu and --cpu: pick one');
  const variant: Variant = values.gpu ? 'gpu' : values.cpu ? 'cpu' : envVariant === 'gpu' ? 'gpu' : 'cpu';
  const tensorflowDir = values['tensorflow-dir'] ?? (process.env.TEVATRON_TENSORFLOW_DIR || undefined);
  const wheel = values.wheel ?? (process.env.TEVATRON_TENSORFLOW_WHEEL || undefined);
  if (tensorflowDir && wheel) throw new SetupError('--tensorflow-dir and --wheel: give one source of TensorFlow, not both');
  const cacheRoot = process.env.TEVATRON_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tevatron-ts');
  return {
    variant,
    tensorflowDir: tensorflowDir && path.resolve(tensorflowDir),
    wheel: wheel && path.resolve(wheel),
    python: values.python ?? (process.env.TEVATRON_PYTHON || 'python3'),
    force: values.force ?? false,
    optional: values.optional ?? false,
    cacheRoot: path.resolve(cacheRoot),
  };
}

/** Runs a command to completion; a missing executable is reported as `null`. */
function run(cmd: string, args: string[], opts: { cwd?: string; timeoutS?: number; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> | null {
  const res = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    timeout: (opts.timeoutS ?? 600) * 1000,
  });
  if ((res.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
  if ((res.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
    throw new SetupError(`${path.basename(cmd)} ${args.slice(0, 3).join(' ')} ran past ${opts.timeoutS ?? 600} s and was stopped`);
  }
  if (res.error) throw new SetupError(`${cmd}: ${res.error.message}`);
  return res;
}

function lastLine(text: string, pattern?: RegExp): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const hit = pattern ? lines.find((l) => pattern.test(l)) : undefined;
  return (hit ?? lines.at(-1) ?? '').slice(0, 300);
}

// ---------------------------------------------------------------- the package whose binding we build

interface TfjsNodePackage {
  name: string;
  version: string;
  dir: string;
  sources: string[]; // binding/*.cc, absolute
  headers: string[]; // binding/*.h, absolute
  bindingPath: string; // where its node-pre-gyp looks
  napiVersion: number;
}

function findPackage(name: string): TfjsNodePackage {
  const require = createRequire(path.join(ROOT, 'package.json'));
  let pkgJson: string;
  try {
    pkgJson = require.resolve(`${name}/package.json`);
  } catch {
    throw new SetupError(
      `${name} is not in node_modules: run \`npm install\` first (if npm removed it because its own install script failed, run \`npm install --ignore-scripts\`)`,
    );
  }
  const dir = path.dirname(pkgJson);
  const meta = JSON.parse(fs.readFileSync(pkgJson, 'utf8'));
  const bindingDir = path.join(dir, 'binding');
  const files = fs.existsSync(bindingDir) ? fs.readdirSync(bindingDir).sort() : [];
  const sources = files.filter((f) => f.endsWith('.cc')).map((f) => path.join(bindingDir, f));
  if (sources.length === 0) throw new SetupError(`${dir}/binding has no .cc sources: reinstall ${name} (\`npm install --ignore-scripts\`)`);
  const binary = meta.binary ?? {};
  const nodeNapi = Number(process.versions.napi);
  const napiVersion = Math.max(...(binary.napi_versions ?? [8]).filter((v: number) => v <= nodeNapi));
  if (!Number.isFinite(napiVersion)) throw new SetupError(`this Node.js (N-API ${nodeNapi}) is older than ${name} supports: use Node.js 20 or newer`);
  const modulePath = String(binary.module_path ?? './lib/napi-v{napi_build_version}').replace('{napi_build_version}', String(napiVersion));
  if (modulePath.includes('{')) throw new SetupError(`${name}'s package.json has an unexpected binary.module_path ${modulePath}: this setup knows tfjs-node 4.x`);
  return {
    name,
    version: meta.version,
    dir,
    sources,
    headers: files.filter((f) => f.endsWith('.h')).map((f) => path.join(bindingDir, f)),
    bindingPath: path.join(dir, modulePath, `${binary.module_name ?? 'tfjs_binding'}.node`),
    napiVersion,
  };
}

// ---------------------------------------------------------------- TensorFlow: an existing install

/** The version from the wheel's name (our cache) or a pip install's dist-info; TF_Version() tells the truth later. */
function versionHint(base: string): string | undefined {
  const complete = path.join(base, '..', '.complete');
  if (fs.existsSync(complete)) return JSON.parse(fs.readFileSync(complete, 'utf8')).wheel?.match(/^[^-]+-([^-]+)-/)?.[1];
  const parent = path.join(base, '..');
  for (const entry of fs.existsSync(parent) ? fs.readdirSync(parent) : []) {
    const m = entry.match(/^tensorflow(?:_cpu|_gpu|_intel)?-([^-]+)\.dist-info$/i);
    if (m) return m[1];
  }
  return undefined;
}

/** Accepts site-packages, site-packages/tensorflow, a libtensorflow tarball root, or their lib/ folder's parent. */
function tensorflowLayout(dir: string, flag = '--tensorflow-dir'): TensorflowLayout {
  if (!fs.existsSync(dir)) throw new SetupError(`${flag} ${dir}: no such folder; give the folder holding libtensorflow_cc.so.2 (a pip install's site-packages/tensorflow) or a libtensorflow tarball's root`);
  const candidates = [dir, path.join(dir, 'tensorflow')];
  for (const base of candidates) {
    for (const libDir of [base, path.join(base, 'lib')]) {
      for (const ccName of ['libtensorflow_cc.so.2', 'libtensorflow.so.2']) {
        const ccLib = path.join(libDir, ccName);
        const frameworkLib = path.join(libDir, 'libtensorflow_framework.so.2');
        const includeDir = path.join(base, 'include');
        if (fs.existsSync(ccLib) && fs.existsSync(frameworkLib) && fs.existsSync(path.join(includeDir, 'tensorflow/c/c_api.h'))) {
          const nvidia = path.join(base, '..', 'nvidia');
          const cudaLibDirs = fs.existsSync(nvidia)
            ? fs.readdirSync(nvidia).map((d) => path.join(nvidia, d, 'lib')).filter((d) => fs.existsSync(d)).sort()
            : [];
          return { libDir: fs.realpathSync(libDir), ccLib, frameworkLib, includeDir, version: versionHint(base), cudaLibDirs };
        }
      }
    }
  }
  throw new SetupError(
    `${flag} ${dir}: no TensorFlow C library there; expected libtensorflow_cc.so.2, libtensorflow_framework.so.2 and include/tensorflow/c/c_api.h ` +
      `(find a pip install with: python3 -c "import tensorflow, os; print(os.path.dirname(tensorflow.__file__))")`,
  );
}

// ---------------------------------------------------------------- TensorFlow: from the pip wheel

// Only what the binding compiles against (checked with g++ -M), so the cache holds ~6 MB of headers, not 270.
const HEADER_TREES = ['tensorflow/c/', 'tensorflow/core/platform/', 'tensorflow/core/public/', 'tsl/', 'xla/tsl/'];

const PY_EXTRACT = String.raw`
import json, re, sys, zipfile
wheel, dest, patterns = sys.argv[1], sys.argv[2], [re.compile(p) for p in json.loads(sys.argv[3])]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.endswith('/') and any(p.fullmatch(info.filename) for p in patterns):
            z.extract(info, dest)
            n += 1
print(n)
`;

const PY_CUDA_REQUIREMENTS = String.raw`
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    for line in z.read(meta).decode().splitlines():
        if line.startswith('Requires-Dist:') and 'and-cuda' in line.split(';', 1)[-1]:
            print(line.split(':', 1)[1].split(';', 1)[0].replace('(', '').replace(')', '').replace(' ', ''))
`;

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function checkPython(python: string): void {
  const res = run(python, ['-m', 'pip', '--version'], { timeoutS: 60 });
  if (res === null) {
    throw new SetupError(`${python} not found: install Python 3 with pip (Debian: apt-get install python3-pip), set TEVATRON_PYTHON, or use --tensorflow-dir with an existing TensorFlow`);
  }
  if (res.status !== 0) {
    throw new SetupError(`${python} has no pip (${lastLine(res.stderr)}): install it (Debian: apt-get install python3-pip) or use --tensorflow-dir with an existing TensorFlow`);
  }
}

function pipDownload(python: string, specs: string[], dest: string): string[] {
  const what = specs.length === 1 ? specs[0] : `${specs.length} wheels (${specs.map((s) => s.split(/[<>=!~;]/)[0]).join(', ')})`;
  log(`downloading ${what} with pip...`);
  fs.mkdirSync(dest, { recursive: true });
  const res = run(python, ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--progress-bar', 'off', '--retries', '1', '--timeout', '15', '-d', dest, ...specs], {
    timeoutS: 1800,
  });
  if (res === null) throw new SetupError(`${python} not found`);
  if (res.status !== 0) {
    const err = `${res.stdout}\n${res.stderr}`;
    const pyVersion = run(python, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'])?.stdout.trim();
    if (/No matching distribution|Could not find a version/i.test(err)) {
      throw new SetupError(
        `pip found no wheel for ${specs.length === 1 ? specs[0] : `${what}, e.g. ${lastLine(err, /No matching distribution|Could not find a version/i).replace(/^ERROR: /, '')}`} for Python ${pyVersion} on ${process.platform}-${process.arch} (no network, or no wheel for this Python): ` +
          `use a Python TensorFlow ${TF_VERSION} supports (--python), download the wheel elsewhere and pass --wheel FILE, or pass --tensorflow-dir`,
      );
    }
    if (/connection|network|resolve|timed out|proxy|SSL/i.test(err)) {
      throw new SetupError(`pip could not reach the package index (${lastLine(err, /error|connection/i)}): check the network, or pass --wheel FILE / --tensorflow-dir`);
    }
    throw new SetupError(`pip download ${what} failed: ${lastLine(res.stderr || res.stdout, /error/i)}`);
  }
  return fs.readdirSync(dest).filter((f) => f.endsWith('.whl')).map((f) => path.join(dest, f));
}

function extract(python: string, wheel: string, dest: string, patterns: string[]): number {
  const res = run(python, ['-c', PY_EXTRACT, wheel, dest, JSON.stringify(patterns)], { timeoutS: 1200 });
  if (res === null || res.status !== 0) {
    throw new SetupError(`could not unpack ${path.basename(wheel)}: ${res ? lastLine(res.stderr) : `${python} not found`} (a partial download? rerun with --force)`);
  }
  return Number(res.stdout.trim());
}

function tensorflowFromWheel(opts: Options): TensorflowLayout {
  const variant = VARIANTS[opts.variant];
  const cacheDir = path.join(opts.cacheRoot, variant.cacheName);
  const done = path.join(cacheDir, '.complete');
  if (!opts.force && fs.existsSync(done)) return tensorflowLayout(cacheDir, `the cache folder`);

  if (opts.wheel && !fs.existsSync(opts.wheel)) throw new SetupError(`--wheel ${opts.wheel}: no such file; give a downloaded ${variant.wheel} wheel (.whl)`);
  checkPython(opts.python);
  fs.mkdirSync(opts.cacheRoot, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(opts.cacheRoot, `.${variant.cacheName}.`));
  try {
    const wheel = opts.wheel ?? pipDownload(opts.python, [variant.wheel], path.join(tmp, 'wheels'))[0];
    if (!wheel) throw new SetupError(`pip download ${variant.wheel} left no wheel in ${tmp}`);
    log(`extracting the TensorFlow libraries and C API headers from ${path.basename(wheel)}...`);
    const tree = path.join(tmp, 'tree');
    const patterns = [
      'tensorflow/libtensorflow_cc\\.so\\.2',
      'tensorflow/libtensorflow_framework\\.so\\.2',
      ...HEADER_TREES.map((t) => `tensorflow/include/${escapeRe(t)}.*`),
    ];
    extract(opts.python, wheel, tree, patterns);
    if (!fs.existsSync(path.join(tree, 'tensorflow/libtensorflow_cc.so.2'))) {
      throw new SetupError(`${path.basename(wheel)} has no tensorflow/libtensorflow_cc.so.2: not a TensorFlow ${TF_VERSION} Linux wheel? pass --tensorflow-dir instead`);
    }
    if (opts.variant === 'gpu') {
      const req = run(opts.python, ['-c', PY_CUDA_REQUIREMENTS, wheel]);
      const specs = (req?.stdout ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
      if (specs.length === 0) throw new SetupError(`${path.basename(wheel)} lists no [and-cuda] requirements: is it the GPU wheel tensorflow==${TF_VERSION}?`);
      for (const cudaWheel of pipDownload(opts.python, specs, path.join(tmp, 'cuda-wheels'))) {
        extract(opts.python, cudaWheel, tree, ['nvidia/[^/]+/lib/[^/]+\\.so(\\.[0-9]+)*']);
      }
    }
    fs.rmSync(path.join(tmp, 'wheels'), { recursive: true, force: true });
    fs.rmSync(path.join(tmp, 'cuda-wheels'), { recursive: true, force: true });
    fs.writeFileSync(path.join(tree, '.complete'), JSON.stringify({ wheel: path.basename(wheel), at: new Date().toISOString() }) + '\n');
    fs.rmSync(cacheDir, { recursive: true, force: true }); // a partial folder from an interrupted run, or --force
    try {
      fs.renameSync(tree, cacheDir);
    } catch (err) {
      if (!fs.existsSync(done)) throw err; // else a concurrent run finished first: use its copy
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return tensorflowLayout(cacheDir, 'the cache folder');
}

// ---------------------------------------------------------------- the binding

function hashOf(parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

function findNodeGyp(): string[] {
  const candidates = [
    process.env.npm_config_node_gyp,
    process.env.npm_execpath && path.join(path.dirname(process.env.npm_execpath), '../node_modules/node-gyp/bin/node-gyp.js'),
    path.resolve(process.execPath, '../../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ];
  for (const c of candidates) if (c && c.endsWith('.js') && fs.existsSync(c)) return [process.execPath, c];
  if (run('node-gyp', ['--version'])?.status === 0) return ['node-gyp'];
  throw new SetupError('node-gyp not found (it ships with npm): install npm, or `npm install -g node-gyp`');
}

/** Node's headers: npm's `nodedir` setting, else the headers installed next to this node binary. */
function findNodeDir(): string | undefined {
  const configured = process.env.npm_config_nodedir;
  if (configured) return configured;
  const beside = path.resolve(process.execPath, '../..');
  return fs.existsSync(path.join(beside, 'include/node/node_api.h')) ? beside : undefined;
}

function checkCompiler(): void {
  const cxx = process.env.CXX;
  if (cxx) {
    if (run(cxx.split(' ')[0], ['--version']) === null) throw new SetupError(`CXX=${cxx}: no such compiler; unset CXX or point it at g++`);
  } else if (run('g++', ['--version']) === null && run('c++', ['--version']) === null) {
    throw new SetupError('no C++ compiler (g++): install one (Debian: apt-get install g++ make) or set CXX');
  }
  if (run('make', ['--version']) === null) throw new SetupError('make not found: install it (Debian: apt-get install make)');
  if (run('python3', ['--version']) === null && run('python', ['--version']) === null) {
    throw new SetupError('node-gyp needs Python 3 and none was found: install python3');
  }
}

/** GPU: when TF's own RUNPATH does not reach nvidia/*\/lib, the binding links the CUDA libraries itself. */
function cudaLinkFlags(tf: TensorflowLayout): string[] {
  if (tf.cudaLibDirs.length === 0) return [];
  const dyn = run('readelf', ['-d', tf.frameworkLib]);
  if (dyn?.status === 0 && /RUNPATH|RPATH/.test(dyn.stdout) && dyn.stdout.includes('nvidia')) return [];
  const flags = ['-Wl,--no-as-needed'];
  for (const dir of tf.cudaLibDirs) {
    flags.push(`-Wl,-rpath,${dir}`, `-L${dir}`);
    for (const f of fs.readdirSync(dir).filter((f) => /^lib.+\.so\.\d+$/.test(f)).sort()) flags.push(`-l:${f}`);
  }
  return [...flags, '-Wl,--as-needed'];
}

/**
 * A second, tiny addon: TensorFlow's shared libraries log a few INFO lines through absl while they load
 * (before TF_CPP_MIN_LOG_LEVEL is consulted), which would break every script's one-line error. Node
 * cannot point file descriptor 2 elsewhere by itself; lib/backend.ts uses this to send fd 2 to a file
 * while the binding loads, then replays the entries at or above the wanted level.
 */
const STDIO_ADDON = 'tevatron_stdio';
const STDIO_SOURCE = String.raw`// Built by tevatron-ts's scripts/setup-tensorflow.ts: redirect(path) -> saved fd; restore(saved).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <node_api.h>

static napi_value number(napi_env env, int v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

static napi_value Redirect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok) return number(env, -1);
  fflush(stderr);
  int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
  if (saved < 0) return number(env, -1);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || dup2(fd, 2) < 0) {
    if (fd >= 0) close(fd);
    close(saved);
    return number(env, -1);
  }
  close(fd);
  return number(env, saved);
}

static napi_value Restore(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int saved = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &saved) != napi_ok || saved < 0) return number(env, -1);
  fflush(stderr);
  int ok = dup2(saved, 2);
  close(saved);
  return number(env, ok < 0 ? -1 : 0);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"redirect", NULL, Redirect, NULL, NULL, NULL, napi_default, NULL},
    {"restore", NULL, Restore, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
`;

/**
 * Patches the copied binding sources in `bindingDir` with native/*.patch and adds native/*.cc and *.h.
 * The patches are written against the pinned tfjs-node version: one that does not apply is an error
 * naming the hunk, never a binding silently built without tevatron-ts's entry points.
 */
function addExtensions(bindingDir: string, pkg: TfjsNodePackage, ext: NativeExtensions): void {
  for (const patch of ext.patches) {
    for (const [file, hunks] of parseUnifiedDiff(fs.readFileSync(patch, 'utf8'))) {
      const target = path.join(bindingDir, path.basename(file));
      if (!file.startsWith('binding/') || !fs.existsSync(target)) {
        throw new SetupError(`${path.relative(ROOT, patch)} patches ${file}, which ${pkg.name}@${pkg.version} does not have: the patch is for the version package.json pins; reinstall it (npm ci)`);
      }
      try {
        fs.writeFileSync(target, applyHunks(fs.readFileSync(target, 'utf8'), hunks, file));
      } catch (err) {
        throw new SetupError(`${path.relative(ROOT, patch)}: ${(err as Error).message} in ${pkg.name}@${pkg.version}: the patch is for the version package.json pins; reinstall it (npm ci)`);
      }
    }
  }
  for (const f of [...ext.sources, ...ext.headers]) fs.copyFileSync(f, path.join(bindingDir, path.basename(f)));
}

/** Compiles the binding and the stderr addon; returns the cache folder holding both .node files. */
function buildBinding(pkg: TfjsNodePackage, tf: TensorflowLayout, opts: Options): string {
  const key = hashOf([
    STDIO_SOURCE,
    ...NATIVE.files.flatMap((f) => [path.basename(f), fs.readFileSync(f)]),
    ...BINDING_CFLAGS,
    pkg.name,
    pkg.version,
    ...[...pkg.sources, ...pkg.headers].map((f) => fs.readFileSync(f)),
    tf.libDir,
    ...[tf.ccLib, tf.frameworkLib].map((f) => {
      const st = fs.statSync(f);
      return `${fs.realpathSync(f)}:${st.size}:${st.mtimeMs}`;
    }),
    ...tf.cudaLibDirs,
    String(pkg.napiVersion),
    process.platform,
    process.arch,
    process.env.CXX ?? '',
  ]).slice(0, 16);
  const buildDir = path.join(opts.cacheRoot, 'builds', `${pkg.name.replace('@tensorflow/', '')}-${pkg.version}-tf${tf.version ?? ''}-${key}`);
  const built = path.join(buildDir, 'tfjs_binding.node');
  if (!opts.force && fs.existsSync(built) && fs.existsSync(path.join(buildDir, `${STDIO_ADDON}.node`))) return buildDir;

  checkCompiler();
  const nodeGyp = findNodeGyp();
  const nodeDir = findNodeDir();
  fs.mkdirSync(path.dirname(buildDir), { recursive: true });
  const tmp = fs.mkdtempSync(`${buildDir}.`);
  try {
    fs.mkdirSync(path.join(tmp, 'binding'));
    for (const f of [...pkg.sources, ...pkg.headers]) fs.copyFileSync(f, path.join(tmp, 'binding', path.basename(f)));
    addExtensions(path.join(tmp, 'binding'), pkg, NATIVE);
    // -ltensorflow resolves to the C API library through these links; the binding's NEEDED entries
    // are the libraries' sonames (libtensorflow_cc.so.2, ...), found at run time through the rpath.
    const linkDir = path.join(tmp, 'tflib');
    fs.mkdirSync(linkDir);
    fs.symlinkSync(tf.ccLib, path.join(linkDir, 'libtensorflow.so'));
    fs.symlinkSync(tf.frameworkLib, path.join(linkDir, 'libtensorflow_framework.so'));
    const gyp = {
      targets: [
        {
          target_name: 'tfjs_binding',
          sources: [...pkg.sources, ...NATIVE.sources].map((f) => `binding/${path.basename(f)}`),
          include_dirs: [tf.includeDir],
          defines: [`NAPI_VERSION=${pkg.napiVersion}`],
          cflags_cc: BINDING_CFLAGS,
          libraries: [`-L${linkDir}`, '-ltensorflow', '-ltensorflow_framework', `-Wl,-rpath,${tf.libDir}`, ...cudaLinkFlags(tf)],
        },
        { target_name: STDIO_ADDON, sources: [`tevatron/${STDIO_ADDON}.c`], defines: [`NAPI_VERSION=${pkg.napiVersion}`] },
      ],
    };
    fs.mkdirSync(path.join(tmp, 'tevatron'));
    fs.writeFileSync(path.join(tmp, 'tevatron', `${STDIO_ADDON}.c`), STDIO_SOURCE);
    fs.writeFileSync(path.join(tmp, 'binding.gyp'), JSON.stringify(gyp, null, 2) + '\n');
    log(`compiling ${pkg.name}@${pkg.version}'s binding against TensorFlow ${tf.version ?? `in ${tilde(tf.libDir)}`} with node-gyp (about a minute)...`);
    const jobs = String(Math.max(1, Math.min(pkg.sources.length + 1, os.availableParallelism())));
    const args = [...nodeGyp.slice(1), 'rebuild', '--jobs', jobs, ...(nodeDir ? [`--nodedir=${nodeDir}`] : [])];
    const res = run(nodeGyp[0], args, { cwd: tmp, timeoutS: 1200 });
    const output = res ? `${res.stdout}\n${res.stderr}` : '';
    fs.writeFileSync(path.join(tmp, 'build.log'), output);
    const products = ['tfjs_binding', STDIO_ADDON].map((name) => path.join(tmp, 'build/Release', `${name}.node`));
    if (res === null || res.status !== 0 || !products.every((p) => fs.existsSync(p))) {
      const logFile = `${buildDir}.failed.log`;
      fs.writeFileSync(logFile, output);
      if (/node_api\.h: No such file|Could not find common\.gypi|download.*headers|getaddrinfo|ENOTFOUND/i.test(output)) {
        throw new SetupError(`node-gyp has no Node.js headers (they are downloaded unless installed): install them (Debian: apt-get install libnode-dev) and set \`npm config set nodedir /usr\`; log ${tilde(logFile)}`);
      }
      throw new SetupError(`compiling the binding failed: ${lastLine(output, /error[: ]|undefined reference|gyp ERR! stack Error/)}; full log ${tilde(logFile)}`);
    }
    for (const p of products) fs.copyFileSync(p, path.join(tmp, path.basename(p)));
    fs.rmSync(path.join(tmp, 'build'), { recursive: true, force: true });
    fs.rmSync(buildDir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, buildDir);
    } catch (err) {
      if (!fs.existsSync(built)) throw err; // else a concurrent run finished first
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return buildDir;
}

/** Copies the binding and the stderr addon next to each other where node-pre-gyp looks; false if unchanged. */
function install(buildDir: string, pkg: TfjsNodePackage): boolean {
  let changed = false;
  for (const [name, dest] of [
    ['tfjs_binding.node', pkg.bindingPath],
    [`${STDIO_ADDON}.node`, path.join(path.dirname(pkg.bindingPath), `${STDIO_ADDON}.node`)],
  ]) {
    const bytes = fs.readFileSync(path.join(buildDir, name));
    if (fs.existsSync(dest) && hashOf([fs.readFileSync(dest)]) === hashOf([bytes])) continue;
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, bytes, { mode: 0o755 });
    fs.renameSync(tmp, dest); // atomic: a concurrent `require` sees the old or the new file
    changed = true;
  }
  return changed;
}

/**
 * Loads the package in a child process (a crash there must not take this one down), runs a matMul and
 * native/'s mixed-precision product, and checks that every entry point of native/ is exported and that
 * the stderr addon moves fd 2 and back.
 */
function verify(pkg: TfjsNodePackage): { version: string; gpu: boolean } {
  const stdio = path.join(path.dirname(pkg.bindingPath), `${STDIO_ADDON}.node`);
  const code = `
    const fs = require('fs'), os = require('os'), path = require('path');
    const stdio = require(${JSON.stringify(stdio)});
    const file = path.join(os.tmpdir(), 'tevatron-stdio-check-' + process.pid);
    const saved = stdio.redirect(file);
    fs.writeSync(2, 'moved');
    const restored = stdio.restore(saved);
    const moved = fs.readFileSync(file, 'utf8') === 'moved' && saved > 2 && restored === 0;
    fs.rmSync(file, { force: true });
    const tf = require(${JSON.stringify(pkg.name)});
    const out = Array.from(tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync());
    const b = tf.backend();
    const exported = b.binding.tevatronExports ?? [];
    // native/tevatron_mixed.cc: the same product in bfloat16 (14), exact for these small integers
    const mixed = typeof b.binding.mixedMatMul === 'function'
      ? Array.from(b.createOutputTensor(b.binding.mixedMatMul(...b.getInputTensorIds([tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])]), -1, false, false, 14, 0)).dataSync())
      : null;
    console.log(JSON.stringify({ backend: tf.getBackend(), version: b.binding.TF_Version, gpu: !!b.isUsingGpuDevice, out, moved, exported, mixed }));`;
  const res = run(process.execPath, ['-e', code], { cwd: ROOT, timeoutS: 300, env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL ?? '2' } });
  const line = res?.stdout.trim().split('\n').at(-1) ?? '';
  let got: { backend?: string; version?: string; gpu?: boolean; out?: number[]; moved?: boolean; exported?: string[]; mixed?: number[] | null } = {};
  try {
    got = JSON.parse(line);
  } catch {
    const why = res?.signal ? `killed by ${res.signal}` : lastLine(res?.stderr ?? '', /^(\w*Error|error):/);
    throw new SetupError(`the built binding does not load: ${why}`);
  }
  if (got.backend !== 'tensorflow' || got.out?.join() !== '17,39') {
    throw new SetupError(`the built binding loads but computes wrongly (backend ${got.backend}, [[1,2],[3,4]]x[[5],[6]] = ${got.out}): rerun with --force`);
  }
  if (!got.moved) throw new SetupError(`${STDIO_ADDON}.node does not redirect stderr: rerun with --force`);
  const missing = NATIVE.exports.filter((name) => !got.exported?.includes(name));
  if (missing.length) throw new SetupError(`the built binding lacks the entry points ${missing.join(', ')} of native/: rerun with --force`);
  if (got.mixed?.join() !== '17,39') throw new SetupError(`the built binding's mixedMatMul computes [[1,2],[3,4]]x[[5],[6]] = ${got.mixed} in bfloat16: rerun with --force`);
  return { version: got.version ?? 'unknown', gpu: got.gpu ?? false };
}

function setup(opts: Options): void {
  const started = Date.now();
  if (process.platform !== 'linux') {
    throw new SetupError(`this setup builds for Linux; on ${process.platform} use the stock \`@tensorflow/tfjs-node\` install (it downloads its own libtensorflow) or the wasm backend`);
  }
  const variant = VARIANTS[opts.variant];
  const pkg = findPackage(variant.pkg);
  const tf = opts.tensorflowDir ? tensorflowLayout(opts.tensorflowDir) : tensorflowFromWheel(opts);
  if (opts.variant === 'gpu' && opts.tensorflowDir && tf.cudaLibDirs.length === 0) {
    log(`note: no nvidia/*/lib beside ${tilde(tf.libDir)}; TensorFlow must find the CUDA 12 libraries on its own (system CUDA, LD_LIBRARY_PATH)`);
  }
  const built = buildBinding(pkg, tf, opts);
  const changed = install(built, pkg);
  const { version, gpu } = verify(pkg);
  const where = path.relative(ROOT, pkg.bindingPath);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  log(
    `${pkg.name} runs TensorFlow ${version}${opts.variant === 'gpu' ? (gpu ? ' on the GPU' : ' (no GPU visible: it runs on the CPU)') : ''}; ` +
      `binding ${where}${changed ? '' : ' (unchanged)'}, libraries in ${tilde(tf.libDir)} (${secs} s)`,
  );
}

function main(): number {
  let opts: Options | null = null;
  const optional = process.argv.includes('--optional');
  try {
    if (optional && process.env.TEVATRON_TENSORFLOW === 'skip') {
      console.log('tevatron-ts: TEVATRON_TENSORFLOW=skip: not building the tensorflow backend (wasm/cpu will be used)');
      return 0;
    }
    opts = parseOptions(process.argv.slice(2));
    if (opts === null) return 0;
    setup(opts);
    return 0;
  } catch (err) {
    const message = err instanceof SetupError ? err.message : `unexpected error: ${(err as Error).stack ?? err}`;
    if (optional) {
      console.log(`tevatron-ts: tensorflow backend not built: ${message.split('\n')[0]} (wasm/cpu will be used; retry with \`npm run setup:tensorflow\`)`);
      return 0;
    }
    console.error(`setup:tensorflow: ${message}`);
    return 1;
  }
}

process.exitCode = main();
