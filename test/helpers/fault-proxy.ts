import { STATUS_CODES } from 'node:http';
import net from 'node:net';

/**
 * Faults a {@link FaultProxy} injects into the connections it accepts. Probabilities are drawn per
 * connection, from a generator seeded by `startFaultProxy`'s `seed`, in a fixed order (reset, stall,
 * HTTP error, cut): a connection gets at most one of these, plus the delay.
 */
export interface Faults {
  /** Probability (0..1) that a new connection is reset (RST) at once, before anything is forwarded. */
  resetOnConnect?: number;
  /** Probability that a connection is reset after a random number of bytes (see `cutDirection`). */
  cutMidTransfer?: number;
  /** Which bytes count towards a cut: `both` (the default) cuts whichever direction crosses the mark. */
  cutDirection?: 'both' | 'upstream' | 'downstream';
  /** The cut happens after 1..cutAfterMaxBytes bytes (uniform); default 65536. */
  cutAfterMaxBytes?: number;
  /** The cut happens after exactly this many bytes, instead of a drawn number. */
  cutAtByte?: number;
  /**
   * What a cut does: `reset` (the default) resets both sides; `silence` forwards nothing more in
   * either direction and keeps both connections open, as a hung server or a dead route does.
   */
  cutAs?: 'reset' | 'silence';
  /** Delay added before forwarding each piece of data, in either direction; order is kept. */
  delayMs?: number;
  /** Probability that a connection is accepted but nothing is ever forwarded (the client must time out). */
  stall?: number;
  /** With `httpError` > 0: answer the connection's first HTTP request with this status and close. */
  httpErrorStatus?: number;
  /** Probability of the above. */
  httpError?: number;
  /**
   * Inject faults only into the first N connections accepted after `setFaults` (or after the start),
   * which makes tests deterministic; default: all.
   */
  firstConnections?: number;
}

export type FaultKind = 'reset' | 'cut' | 'silence' | 'delay' | 'stall' | 'httpError';

export interface FaultProxyStats {
  /** Connections accepted since the start. */
  connections: number;
  /** Faults that really happened: a cut counts once the mark is crossed, a delay once per connection. */
  faultsInjected: number;
  byKind: Record<FaultKind, number>;
  /** Bytes forwarded, both directions and every connection together. */
  bytesForwarded: number;
}

export interface FaultProxy {
  readonly host: string;
  readonly port: number;
  /** Applies to connections accepted from now on. */
  setFaults(faults: Faults): void;
  readonly stats: FaultProxyStats;
  /** Stops accepting and destroys every open connection. */
  close(): Promise<void>;
}

/** mulberry32: small, fast and good enough to make fault patterns repeatable from a seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  // RST where the socket still has a handle (what a broken network looks like), plain destroy otherwise.
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

const HEADERS_END = Buffer.from('\r\n\r\n');
const MAX_HEADER_BYTES = 64 * 1024;

/**
 * A TCP proxy on 127.0.0.1 (a free port) in front of `target` that injects network faults, for tests
 * of retries and recovery against real servers.
 */
