// What every script shares: parse flags (or print --help), and run a main function so that a user's
// mistake ends the process with one line on stderr and a non-zero exit code, never a stack trace.
import { helpText, parseArgs, type Args, type Script } from './args.ts';
import { errorText } from './errors.ts';

/** Parses process.argv for `script`; prints --help and exits 0 when asked. */
export function scriptArgs(script: Script, argv = process.argv.slice(2)): Args {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText(script));
    process.exit(0);
  }
  return parseArgs(argv, script);
}

/** Runs `main`; an Error becomes `script: message` on stderr and exit code 1 (TEVATRON_DEBUG=1 shows the stack). */
export async function runScript(script: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    console.error(`${script}: ${process.env.TEVATRON_DEBUG ? (e as Error).stack : errorText(e)}`);
    process.exit(1);
  }
}

/** Paths matching a pattern with * and ? wildcards in its last segment (Node 20 has no fs.glob). */
export async function expandGlob(pattern: string): Promise<string[]> {
  const { readdirSync } = await import('node:fs');
  const path = await import('node:path');
  if (!/[*?]/.test(pattern)) return [pattern];
  const dir = path.dirname(pattern);
  if (/[*?]/.test(dir)) throw new Error(`${pattern}: wildcards are supported in the file name only`);
  const re = new RegExp(`^${path.basename(pattern).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    throw new Error(`${pattern}: directory ${dir} does not exist`);
  }
  return names.filter((n) => re.test(n)).sort().map((n) => path.join(dir, n));
}
