// `npx tsx scripts/launch.ts --nproc_per_node N [--nnodes M --node_rank R --master_addr A --master_port P] SCRIPT ARGS...`
// torchrun's launcher for tevatron-ts: one worker process per device, all sharing a new random job
// secret (TEVATRON_JOB_SECRET, unless set: a job on several nodes sets the same value on each).
import { launchWorkers } from '../lib/dist/launch.ts';

const USAGE = 'usage: npx tsx scripts/launch.ts --nproc_per_node N [--nnodes 1] [--node_rank 0] [--master_addr 127.0.0.1] [--master_port 29500] SCRIPT [ARGS...]';
const opts: Record<string, string> = { nproc_per_node: '1', nnodes: '1', node_rank: '0', master_addr: '127.0.0.1', master_port: '29500' };
const argv = process.argv.slice(2);
let i = 0;
try {
  for (; i < argv.length && argv[i].startsWith('--'); i++) {
    if (argv[i] === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    const [flag, inline] = argv[i].slice(2).replace(/-/g, '_').split('=');
    if (!(flag in opts)) throw new Error(`unknown launcher flag --${flag}\n${USAGE}`);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new Error(`--${flag} needs a value`);
    opts[flag] = value;
  }
  const [script, ...args] = argv.slice(i);
  if (!script) throw new Error(`no worker script given\n${USAGE}`);
  const num = (name: string, min: number) => {
    const v = Number(opts[name]);
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${opts[name]}`);
    return v;
  };
  const nnodes = num('nnodes', 1);
  const nodeRank = num('node_rank', 0);
  if (nodeRank >= nnodes) throw new Error(`--node_rank ${nodeRank} must be below --nnodes ${nnodes}`);
  const result = await launchWorkers({
    nprocPerNode: num('nproc_per_node', 1),
    nnodes,
    nodeRank,
    masterAddr: opts.master_addr,
    masterPort: num('master_port', 1),
    script,
    args,
  });
  if (result.stoppedBy) console.error(`launch: stopped by ${result.stoppedBy}; the workers were stopped`);
  else if (result.failure) {
    const f = result.failure;
    const how = f.signal ? `was killed by ${f.signal}` : `exited with code ${f.code}`;
    console.error(`launch: rank ${f.rank} ${how}${f.lastError ? `: ${f.lastError}` : ''}; the other workers were stopped`);
  }
  process.exit(result.code);
} catch (e) {
  console.error(`launch: ${(e as Error).message}`);
  process.exit(2);
}
