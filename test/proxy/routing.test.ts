// Pure proxy rules: best response (§16.7), loop detection (§16.3/§16.6),
// Route pre-processing and Record-Route (§16.4, §16.6, RFC 5658).
import t from 'tap';
import { forwardedStatus, isBetterResponse, responseRank } from '../../src/proxy/best-response.js';
import { branchFor, hashInBranch, isLoop, loopHash } from '../../src/proxy/loop.js';
import { addRecordRoute, preprocessRoutes, recordRouteValue, RouteSigner } from '../../src/proxy/route.js';
import { SelfAddresses } from '../../src/proxy/self.js';
import { parseAndValidate, SipMessage } from '../../src/sip/index.js';

function req(ruri: string, extra: string[] = [], vias = ['SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaller']): SipMessage {
  const text = [
    `INVITE ${ruri} SIP/2.0`,
    ...vias.map((v) => `Via: ${v}`),
    'Max-Forwards: 70',
    'From: <sip:door@example.test>;tag=f1',
    'To: <sip:alice@example.test>',
    'Call-ID: c1@test',
    'CSeq: 1 INVITE',
    ...extra,
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  const m = parseAndValidate(Buffer.from(text));
  if (!(m instanceof SipMessage)) throw new Error('fixture does not parse: ' + m.reason);
  return m;
}

const signer = new RouteSigner();
const TOKEN = signer.token('c1@test', 'f1');

const self = new SelfAddresses(['example.test'], [
  { protocol: 'udp', address: '127.0.0.1', port: 5060 },
  { protocol: 'tcp', address: '127.0.0.1', port: 5060 },
]);

t.test('best response: 6xx beats all, then lowest class, actionable first, 503 last', async (t) => {
  t.ok(isBetterResponse(486, null), 'anything beats nothing');
  t.ok(isBetterResponse(603, 302), '6xx beats 3xx');
  t.ok(isBetterResponse(600, 401), '6xx beats 4xx');
  t.ok(isBetterResponse(302, 486), '3xx beats 4xx');
  t.ok(isBetterResponse(486, 500), '4xx beats 5xx');
  t.ok(isBetterResponse(407, 486), '407 preferred within 4xx');
  t.ok(isBetterResponse(500, 503), '503 ranks last in 5xx');
  t.notOk(isBetterResponse(486, 480), 'a tie keeps the first received');
  t.notOk(isBetterResponse(486, 603), 'nothing beats a 6xx');
  t.ok(responseRank(408) > responseRank(401), '408 (timeout) loses to 401');
  t.equal(forwardedStatus(503), 500, '503 is forwarded as 500');
  t.equal(forwardedStatus(486), 486);
});

t.test('loop detection: same request back is a loop, a retargeted one is a spiral', async (t) => {
  const first = req('sip:alice@example.test');
  const hash = loopHash(first);
  const branch = branchFor(hash);
  t.match(branch, /^z9hG4bK-pt/, 'our branches carry the magic cookie and marker');
  t.equal(hashInBranch(branch), hash, 'the hash is read back from the branch');
  t.not(branchFor(hash), branch, 'each branch is unique');
  t.equal(hashInBranch('z9hG4bKother'), null, 'foreign branches carry no hash');

  const looped = req('sip:alice@example.test', [], [`SIP/2.0/UDP 127.0.0.1:5060;branch=${branch}`, 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaller']);
  t.ok(isLoop(looped, loopHash(looped), (h, p) => self.isSelf(h, p)), 'came back unchanged: loop');
  const spiral = req('sip:bob@example.test', [], [`SIP/2.0/UDP 127.0.0.1:5060;branch=${branch}`, 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaller']);
  t.notOk(isLoop(spiral, loopHash(spiral), (h, p) => self.isSelf(h, p)), 'retargeted: spiral, not a loop');
  const foreignVia = req('sip:alice@example.test', [], [`SIP/2.0/UDP 192.0.2.99:5060;branch=${branch}`]);
  t.notOk(isLoop(foreignVia, loopHash(foreignVia), (h, p) => self.isSelf(h, p)), 'same branch from another host is not our loop');
});

t.test('self addresses', async (t) => {
  t.ok(self.isSelf('127.0.0.1', 5060));
  t.ok(self.isSelf('127.0.0.1', null), 'no port: default port, which is listened on');
  t.notOk(self.isSelf('127.0.0.1', 5070), 'another port is someone else');
  t.ok(self.isSelf('EXAMPLE.test', null), 'domain, any case');
  t.notOk(self.isSelf('other.test', null));
  t.ok(self.isDomain('example.test'));
});

t.test('Route pre-processing (§16.4) and signed dialog routes', async (t) => {
  const loose = req('sip:alice@192.0.2.5', [`Route: <sip:127.0.0.1:5060;lr;pt=${TOKEN}>, <sip:127.0.0.1:5060;transport=tcp;lr;pt=${TOKEN}>, <sip:proxy2.test;lr>`]);
  t.equal(preprocessRoutes(loose, self, signer).dialog, true, 'our signed Route: a dialog Portier record-routed');
  t.same(loose.routes()!.map((r) => r.uriText), ['sip:proxy2.test;lr'], 'our entries (both of a double Record-Route) removed, the next hop kept');
  t.equal(loose.uri, 'sip:alice@192.0.2.5', 'Request-URI untouched');

  const forged = req('sip:victim@198.51.100.7', ['Route: <sip:127.0.0.1:5060;lr>']);
  t.equal(preprocessRoutes(forged, self, signer).dialog, false, 'a Route to Portier without a token is not a dialog (no open relay)');
  t.equal(forged.count('route'), 0, 'it is still removed (§16.4)');
  const wrong = req('sip:victim@198.51.100.7', [`Route: <sip:127.0.0.1:5060;lr;pt=${signer.token('another-call', 'f1')}>`]);
  t.equal(preprocessRoutes(wrong, self, signer).dialog, false, 'a token of another Call-ID is refused');
  const otherKey = req('sip:victim@198.51.100.7', [`Route: <sip:127.0.0.1:5060;lr;pt=${new RouteSigner().token('c1@test', 'f1')}>`]);
  t.equal(preprocessRoutes(otherKey, self, signer).dialog, false, 'a token made with another key is refused');
  const otherTag = req('sip:victim@198.51.100.7', [`Route: <sip:127.0.0.1:5060;lr;pt=${signer.token('c1@test', 'someone-else')}>`]);
  t.equal(preprocessRoutes(otherTag, self, signer).dialog, false, 'the same Call-ID with tags of another dialog is refused');
  // The callee's requests carry the creator's tag as To tag.
  const fromCallee = parseAndValidate(
    Buffer.from(
      `BYE sip:door@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKb\r\nFrom: <sip:alice@example.test>;tag=a9\r\nTo: <sip:door@example.test>;tag=f1\r\n` +
        `Call-ID: c1@test\r\nCSeq: 1 BYE\r\nRoute: <sip:127.0.0.1:5060;lr;pt=${TOKEN}>\r\nContent-Length: 0\r\n\r\n`,
    ),
  ) as SipMessage;
  t.equal(preprocessRoutes(fromCallee, self, signer).dialog, true, "the other side's request (creator's tag in To) is in the dialog");

  const strict = req(`sip:127.0.0.1:5060;lr;pt=${TOKEN}`, ['Route: <sip:proxy2.test;lr>, <sip:alice@192.0.2.5>']);
  t.equal(preprocessRoutes(strict, self, signer).dialog, true, 'strict-routed signed Request-URI');
  t.equal(strict.uri, 'sip:alice@192.0.2.5', 'strict router upstream: Request-URI restored from the last Route');
  t.same(strict.routes()!.map((r) => r.uriText), ['sip:proxy2.test;lr'], 'and that Route removed');

  const none = req('sip:alice@example.test');
  preprocessRoutes(none, self, signer);
  t.equal(none.isModified, false, 'nothing to do: message untouched');
});

t.test('Record-Route values and double Record-Route (RFC 5658)', async (t) => {
  t.equal(recordRouteValue({ protocol: 'udp', address: '127.0.0.1', port: 5060 }, 'T'), '<sip:127.0.0.1:5060;lr;pt=T>');
  t.equal(recordRouteValue({ protocol: 'tcp', address: '::1', port: 5080 }, 'T'), '<sip:[::1]:5080;transport=tcp;lr;pt=T>');
  const m = req('sip:alice@example.test');
  addRecordRoute(m, { protocol: 'udp', address: '127.0.0.1', port: 5060 }, { protocol: 'tcp', address: '127.0.0.1', port: 5060 }, TOKEN);
  t.same(m.values('record-route'), [`<sip:127.0.0.1:5060;transport=tcp;lr;pt=${TOKEN}>`, `<sip:127.0.0.1:5060;lr;pt=${TOKEN}>`], 'outbound on top, inbound below');
  const same = req('sip:alice@example.test');
  addRecordRoute(same, { protocol: 'udp', address: '127.0.0.1', port: 5060 }, { protocol: 'udp', address: '127.0.0.1', port: 5060 }, TOKEN);
  t.equal(same.values('record-route').length, 1, 'same transport and interface: one entry');
  const again = parseAndValidate(m.toBuffer()) as SipMessage;
  t.equal(again.recordRoutes()!.length, 2, 'Record-Route survives serialization');
});

/** An in-dialog BYE of dialog c1@test (caller tag f1, callee tag t9), `fromCaller` choosing its direction, with these Route values. */
function bye(routes: string[], fromCaller: boolean): SipMessage {
  const caller = '<sip:door@example.test>;tag=f1';
  const callee = '<sip:alice@example.test>;tag=t9';
  const text = [
    'BYE sip:peer@192.0.2.9 SIP/2.0',
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye',
    'Max-Forwards: 70',
    `From: ${fromCaller ? caller : callee}`,
    `To: ${fromCaller ? callee : caller}`,
    'Call-ID: c1@test',
    'CSeq: 2 BYE',
    ...routes.map((r) => `Route: ${r}`),
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  const m = parseAndValidate(Buffer.from(text));
  if (!(m instanceof SipMessage)) throw new Error(m.reason);
  return m;
}

t.test('flow tokens: one entry carries both flows and the direction picks one; a token lifted into another dialog is refused', async (t) => {
  const ep = { protocol: 'udp' as const, address: '127.0.0.1', port: 5060 };
  const callerFlow = { protocol: 'udp' as const, address: '198.51.100.7', port: 40001 };
  const calleeFlow = { protocol: 'udp' as const, address: '203.0.113.5', port: 50002 };
  const inv = req('sip:alice@example.test');
  addRecordRoute(inv, ep, ep, TOKEN, { inbound: signer.flowToken(callerFlow, TOKEN), outbound: signer.flowToken(calleeFlow, TOKEN) });
  const rr = inv.getAll('record-route');
  t.equal(rr.length, 1, 'same socket both ways: one entry');
  t.match(rr[0], /;pf=[^;>]+;pf2=[^;>]+>$/, 'with both flows');

  const fromCaller = preprocessRoutes(bye(rr, true), self, signer);
  t.ok(fromCaller.dialog);
  t.same(fromCaller.flow, calleeFlow, "the caller's BYE goes to the callee's NAT binding");
  const fromCallee = preprocessRoutes(bye(rr, false), self, signer);
  t.same(fromCallee.flow, callerFlow, "the callee's to the caller's");

  // A call partner puts the victim's pf next to the dialog token of a dialog of its own.
  const other = new RouteSigner(undefined);
  const stolen = /;pf=([^;>]+)/.exec(rr[0])![1];
  const myToken = signer.token('c1@test', 'f1'); // same dialog: works
  t.ok(signer.flowOf(stolen, myToken), 'the token is valid in its own dialog');
  t.equal(signer.flowOf(stolen, signer.token('another-call@test', 'x')), null, 'not with another dialog token');
  t.equal(other.flowOf(stolen, myToken), null, 'nor under another key');
});
