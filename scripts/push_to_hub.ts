// Uploads a training run's output directory to the hub, as `scripts/train.ts --push_to_hub` does at the end of
// training: for a run trained without it, or whose push failed (network, token):
//   npx tsx scripts/push_to_hub.ts --output_dir out --hub_model_id org/name [--hub_token hf_... | HF_TOKEN] [--hub_private_repo]
import { existsSync, statSync } from 'node:fs';
import { runScript, scriptArgs } from '../lib/cli.ts';
import { hubFiles, preparePush, pushFiles } from '../lib/model/upload.ts';

await runScript('push_to_hub', async () => {
  const a = scriptArgs('push_to_hub');
  const dir = a.output_dir as string;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`--output_dir ${dir}: no such directory; pass the output_dir of a training run`);
  const files = hubFiles(dir);
  if (!files.size) throw new Error(`--output_dir ${dir}: nothing to upload (checkpoints, hidden and temporary files are left out)`);
  const target = await preparePush({ hubModelId: a.hub_model_id as string | null, outputDir: dir, token: a.hub_token as string | null, private: a.hub_private_repo as boolean | null });
  const commit = await pushFiles(target, files, 'End of training');
  console.log(`pushed ${files.size} files from ${dir} to ${commit.url}`);
});
