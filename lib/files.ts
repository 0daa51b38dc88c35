// Writing files: every byte written or one error naming the file, and text outputs staged under a temporary
// name until they are complete, so a failure never leaves a half-written file under the name asked for.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Writes all of `bytes` (at `position`, or where the file is); a failure names the file and the likely cause. */
export function writeAll(fd: number, bytes: ArrayBufferView, position: number | null, path: string): void {
  const b = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    for (let at = 0; at < b.byteLength; ) at += writeSync(fd, b, at, b.byteLength - at, position === null ? null : position + at);
  } catch (e) {
    throw new Error(`${path}: cannot write (${(e as Error).message}); check the free space on its disk`);
  }
}

export interface StagedTextFile {
  /** Appends text (buffered: written 4 MB at a time). */
  write(text: string): void;
  /** Writes the rest and renames the file into place. */
  close(): void;
  /** Deletes what was written. */
  abort(): void;
}

/** PATH written under PATH.tmp-PID, renamed into place by close(); `flag` (the option that named PATH) heads the error when it cannot be created. */
export function stagedTextFile(path: string, flag: string): StagedTextFile {
  const tmp = `${path}.tmp-${process.pid}`;
  let fd: number | null;
  try {
    fd = openSync(tmp, 'w');
  } catch (e) {
    throw new Error(`${flag} ${path}: cannot write (${(e as Error).message}); check that its directory exists and is writable`);
  }
  let parts: string[] = [];
  let size = 0;
  const flush = () => {
    writeAll(fd!, Buffer.from(parts.join('')), null, path);
    [parts, size] = [[], 0];
  };
  const closeFd = () => {
    if (fd !== null) closeSync(fd);
    fd = null;
  };
  return {
    write(text) {
      parts.push(text);
      if ((size += text.length) > 1 << 22) flush();
    },
    close() {
      flush();
      closeFd();
      renameSync(tmp, path);
    },
    abort() {
      closeFd();
      rmSync(tmp, { force: true });
    },
  };
}

/** Writes a whole (small) file under a temporary name, then renames it into place; its directory is made if absent. */
export async function writeAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
