// native/: the binding patch applies to the pinned tfjs-node's sources (and a changed source is named, not
// silently mispatched), and the running binding exports every entry point native/*.cc registers.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runningBinding } from '../lib/native.ts';
import { applyHunks, nativeExtensions, parseUnifiedDiff } from '../scripts/native-extensions.ts';
import { backend, testUnless } from './helpers.ts';

const native = nativeExtensions(path.resolve('native'));
const bindingDir = path.join(path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-node/package.json')), 'binding');

test('native/ holds one patch and the entry points its sources register', () => {
  assert.equal(native.patches.map((p) => path.basename(p)), ['tfjs-node.patch']);
  for (const name of ['mixedMatMul', 'mixedCacheSize', 'geluExact', 'geluExactGrad', 'layerNorm', 'layerNormGrad', 'adamw', 'dropout', 'collectiveServer', 'collective', 'collectivePeerHealth', 'collectiveAbort']) {
    assert.ok(native.exports.includes(name), name);
  }
});

test('the patch applies to the installed tfjs-node binding: accessors, the context hook before the devices are listed, the listener calls, the exports hook', () => {
  const files = parseUnifiedDiff(readFileSync(native.patches[0], 'utf8'));
  assert.equal([...files.keys()].sort(), ['binding/tfjs_backend.cc', 'binding/tfjs_backend.h', 'binding/tfjs_binding.cc']);
  const patched = Object.fromEntries([...files].map(([file, hunks]) => [file, applyHunks(readFileSync(path.join(bindingDir, path.basename(file)), 'utf8'), hunks, file)]));
  assert.match(patched['binding/tfjs_backend.h'], /TFE_TensorHandle \*Handle\(int32_t tensor_id\) const/);
  assert.match(patched['binding/tfjs_backend.cc'], /tevatron::TensorDeleted\(this, tensor_id\);\n  TFE_TensorHandle \*tensor_handle = tensor_entry->second;/);
  assert.match(patched['binding/tfjs_backend.cc'], /TFJSBackend::~TFJSBackend\(\) \{\n  tevatron::BackendDestroyed\(this\);/);
  // TFE_EnableCollectiveOps changes the device names: the hook runs before the constructor records them
  assert.match(patched['binding/tfjs_backend.cc'], /TFE_DeleteContextOptions\(tfe_options\);\n  tevatron::ContextCreated\(tfe_context_\);.*\n\n  TF_DeviceList \*device_list =\n      TFE_ContextListDevices\(tfe_context_/);
  assert.match(patched['binding/tfjs_binding.cc'], /tevatron::DefineExports\(env, exports\);\n  return exports;/);
});

test('a hunk whose context is not in the source is an error naming it; a moved one still applies', () => {
  const [, hunks] = [...parseUnifiedDiff(readFileSync(native.patches[0], 'utf8'))].find(([f]) => f === 'binding/tfjs_binding.cc')!;
  const source = readFileSync(path.join(bindingDir, 'tfjs_binding.cc'), 'utf8');
  assert.throws(() => applyHunks(source.replace('#undef EXPORT_INT_PROPERTY', '#undef EXPORT_PROPERTY'), hunks, 'binding/tfjs_binding.cc'), /^hunk 2 of binding\/tfjs_binding\.cc \(line \d+\) does not match$/);
  const moved = applyHunks(`// one line more\n${source}`, hunks, 'binding/tfjs_binding.cc');
  assert.match(moved, /tevatron::DefineExports\(env, exports\);/);
});

testUnless(backend === 'tensorflow' ? null : `the ${backend} backend has no binding`, 'the running binding was built from these sources: it exports every TEVATRON_EXPORT', () => {
  const exported = (runningBinding() as { tevatronExports?: string[] }).tevatronExports ?? [];
  assert.equal([...exported].sort(), [...native.exports].sort(), 'rebuild with `npm run setup:tensorflow`');
});

test.run();
