// The transaction layer over real UDP sockets on 127.0.0.1: a request is
// retransmitted by Timer A / Timer E, on the Node-driven wheel, until the
// other side answers, and not after.

import t, { type Test } from 'tap';
import { parseAndValidate, SipParseError, stampedVia, type SipMessage } from '../../src/sip/index.js';
import { DEFAULT_TRANSPORT_LIMITS, TransportLayer, type Destination, type Source } from '../../src/transport/index.js';
import { newBranch, TransactionLayer, TransactionState, type ServerTransaction } from '../../src/transaction/index.js';
import { RecordingOwner, RecordingUser, response } from './helpers.js';
import { until } from '../helpers/wait.js';

const T1 = 40; // short, so the test takes a fraction of a second in real time


interface Side {
  transport: TransportLayer;
  layer: TransactionLayer;
  user: RecordingUser;
  port: number;
  /** Raw datagrams received, first lines. */
  arrived: string[];
}

/** One SIP element: a UDP transport on 127.0.0.1 feeding a transaction layer, as src/server.ts does. */
async function side(t: Test, onArrival?: (s: Side) => void): Promise<Side> {
  const s = { arrived: [] as string[], user: new RecordingUser() } as Side;
  s.transport = new TransportLayer([{ protocol: 'udp', host: '127.0.0.1', port: 0 }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage(data: Buffer, source: Source) {
      s.arrived.push(data.toString('latin1', 0, data.indexOf('\r\n')));
      const m = parseAndValidate(data, { transport: 'udp' });
      if (m instanceof SipParseError) throw new Error('bad message on the wire: ' + m.reason);
      if (m.isRequest) stamp(m, source);
      s.layer.receive(m, source);
      onArrival?.(s);
    },
    onSendError(dest: Destination, err: Error) {
      s.layer.transportError(dest, err);
    },
  });
  s.layer = new TransactionLayer({ transport: s.transport, user: s.user, timers: { t1: T1, t2: 4 * T1, t4: 5 * T1 } });
  await s.transport.start();
  s.port = s.transport.listening()[0].port;
  t.teardown(async () => {
    s.layer.stop();
    await s.transport.stop();
  });
  return s;
}

function stamp(req: SipMessage, source: Source): void {
  const v = stampedVia(req.topVia()!, source.address, source.port);
  if (v !== null) req.replaceFirstValue('via', v);
}

function requestFrom(port: number, toPort: number, method: string): SipMessage {
  const text = [
    `${method} sip:door@127.0.0.1:${toPort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=${newBranch()};rport`,
    'Max-Forwards: 70',
    'From: <sip:app@example.com>;tag=udp-test',
    'To: <sip:door@example.com>',
    `Call-ID: ${newBranch()}@127.0.0.1`,
    `CSeq: 1 ${method}`,
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  const m = parseAndValidate(Buffer.from(text, 'latin1'), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(m.reason);
  return m;
}

for (const method of ['INVITE', 'OPTIONS']) {
  const timer = method === 'INVITE' ? 'Timer A' : 'Timer E';
  t.test(`${method} over UDP: ${timer} retransmits until answered, then stops`, { timeout: 10_000 }, async (t) => {
    let serverTx: ServerTransaction | null = null;
    // The callee answers only when the third copy of the request arrives.
    const callee = await side(t, (s) => {
      const copies = s.arrived.filter((l) => l.startsWith(method)).length;
      if (serverTx === null && s.user.requests.length > 0) serverTx = s.user.requests[0].tx;
      if (copies === 3 && serverTx !== null && serverTx.status === 0) {
        serverTx.respond(response(serverTx.request!, method === 'INVITE' ? 486 : 200));
      }
    });
    const caller = await side(t);
    const owner = new RecordingOwner();
    const req = requestFrom(caller.port, callee.port, method);
    const dest: Destination = { protocol: 'udp', address: '127.0.0.1', port: callee.port };
    const tx = caller.layer.sendRequest(req, dest, owner);

    await until(() => owner.responses.length > 0, 'the response');
    t.equal(callee.user.requests.length, 1, 'one request for the callee’s user; the copies were absorbed');
    t.equal(callee.layer.stats().retransmissionsAbsorbed, 2);
    t.ok(caller.layer.stats().retransmissionsSent >= 2, `${timer} retransmitted the request`);
    t.equal(owner.responses[0].status, method === 'INVITE' ? 486 : 200);
    // Over UDP, Completed is a record the layer keeps (finished.ts): the ACK for Timer D, the key for Timer K.
    t.equal(tx.state, TransactionState.Terminated);

    if (method === 'INVITE') {
      // The caller's transaction ACKs the 486 itself; the callee's absorbs the ACK.
      await until(() => callee.arrived.includes(`ACK sip:door@127.0.0.1:${callee.port} SIP/2.0`), 'the ACK');
      t.equal(serverTx!.state, TransactionState.Confirmed);
      t.equal(callee.user.acks.length, 0);
    }
    const copies = callee.arrived.filter((l) => l.startsWith(method)).length;
    await new Promise((r) => setTimeout(r, 10 * T1));
    t.equal(callee.arrived.filter((l) => l.startsWith(method)).length, copies, 'no retransmission after the answer');
    t.equal(owner.responses.length, 1, 'the final went up once');
    if (method === 'INVITE') t.equal(caller.layer.stats().clientInvite, 1, 'still absorbing 486 retransmissions (Timer D, 32 s)');
    else t.equal(caller.layer.stats().clientNonInvite, 0, 'Timer K (T4) has ended it in real time');
  });
}
