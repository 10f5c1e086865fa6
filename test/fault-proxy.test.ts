import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy, type Faults } from './helpers/fault-proxy.ts';

interface TcpServer {
  port: number;
  connections: number;
  /** Connections not closed yet. */
  open: number;
  /** Bytes the server read, over all connections. */
  received: number;
  close(): Promise<void>;
}

/** A loopback TCP server whose connections are handled by `handle` (echo by default). */
async function startTcpServer(handle: (socket: net.Socket) => void = (s) => s.pipe(s)): Promise<TcpServer> {
  const sockets = new Set<net.Socket>();
  const state = { port: 0, connections: 0, open: 0, received: 0 };
  const server = net.createServer((socket) => {
    state.connections += 1;
    state.open += 1;
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      state.open -= 1;
    });
    socket.on('error', () => undefined);
    socket.on('data', (data: Buffer) => (state.received += data.length));
    handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as net.AddressInfo).port;
  return Object.assign(state, {
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  });
}

interface Exchange {
  received: Buffer;
  error: NodeJS.ErrnoException | undefined;
}

/**
 * Connects through the proxy, sends `payload` (then ends, unless `payload` is undefined: Node reports
 * no error for a reset that arrives after its own end), and collects what comes back until the close.
 */
function exchange(proxy: FaultProxy, payload: Buffer | undefined): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect(proxy.port, proxy.host);
    const chunks: Buffer[] = [];
    let error: NodeJS.ErrnoException | undefined;
    socket.on('data', (data: Buffer) => chunks.push(data));
    socket.on('error', (err) => (error = err));
    socket.on('close', () => resolve({ received: Buffer.concat(chunks), error }));
    if (payload) socket.end(payload);
  });
}

/** One round trip straight to `port`, so everything the proxy wrote before it has surely been read. */
async function roundTrip(server: TcpServer): Promise<void> {
  const socket = net.connect(server.port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('data', () => resolve()).write('x'));
  socket.destroy();
  // The probe is not part of what the test counts.
  server.received -= 1;
  server.connections -= 1;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function echoBehindProxy(faults?: Faults, seed?: number) {
  const echo = await startTcpServer();
  cleanups.push(echo.close);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: echo.port }, faults, seed);
  cleanups.push(proxy.close);
  return { echo, proxy };
}

