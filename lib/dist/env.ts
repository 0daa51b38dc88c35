// Where this process sits in a multi-process run, read from the launcher's environment: ours and
// torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; torch.distributed.launch's
// --local_rank flag), SLURM's and OpenMPI's. The job's secret is read where it is used (auth.ts). Under
// torchrun, whose agent holds MASTER_PORT for its own store, the rendezvous listens on MASTER_PORT + 1.

export interface RankInfo {
  rank: number;
  worldSize: number;
  localRank: number;
  masterAddr: string;
  masterPort: number;
  /** Which launcher's variables were read. */
  source: 'torchrun' | 'slurm' | 'openmpi' | 'none';
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string): number {
  const v = Number(env[name]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`environment variable ${name}=${env[name]} is not a non-negative integer`);
  return v;
}

/**
 * Rank and world from the environment; a plain process is rank 0 of 1. `localRankFlag` is --local_rank
 * (-1: not given), which python -m torch.distributed.launch passes on the command line: it must agree
 * with LOCAL_RANK when that is set too.
 */
export function rankFromEnv(env: Env = process.env, localRankFlag = -1): RankInfo {
  if (localRankFlag >= 0 && env.LOCAL_RANK !== undefined && int(env, 'LOCAL_RANK') !== localRankFlag) {
    throw new Error(`--local_rank ${localRankFlag} disagrees with LOCAL_RANK=${env.LOCAL_RANK} in the environment: drop the flag or make them equal`);
  }
  const master = () => {
    const masterAddr = env.MASTER_ADDR ?? env.SLURM_LAUNCH_NODE_IPADDR ?? '127.0.0.1';
    const masterPort = env.MASTER_PORT === undefined ? 29500 : int(env, 'MASTER_PORT');
    // torchrun's agent serves its own store on MASTER_PORT: the rendezvous takes the port after it
    return { masterAddr, masterPort: env.TORCHELASTIC_USE_AGENT_STORE === 'True' ? masterPort + 1 : masterPort };
  };
  let info: RankInfo;
  if (env.WORLD_SIZE !== undefined && env.RANK !== undefined) {
    const localRank = env.LOCAL_RANK !== undefined ? int(env, 'LOCAL_RANK') : Math.max(0, localRankFlag);
    info = { rank: int(env, 'RANK'), worldSize: int(env, 'WORLD_SIZE'), localRank, ...master(), source: 'torchrun' };
  } else if (env.SLURM_PROCID !== undefined && env.SLURM_NTASKS !== undefined) {
    info = { rank: int(env, 'SLURM_PROCID'), worldSize: int(env, 'SLURM_NTASKS'), localRank: env.SLURM_LOCALID === undefined ? 0 : int(env, 'SLURM_LOCALID'), ...master(), source: 'slurm' };
  } else if (env.OMPI_COMM_WORLD_RANK !== undefined && env.OMPI_COMM_WORLD_SIZE !== undefined) {
    info = {
      rank: int(env, 'OMPI_COMM_WORLD_RANK'),
      worldSize: int(env, 'OMPI_COMM_WORLD_SIZE'),
      localRank: env.OMPI_COMM_WORLD_LOCAL_RANK === undefined ? 0 : int(env, 'OMPI_COMM_WORLD_LOCAL_RANK'),
      ...master(),
      source: 'openmpi',
    };
  } else {
    return { rank: 0, worldSize: 1, localRank: 0, ...master(), source: 'none' };
  }
  if (info.worldSize < 1 || info.rank >= info.worldSize) throw new Error(`rank ${info.rank} is outside a world of ${info.worldSize} processes (${info.source} environment)`);
  return info;
}
