// The per-job secret that every connection of a multi-process run proves it knows, and the HMAC
// challenge-response that proves it in both directions without sending it: each side answers the
// other's fresh random nonce, so a recorded answer is worth nothing on the next connection. A job id
// derived from the secret tells a rank of another job (a MASTER_PORT clash) from an intruder.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The environment variable that carries the secret to every rank (scripts/launch.ts sets it). */
export const SECRET_VAR = 'TEVATRON_JOB_SECRET';
const MIN_SECRET_LENGTH = 16;
export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;
export const JOB_ID_BYTES = 8;

type Env = Record<string, string | undefined>;

/** 32 random bytes as hex: what scripts/launch.ts hands to its workers. */
export function newJobSecret(): string {
  return randomBytes(32).toString('hex');
}

/** The secret of a multi-process run, from the environment; a one-line error says how to set it. */
export function jobSecret(env: Env = process.env): string {
  const s = env[SECRET_VAR];
  const fix = `scripts/launch.ts sets it for its workers; with torchrun, SLURM or mpirun export the same value on every rank, e.g. export ${SECRET_VAR}=$(openssl rand -hex 32)`;
  if (s === undefined || s === '') throw new Error(`${SECRET_VAR} is not set: the ranks of a multi-process run prove with it that they belong to the job; ${fix}`);
  if (s.length < MIN_SECRET_LENGTH) throw new Error(`${SECRET_VAR} has ${s.length} characters, fewer than ${MIN_SECRET_LENGTH}: use a long random value; ${fix}`);
  return s;
}

const mac = (secret: string, ...parts: (string | Uint8Array)[]) => {
  const h = createHmac('sha256', secret);
  for (const p of parts) h.update(p);
  return h.digest();
};

/** A public name of the job: equal on every rank of one job, different between jobs. */
export const jobId = (secret: string): Buffer => mac(secret, 'tevatron-ts job id').subarray(0, JOB_ID_BYTES);

export const newNonce = (): Buffer => randomBytes(NONCE_BYTES);

/**
 * The answer of one side to the other's challenge. The role is part of the MAC, so a server's answer
 * can never be reflected back as a client's.
 */
export function proof(secret: string, role: 'client' | 'server', id: Uint8Array, serverNonce: Uint8Array, clientNonce: Uint8Array): Buffer {
  return mac(secret, `tevatron-ts ${role} proof`, id, serverNonce, clientNonce);
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(got: Uint8Array, expected: Uint8Array): boolean {
  return got.length === expected.length && timingSafeEqual(got, expected);
}
