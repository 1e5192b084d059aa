#!/usr/bin/env node
/**
 * Container health check: send one SIP OPTIONS over UDP and expect a
 * `SIP/2.0 200` answer with the same Call-ID within the time limit.
 *
 *   node dist/src/cli/healthcheck.js [HOST [PORT]]     (defaults 127.0.0.1 5060)
 *
 * Exit status 0 when healthy, 1 otherwise (the reason on stderr).
 * The request is retransmitted 500 ms and 1.5 s after the first send, as RFC 3261's timer E would.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { pathToFileURL } from 'node:url';

export interface PingOptions {
  host?: string;
  port?: number;
  timeoutMs?: number;
}

export interface PingResult {
  ok: boolean;
  /** The status line received, or why there is none. */
  detail: string;
}

function token(): string {
  return randomBytes(8).toString('hex');
}

/** The OPTIONS request sent by the health check (exported for tests). */
export function optionsRequest(host: string, port: number, localHost: string, localPort: number, callId: string): string {
  const h = isIPv6(host) ? `[${host}]` : host;
  const lh = isIPv6(localHost) ? `[${localHost}]` : localHost;
  return [
    `OPTIONS sip:${h}:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP ${lh}:${localPort};branch=z9hG4bK${token()};rport`,
    'Max-Forwards: 70',
    `To: <sip:${h}:${port}>`,
    `From: <sip:healthcheck@${lh}>;tag=${token()}`,
    `Call-ID: ${callId}`,
    'CSeq: 1 OPTIONS',
    'User-Agent: portier-healthcheck',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
}

export function sipPing(opts: PingOptions = {}): Promise<PingResult> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 5060;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const callId = `${token()}@portier-healthcheck`;
  const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  return new Promise<PingResult>((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    const done = (result: PingResult) => {
      timers.forEach(clearTimeout);
      socket.close();
      resolve(result);
    };
    socket.on('error', (err) => done({ ok: false, detail: err.message }));
    socket.on('message', (msg) => {
      const text = msg.toString('latin1');
      const status = text.split('\r\n')[0];
      if (!text.includes(callId)) return; // not an answer to our request
      if (/^SIP\/2\.0 1\d\d /.test(status)) return; // provisional: keep waiting
      done({ ok: /^SIP\/2\.0 200( |$)/.test(status), detail: status });
    });
    socket.bind(0, isIPv6(host) ? '::' : '0.0.0.0', () => {
      const local = socket.address();
      const request = Buffer.from(optionsRequest(host, port, isIPv6(host) ? '::1' : '127.0.0.1', local.port, callId), 'latin1');
      const send = () => socket.send(request, port, host);
      send();
      timers.push(setTimeout(send, 500), setTimeout(send, 1500));
      timers.push(setTimeout(() => done({ ok: false, detail: `no answer from ${host}:${port} within ${timeoutMs} ms` }), timeoutMs));
    });
  });
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const [host, port] = process.argv.slice(2);
  sipPing({ host, port: port === undefined ? undefined : Number(port) }).then((r) => {
    if (!r.ok) process.stderr.write(`unhealthy: ${r.detail}\n`);
    process.exit(r.ok ? 0 : 1);
  });
}