describe('fault proxy over TCP', () => {
  it('forwards both directions unchanged without faults', async () => {
    const { echo, proxy } = await echoBehindProxy();
    const payload = randomBytes(512 * 1024);
    const result = await exchange(proxy, payload);
    expect(result.error).toBeUndefined();
    expect(result.received.equals(payload)).toBe(true);
    expect(echo.received).toBe(payload.length);
    expect(proxy.stats).toMatchObject({ connections: 1, faultsInjected: 0 });
  });

  it('resets a connection on connect, before the target sees it', async () => {
    const { echo, proxy } = await echoBehindProxy({ resetOnConnect: 1 });
    const result = await exchange(proxy, Buffer.from('hello'));
    expect(result.received.length).toBe(0);
    expect(result.error?.code).toMatch(/ECONNRESET|EPIPE/);
    expect(echo.connections).toBe(0);
    expect(proxy.stats.byKind.reset).toBe(1);
    expect(proxy.stats.faultsInjected).toBe(1);
  });

  it('cuts an upload mid-transfer', async () => {
    const sink = await startTcpServer(() => undefined);
    cleanups.push(sink.close);
    const proxy = await startFaultProxy(
      { host: '127.0.0.1', port: sink.port },
      { cutMidTransfer: 1, cutDirection: 'upstream', cutAfterMaxBytes: 100_000 },
    );
    cleanups.push(proxy.close);
    const payload = randomBytes(1024 * 1024);
    const result = await exchange(proxy, payload);
    expect(result.error?.code).toMatch(/ECONNRESET|EPIPE/);
    await until(() => sink.connections === 1 && proxy.stats.byKind.cut === 1);
    expect(sink.received).toBeLessThanOrEqual(100_000);
    expect(proxy.stats.faultsInjected).toBe(1);
  });

  it('cuts a download mid-transfer', async () => {
    const payload = randomBytes(1024 * 1024);
    const source = await startTcpServer((socket) => socket.end(payload));
    cleanups.push(source.close);
    const proxy = await startFaultProxy(
      { host: '127.0.0.1', port: source.port },
      { cutMidTransfer: 1, cutDirection: 'downstream', cutAfterMaxBytes: 100_000 },
    );
    cleanups.push(proxy.close);
    const result = await exchange(proxy, undefined);
    // A reset that follows data already read may surface as a plain end: the short read is the proof.
    expect(result.received.length).toBeLessThanOrEqual(100_000);
    expect(proxy.stats.byKind.cut).toBe(1);
  });

  it('cuts in either direction by default, wherever the mark falls', async () => {
    const { proxy } = await echoBehindProxy({ cutMidTransfer: 1, cutAfterMaxBytes: 10_000 });
    const payload = randomBytes(256 * 1024);
    const result = await exchange(proxy, payload);
    expect(result.received.length).toBeLessThan(payload.length);
    expect(proxy.stats.byKind.cut).toBe(1);
  });

  it('falls silent after exactly the bytes asked: both sides stay open, nothing more crosses', async () => {
    const { echo, proxy } = await echoBehindProxy({ cutMidTransfer: 1, cutAtByte: 10, cutAs: 'silence' });
    const socket = net.connect(proxy.port, proxy.host);
    const chunks: Buffer[] = [];
    socket.on('data', (data: Buffer) => chunks.push(data));
    socket.on('error', () => undefined);
    let closed = false;
    socket.on('close', () => (closed = true));
    socket.write('0123456789abcdef');
    await until(() => proxy.stats.byKind.silence === 1 && echo.received === 10);
    socket.write('more');
    await roundTrip(echo);
    await until(() => echo.open <= 1); // the probe's connection gone
    expect(echo.received).toBe(10);
    expect(echo.open).toBe(1);
    expect(Buffer.concat(chunks).length).toBe(0);
    expect(closed).toBe(false);
    expect(proxy.stats.bytesForwarded).toBe(10);
    // The client giving up takes the target's connection with it.
    socket.destroy();
    await until(() => echo.open === 0);
    expect(proxy.stats.byKind.cut).toBe(0);
  });

  it('holds data back for the delay, then forwards it in order', async () => {
    const held = await echoBehindProxy({ delayMs: 3_600_000 });
    const socket = net.connect(held.proxy.port, held.proxy.host);
    socket.on('error', () => undefined);
    socket.write('never before an hour');
    await until(() => held.proxy.stats.byKind.delay === 1 && held.echo.connections === 1);
    await roundTrip(held.echo);
    expect(held.echo.received).toBe(0);
    socket.destroy();

    const { echo, proxy } = await echoBehindProxy({ delayMs: 5 });
    const payload = randomBytes(256 * 1024);
    const result = await exchange(proxy, payload);
    expect(result.error).toBeUndefined();
    expect(result.received.equals(payload)).toBe(true);
    expect(echo.received).toBe(payload.length);
    expect(proxy.stats.byKind.delay).toBe(1);
  });

  it('stalls a connection: accepted, nothing forwarded, until the proxy closes', async () => {
    const { echo, proxy } = await echoBehindProxy({ stall: 1 });
    const socket = net.connect(proxy.port, proxy.host);
    const chunks: Buffer[] = [];
    socket.on('data', (data: Buffer) => chunks.push(data));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    await new Promise<void>((resolve) => socket.on('connect', resolve));
    socket.write('anyone there?');
    await until(() => proxy.stats.byKind.stall === 1);
    await roundTrip(echo);
    expect(echo.connections).toBe(0);
    expect(chunks.length).toBe(0);
    await proxy.close();
    await closed;
    expect(chunks.length).toBe(0);
  });

  it('applies faults only to the first N connections after setFaults', async () => {
    const { echo, proxy } = await echoBehindProxy();
    expect((await exchange(proxy, Buffer.from('a'))).received.toString()).toBe('a');
    proxy.setFaults({ resetOnConnect: 1, firstConnections: 2 });
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await exchange(proxy, Buffer.from(`try ${i}`)));
    expect(results.map((r) => r.received.toString())).toEqual(['', '', 'try 2', 'try 3']);
    expect(proxy.stats.connections).toBe(5);
    expect(proxy.stats.faultsInjected).toBe(2);
    expect(echo.connections).toBe(3);
  });

  it('draws the same faults from the same seed, and others from another seed', async () => {
    const pattern = async (seed: number): Promise<string> => {
      const { proxy } = await echoBehindProxy({ resetOnConnect: 0.5 }, seed);
      let outcome = '';
      for (let i = 0; i < 24; i++) outcome += (await exchange(proxy, Buffer.from('x'))).received.length;
      return outcome;
    };
    const first = await pattern(7);
    expect(first).toMatch(/0/);
    expect(first).toMatch(/1/);
    expect(await pattern(7)).toBe(first);
    expect(await pattern(8)).not.toBe(first);
  });

  it('close destroys open connections on both sides', async () => {
    const { echo, proxy } = await echoBehindProxy();
    const socket = net.connect(proxy.port, proxy.host);
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('data', () => resolve()).write('ping'));
    expect(echo.connections).toBe(1);
    await proxy.close();
    await closed;
    await until(() => echo.open === 0);
    const retry = await new Promise<NodeJS.ErrnoException>((resolve) =>
      net.connect(proxy.port, proxy.host).on('error', resolve),
    );
    expect(retry.code).toBe('ECONNREFUSED');
  });
});

