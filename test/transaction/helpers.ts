// Shared fixtures for the transaction tests: a transport that records what
// is sent, users and owners that record what they are told, and message
// builders.

import { buildResponse, parseAndValidate, SipParseError, type ResponseOptions, type SipMessage } from '../../src/sip/index.js';
import type { Destination, Protocol, Source } from '../../src/transport/index.js';
import {
  TimerWheel,
  TransactionLayer,
  type ClientTransaction,
  type ClientTransactionOwner,
  type ServerTransaction,
  type TransactionTimers,
  type TransactionUser,
} from '../../src/transaction/index.js';

export interface Sent {
  text: string;
  /** The buffer as given to the transport. */
  data: Buffer;
  dest: Destination;
  /** Wheel time of the send, ms. */
  at: number;
}

export class FakeTransport {
  readonly sent: Sent[] = [];
  wheel: TimerWheel | null = null;
  send(data: Buffer, dest: Destination): void {
    this.sent.push({ text: data.toString('latin1'), data, dest, at: this.wheel === null ? 0 : this.wheel.now() });
  }
  /** First lines of everything sent so far. */
  lines(): string[] {
    return this.sent.map((s) => s.text.slice(0, s.text.indexOf('\r\n')));
  }
  clear(): void {
    this.sent.length = 0;
  }
}

const requestsOf = new WeakMap<ServerTransaction, SipMessage>();

/** The request a server transaction was created with (the transaction itself lets go of it at its final response). */
export function requestOf(tx: ServerTransaction): SipMessage {
  const req = requestsOf.get(tx);
  if (req === undefined) throw new Error('not a transaction this user saw');
  return req;
}

export class RecordingUser implements TransactionUser {
  readonly requests: Array<{ tx: ServerTransaction; req: SipMessage }> = [];
  readonly cancels: Array<{ cancelTx: ServerTransaction; inviteTx: ServerTransaction | null; req: SipMessage; inviteAnswered: boolean }> = [];
  readonly acks: Array<{ req: SipMessage; source: Source }> = [];
  readonly strays: Array<{ res: SipMessage; source: Source; upstream?: Destination }> = [];
  readonly timeouts: ServerTransaction[] = [];
  readonly terminated: ServerTransaction[] = [];
  onRequest(tx: ServerTransaction, req: SipMessage): void {
    requestsOf.set(tx, req);
    this.requests.push({ tx, req });
  }
  onCancel(cancelTx: ServerTransaction, inviteTx: ServerTransaction | null, req: SipMessage, inviteAnswered: boolean): void {
    this.cancels.push({ cancelTx, inviteTx, req, inviteAnswered });
  }
  onAck(req: SipMessage, source: Source): void {
    this.acks.push({ req, source });
  }
  onStrayResponse(res: SipMessage, source: Source, upstream?: Destination): void {
    this.strays.push(upstream === undefined ? { res, source } : { res, source, upstream });
  }
  onServerTimeout(tx: ServerTransaction): void {
    this.timeouts.push(tx);
  }
  onServerTerminated(tx: ServerTransaction): void {
    this.terminated.push(tx);
  }
}

export class RecordingOwner implements ClientTransactionOwner {
  readonly responses: SipMessage[] = [];
  readonly events: string[] = [];
  timeouts = 0;
  errors: Error[] = [];
  terminated = 0;
  onResponse(_ctx: ClientTransaction, res: SipMessage): void {
    this.responses.push(res);
    this.events.push('response ' + res.status);
  }
  onTimeout(_ctx: ClientTransaction): void {
    this.timeouts++;
    this.events.push('timeout');
  }
  onTransportError(_ctx: ClientTransaction, err: Error): void {
    this.errors.push(err);
    this.events.push('error');
  }
  onTerminated(_ctx: ClientTransaction): void {
    this.terminated++;
    this.events.push('terminated');
  }
}

/** A layer on a manual wheel with a recording transport and user. */
export function setup(timers?: Partial<TransactionTimers>): {
  wheel: TimerWheel;
  transport: FakeTransport;
  user: RecordingUser;
  layer: TransactionLayer;
} {
  const wheel = new TimerWheel({ manual: true });
  const transport = new FakeTransport();
  transport.wheel = wheel;
  const user = new RecordingUser();
  const layer = new TransactionLayer({ transport, user, wheel, timers });
  return { wheel, transport, user, layer };
}

export const LOCAL = { protocol: 'udp' as Protocol, address: '192.0.2.1', port: 5060 };

export function source(protocol: Protocol = 'udp', address = '192.0.2.10', port = 5062, connectionId = 0): Source {
  return { protocol, address, port, family: 4, local: { ...LOCAL, protocol }, connectionId };
}

/** Parses a message written with \n line ends. */
export function msg(text: string): SipMessage {
  const m = parseAndValidate(Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'latin1'), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error('test message does not parse: ' + m.reason);
  return m;
}

export interface RequestOpts {
  method?: string;
  branch?: string;
  uri?: string;
  viaHost?: string;
  transport?: string;
  toTag?: string;
  fromTag?: string;
  callId?: string;
  cseq?: number;
  cseqMethod?: string;
  extraVia?: string;
  headers?: string[];
}

/** A request as a UA at 192.0.2.10 would send it. */
export function request(o: RequestOpts = {}): SipMessage {
  const method = o.method ?? 'INVITE';
  const lines = [
    `${method} ${o.uri ?? 'sip:bob@example.com'} SIP/2.0`,
    `Via: SIP/2.0/${o.transport ?? 'UDP'} ${o.viaHost ?? '192.0.2.10:5062'};branch=${o.branch ?? 'z9hG4bKclient1'};rport`,
  ];
  if (o.extraVia !== undefined) lines.push('Via: ' + o.extraVia);
  lines.push(
    'Max-Forwards: 70',
    `From: "Door" <sip:door@example.com>;tag=${o.fromTag ?? 'ft1'}`,
    `To: <sip:bob@example.com>${o.toTag !== undefined ? ';tag=' + o.toTag : ''}`,
    `Call-ID: ${o.callId ?? 'call-1@192.0.2.10'}`,
    `CSeq: ${o.cseq ?? 1} ${o.cseqMethod ?? method}`,
    'Contact: <sip:door@192.0.2.10:5062>',
    ...(o.headers ?? []),
    'Content-Length: 0',
    '',
    '',
  );
  return msg(lines.join('\n'));
}

export function response(req: SipMessage, code: number, opts: ResponseOptions = {}): SipMessage {
  return buildResponse(req, code, { toTag: 'srv-tag', ...opts });
}

/** The parsed form of a sent message. */
export function parsed(s: Sent): SipMessage {
  return msg(s.text);
}

/** mulberry32: the same sequence every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
