// Watches the other ranks of a process group for signs of life. A transport calls `heard(rank)` whenever
// bytes arrive from a rank and gets a tick to send its own heartbeats; a rank silent for longer than the
// group's timeout (--ddp_timeout) is reported once, by rank. Any transport can use it: it knows nothing of
// sockets or frames.

export interface PeerWatchdog {
  heard(rank: number): void;
  /** Stop watching a rank that left the group in order. */
  forget(rank: number): void;
  /** Milliseconds since anything arrived from `rank`. */
  silentMs(rank: number): number;
  stop(): void;
}

export interface WatchOptions {
  ranks: number[];
  timeoutMs: number;
  /** Called every period (send heartbeats here); the period is a tenth of the timeout, 50 ms to 5 s. */
  onTick(): void;
  onSilent(rank: number, silentMs: number): void;
}

export const heartbeatPeriodMs = (timeoutMs: number): number => Math.min(5000, Math.max(50, timeoutMs / 10));

export function watchPeers(o: WatchOptions): PeerWatchdog {
  const last = new Map(o.ranks.map((r) => [r, Date.now()]));
  let stopped = false;
  const silentOnes = () => [...last].filter(([, t]) => Date.now() - t > o.timeoutMs).sort((a, b) => a[1] - b[1]);
  const timer = setInterval(() => {
    o.onTick();
    if (!silentOnes().length) return;
    // Our own event loop may have been blocked (a long synchronous kernel): timers run before pending
    // socket reads, so look again once the poll phase has read what the peers sent in the meantime.
    setImmediate(() => {
      const [worst] = silentOnes();
      if (stopped || !worst) return;
      dog.stop();
      o.onSilent(worst[0], Date.now() - worst[1]);
    });
  }, heartbeatPeriodMs(o.timeoutMs));
  timer.unref();
  const dog: PeerWatchdog = {
    heard: (rank) => {
      if (last.has(rank)) last.set(rank, Date.now());
    },
    forget: (rank) => void last.delete(rank),
    silentMs: (rank) => Date.now() - (last.get(rank) ?? Date.now()),
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
  return dog;
}