describe('fault proxy over HTTP', () => {
  async function httpBehindProxy() {
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests += 1;
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as net.AddressInfo).port;
    const proxy = await startFaultProxy({ host: '127.0.0.1', port });
    cleanups.push(proxy.close);
    return { proxy, requests: () => requests };
  }

  function request(proxy: FaultProxy, body?: Buffer): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { host: proxy.host, port: proxy.port, method: body ? 'PUT' : 'GET', path: '/x', agent: false },
        (res) => {
          let text = '';
          res.on('data', (data: Buffer) => (text += data.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  it('answers the first request with the error status itself, then lets later connections through', async () => {
    const { proxy, requests } = await httpBehindProxy();
    proxy.setFaults({ httpError: 1, httpErrorStatus: 503, firstConnections: 1 });
    const failed = await request(proxy);
    expect(failed.status).toBe(503);
    expect(requests()).toBe(0);
    const ok = await request(proxy);
    expect(ok).toEqual({ status: 200, text: 'ok' });
    expect(requests()).toBe(1);
    expect(proxy.stats.byKind.httpError).toBe(1);
  });

  it('answers a request with a body (429) without waiting for the body', async () => {
    const { proxy, requests } = await httpBehindProxy();
    proxy.setFaults({ httpError: 1, httpErrorStatus: 429 });
    const failed = await request(proxy, randomBytes(2 * 1024 * 1024)).catch((err: NodeJS.ErrnoException) => ({
      status: -1,
      text: String(err.code),
    }));
    // The client either reads the 429 or, still sending its body, sees the connection close: both are faults.
    expect([429, -1]).toContain(failed.status);
    expect(requests()).toBe(0);
    expect(proxy.stats.faultsInjected).toBe(1);
  });

  it('passes HTTP through with a delay and with a cut the client notices', async () => {
    const { proxy, requests } = await httpBehindProxy();
    proxy.setFaults({ delayMs: 2 });
    expect(await request(proxy, randomBytes(64 * 1024))).toEqual({ status: 200, text: 'ok' });
    proxy.setFaults({ cutMidTransfer: 1, cutDirection: 'upstream', cutAfterMaxBytes: 1000 });
    await expect(request(proxy, randomBytes(64 * 1024))).rejects.toMatchObject({
      code: expect.stringMatching(/ECONNRESET|EPIPE/),
    });
    expect(requests()).toBe(1);
    expect(proxy.stats.byKind).toMatchObject({ delay: 1, cut: 1 });
  });
});
