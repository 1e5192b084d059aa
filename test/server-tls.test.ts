// Portier started from a configuration with a tls listener (certificate
// files generated at test time) answers OPTIONS over TLS.
import t from 'tap';
import tls from 'node:tls';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { loadConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { makeTestCerts, opensslMissing } from './helpers/certs.js';
import { replyCollector } from './helpers/ua.js';

const missing = opensslMissing();

t.test('OPTIONS over TLS to a server with a tls listener: 200, Via transport TLS', { skip: missing ?? false, timeout: 15000 }, async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const file = join(certs.dir, 'portier.yaml');
  writeFileSync(
    file,
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, tls:127.0.0.1:0]',
      // Relative paths: next to the configuration file.
      'tls: {cert: server.pem, key: server.key, ca: ca.pem}',
      'log: {level: fatal}',
    ].join('\n'),
  );
  const server: RunningServer = await startServer(loadConfig(file), createLogger('fatal'));
  t.teardown(() => server.stop());
  const port = server.listening().find((e) => e.protocol === 'tls')?.port;
  if (port === undefined) throw new Error('no tls listener');

  const sock = tls.connect({ host: '127.0.0.1', port, ca: certs.caCert, servername: 'localhost' });
  t.teardown(() => {
    sock.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', resolve);
    sock.once('error', reject);
  });
  const { replies, framer } = replyCollector('tls');
  let pongs = 0;
  sock.on('data', (d: Buffer) => {
    if (d.equals(Buffer.from('\r\n'))) pongs++;
    else framer.push(d);
  });
  const local = `127.0.0.1:${sock.localPort}`;
  sock.write(
    [
      `OPTIONS sip:127.0.0.1:${port};transport=tls SIP/2.0`,
      `Via: SIP/2.0/TLS ${local};branch=z9hG4bK-tls1;rport`,
      'Max-Forwards: 70',
      'From: <sip:tester@example.test>;tag=tls1',
      `To: <sip:127.0.0.1:${port}>`,
      'Call-ID: tls-1@test',
      'CSeq: 1 OPTIONS',
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n'),
  );
  const end = Date.now() + 5000;
  while (replies.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  t.equal(replies.length, 1, 'one reply');
  const res = replies[0];
  t.equal(res.status, 200);
  t.equal(res.topVia()?.transport, 'TLS');
  t.equal(res.topVia()?.branch, 'z9hG4bK-tls1');
  sock.write('\r\n\r\n');
  while (pongs === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  t.equal(pongs, 1, 'ping answered');
  t.equal(server.transport.stats.messagesIn.tls, 1);
  t.equal(server.transport.stats.messagesOut.tls, 1);
});