export function startFaultProxy(
  target: { host: string; port: number },
  faults: Faults = {},
  seed = 0x5eed,
): Promise<FaultProxy> {
  const random = seededRandom(seed);
  let current: Faults = { ...faults };
  let connectionsSinceSetFaults = 0;
  const stats: FaultProxyStats = {
    connections: 0,
    faultsInjected: 0,
    byKind: { reset: 0, cut: 0, silence: 0, delay: 0, stall: 0, httpError: 0 },
    bytesForwarded: 0,
  };
  const open = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let closing = false;

  const track = (socket: net.Socket): void => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
  };
  const count = (kind: FaultKind): void => {
    stats.faultsInjected += 1;
    stats.byKind[kind] += 1;
  };
  const chance = (probability: number | undefined): boolean =>
    probability !== undefined && probability > 0 && random() < probability;

  const answerHttpError = (client: net.Socket, status: number): void => {
    let head = Buffer.alloc(0);
    let answered = false;
    client.on('data', (data: Buffer) => {
      if (answered) return; // the rest of a request body: read and dropped so the client is not blocked
      head = Buffer.concat([head, data]);
      if (head.indexOf(HEADERS_END) === -1 && head.length < MAX_HEADER_BYTES) return;
      answered = true;
      count('httpError');
      const reason = STATUS_CODES[status] ?? 'Error';
      const body = `${status} ${reason} (injected by the fault proxy)\n`;
      client.end(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `Connection: close\r\n\r\n${body}`,
      );
    });
  };

  const forward = (client: net.Socket, faults: Faults, cut: boolean): void => {
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    track(upstream);
    const cutDirection = faults.cutDirection ?? 'both';
    let bytesUntilCut = !cut
      ? Infinity
      : (faults.cutAtByte ?? 1 + Math.floor(random() * (faults.cutAfterMaxBytes ?? 65536)));
    const delayMs = faults.delayMs ?? 0;
    let delayCounted = false;
    // Set when the mark is crossed: nothing more is forwarded, not even an end.
    let cutStarted = false;

    const cutNow = (): void => {
      if (faults.cutAs === 'silence') {
        count('silence');
        // Nothing more is forwarded; both connections go when the client gives up (an end comes
        // alone: the server socket allows half-open connections).
        const giveUp = () => {
          client.destroy();
          upstream.destroy();
        };
        if (client.readableEnded || client.destroyed) giveUp();
        client.once('end', giveUp);
        client.once('close', giveUp);
        return;
      }
      count('cut');
      reset(client);
      reset(upstream);
    };

    const pump = (from: net.Socket, to: net.Socket, direction: 'upstream' | 'downstream'): void => {
      // One chain per direction keeps the order of delayed pieces.
      let chain = Promise.resolve();
      const send = (data: Buffer): Promise<void> =>
        new Promise((resolve) => {
          if (to.destroyed || cutStarted) return resolve();
          const counts = cutDirection === 'both' || cutDirection === direction;
          if (counts && data.length >= bytesUntilCut) {
            const part = data.subarray(0, bytesUntilCut);
            cutStarted = true;
            stats.bytesForwarded += part.length;
            if (part.length === 0) cutNow();
            else to.write(part, () => cutNow());
            return resolve();
          }
          if (counts) bytesUntilCut -= data.length;
          stats.bytesForwarded += data.length;
          if (to.write(data)) resolve();
          else {
            from.pause();
            to.once('drain', () => {
              from.resume();
              resolve();
            });
            to.once('close', resolve);
          }
        });
      from.on('data', (data: Buffer) => {
        if (delayMs <= 0) {
          chain = chain.then(() => send(data));
          return;
        }
        if (!delayCounted) {
          delayCounted = true;
          count('delay');
        }
        chain = chain.then(
          () =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                timers.delete(timer);
                resolve();
              }, delayMs);
              timers.add(timer);
            }),
        );
        chain = chain.then(() => send(data));
      });
      from.on('end', () => {
        chain = chain.then(() => {
          if (!to.destroyed && !cutStarted) to.end();
        });
      });
    };

    // Nothing is read from the client until the target accepted: its bytes wait in the kernel.
    upstream.on('connect', () => {
      pump(client, upstream, 'upstream');
      pump(upstream, client, 'downstream');
    });
    // An abrupt close on one side (a reset, or a failed connect) is passed on as a reset of the other.
    client.on('error', () => reset(upstream));
    upstream.on('error', () => reset(client));
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    track(client);
    client.on('error', () => undefined);
    if (closing) return reset(client);
    stats.connections += 1;
    connectionsSinceSetFaults += 1;
    const faults = current;
    const eligible =
      faults.firstConnections === undefined || connectionsSinceSetFaults <= faults.firstConnections;
    const active: Faults = eligible ? faults : {};

    if (chance(active.resetOnConnect)) {
      count('reset');
      return reset(client);
    }
    if (chance(active.stall)) {
      count('stall');
      return; // accepted, never read, never answered
    }
    if (active.httpErrorStatus !== undefined && chance(active.httpError)) {
      return answerHttpError(client, active.httpErrorStatus);
    }
    forward(client, active, chance(active.cutMidTransfer));
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address() as net.AddressInfo;
      resolve({
        host: '127.0.0.1',
        port: address.port,
        stats,
        setFaults(next: Faults) {
          current = { ...next };
          connectionsSinceSetFaults = 0;
        },
        close() {
          closing = true;
          for (const timer of timers) clearTimeout(timer);
          timers.clear();
          const closed = new Promise<void>((done) => server.close(() => done()));
          for (const socket of open) socket.destroy();
          return closed;
        },
      });
    });
  });
}
