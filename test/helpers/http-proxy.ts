import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the proxy received, as the client sent it. */
export interface ProxiedRequest {
  method: string;
  /** The path, decoded, without the query: `bucket/prefix/data/ab/…`, `devstoreaccount1/container/…`. */
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  /** The status answered, once the answer was sent. */
  status?: number;
}

/** An answer the proxy gives itself instead of forwarding a request. */
export interface ProxyAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export interface HttpProxy {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly host: string;
  readonly port: number;
  /** Every request received, in order of arrival. */
  readonly requests: ProxiedRequest[];
  /**
   * From now on, requests for which `rule` returns an answer get that answer and never reach the
   * target; `rule` may return headers to add to the target's answer instead. `undefined` clears it.
   */
  setRule(rule: ProxyRule | undefined): void;
  close(): Promise<void>;
}

export type ProxyRule = (
  request: ProxiedRequest,
) => { answer: ProxyAnswer } | { addHeaders: Record<string, string> } | undefined;

/**
 * An HTTP proxy on 127.0.0.1 (a free port) in front of `target` that records every request and can
 * answer some itself or add headers to the target's answers: for tests of what a backend sends and
 * of how it takes answers a local server never gives (the fault proxy works below HTTP, on bytes).
 */
export function startHttpProxy(target: { host: string; port: number }): Promise<HttpProxy> {
  const requests: ProxiedRequest[] = [];
  let rule: ProxyRule | undefined;
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const recorded: ProxiedRequest = {
      method: request.method ?? '',
      path: decodeURIComponent(url.pathname.slice(1)),
      query: url.searchParams,
      headers: { ...request.headers },
    };
    requests.push(recorded);
    response.once('finish', () => (recorded.status = response.statusCode));
    const action = rule?.(recorded);
    if (action && 'answer' in action) {
      request.resume();
      const { status, headers = {}, body = '' } = action.answer;
      response.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(body) });
      response.end(recorded.method === 'HEAD' ? undefined : body);
      return;
    }
    const upstream = http.request(
      {
        host: target.host,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
        agent,
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, {
          ...answer.headers,
          ...(action && 'addHeaders' in action ? action.addHeaders : {}),
        });
        answer.pipe(response);
      },
    );
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        endpoint: `http://127.0.0.1:${port}`,
        host: '127.0.0.1',
        port,
        requests,
        setRule(next) {
          rule = next;
        },
        async close() {
          server.closeAllConnections();
          agent.destroy();
          await new Promise<void>((done) => server.close(() => done()));
        },
      });
    });
  });
}
