// Push parameters as Linphone, Linhome and older Linphone versions put them
// in the Contact of a REGISTER, read through the SIP parser and the
// registrar's pushParamsOf, as the proxy will have them from a binding.

import t from 'tap';
import { parseNameAddr } from '../../src/sip/index.js';
import { pushParamsOf } from '../../src/registrar/index.js';
import { PUSH_PARAM_NAMES, decodeParam, isPushParam, parsePushTarget, readPushTarget, targetKey, type PushTarget } from '../../src/push/params.js';

const FCM_TOKEN = 'dXyZ0123abc:APA91bFqG1lZ_Kc-7yQh1nB2vKp3Z9_example_registration_token';
const VOIP = '6d0a5bbf8e3fc2d1a9b7c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829';
const REMOTE = 'a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091';

function fromContact(contact: string): Record<string, string> {
  const na = parseNameAddr(contact);
  if (na === null || !na.uriIsValid) throw new Error(`test contact does not parse: ${contact}`);
  return pushParamsOf(na.uri);
}

function targetOf(contact: string): PushTarget {
  const r = readPushTarget(fromContact(contact));
  if (r === null || 'problem' in r) throw new Error(`no target: ${JSON.stringify(r)}`);
  return r;
}

t.test('Linphone for Android (RFC 8599, FCM)', async (t) => {
  const tg = targetOf(
    `<sip:alice@192.168.1.23:40312;transport=tcp;pn-prid=${FCM_TOKEN};pn-provider=fcm;pn-param=929724111839;pn-silent=1;pn-timeout=0>;+sip.instance="<urn:uuid:6f2e1c3a-8d4b-4e5f-9a6b-7c8d9e0f1a2b>";+org.linphone.specs="lime,ephemeral"`,
  );
  t.match(tg, { provider: 'fcm', sandbox: false, token: FCM_TOKEN, voipToken: null, param: '929724111839', appId: '929724111839', teamId: null, silent: true, timeout: 0, legacy: false });
  t.equal(tg.callStr, 'IC_MSG', "Flexisip's default when pn-call-str is absent");
  t.equal(tg.remotePushInterval, null);
});

t.test('Linphone for iOS: VoIP and remote tokens, sandbox, sounds and strings', async (t) => {
  const contact =
    `<sip:alice@10.0.0.7:51240;transport=tls;pn-prid=${VOIP}:voip&${REMOTE}:remote;pn-provider=apns.dev;` +
    'pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;' +
    'pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf>;+sip.instance="<urn:uuid:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0>"';
  const tg = targetOf(contact);
  t.match(tg, {
    provider: 'apns',
    sandbox: true,
    token: REMOTE,
    voipToken: VOIP,
    teamId: 'ABCD1234',
    appId: 'org.linphone.phone',
    callSound: 'notes_of_the_optimistic.caf',
    msgSound: 'msg.caf',
    legacy: false,
  });
  // The same with the tokens the other way round and the services percent-encoded.
  const encoded = targetOf(contact.replace(`${VOIP}:voip&${REMOTE}:remote`, `${REMOTE}:remote%26${VOIP}:voip`).replace('voip&remote', 'remote%26voip'));
  t.same({ ...encoded, param: tg.param }, tg, 'order and %26 do not matter');
});

t.test('Linhome for iOS: alert pushes only, repeated every 3 s', async (t) => {
  const tg = targetOf(
    `<sip:gardien@192.168.0.42:62001;transport=tls;pn-provider=apns;pn-prid=${REMOTE}:remote;pn-param=7XK9A2B4C6.org.linhome.remote;` +
      'pn-silent=1;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-call-remote-push-interval=3>;+sip.instance="<urn:uuid:11111111-2222-3333-4444-555555555555>"',
  );
  t.match(tg, { provider: 'apns', sandbox: false, token: REMOTE, voipToken: null, teamId: '7XK9A2B4C6', appId: 'org.linhome', remotePushInterval: 3 });
});

t.test('percent-encoded values are decoded; broken escapes kept as written', async (t) => {
  const tg = targetOf(`<sip:a@192.0.2.1;pn-provider=apns;pn-prid=${REMOTE};pn-param=TEAM.org.example.app;pn-call-str=Appel%20entrant%20%C3%A0%20la%20porte>`);
  t.equal(tg.callStr, 'Appel entrant à la porte');
  t.equal(tg.token, REMOTE, 'an untyped single token is the remote one');
  t.equal(tg.appId, 'org.example.app', 'no service named: remote');
  t.equal(decodeParam('50%25%zz%C3'), '50%%zz%C3');
});

t.test('legacy Linphone parameters: pn-type, app-id, pn-tok', async (t) => {
  const android = targetOf(`<sip:bob@192.0.2.20:5060;app-id=929724111839;pn-type=firebase;pn-timeout=0;pn-tok=${FCM_TOKEN};pn-silent=1>`);
  t.match(android, { provider: 'fcm', token: FCM_TOKEN, appId: '929724111839', legacy: true });
  const voip = targetOf(
    `<sip:bob@192.0.2.21;transport=tls;pn-type=apple;app-id=org.linphone.phone.voip.prod;pn-tok=${VOIP};pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf;pn-silent=1>`,
  );
  t.match(voip, { provider: 'apns', sandbox: false, token: null, voipToken: VOIP, appId: 'org.linphone.phone', teamId: null, legacy: true });
  const dev = targetOf(`<sip:bob@192.0.2.21;pn-type=apple;app-id=org.linphone.phone.dev;pn-tok=${REMOTE}>`);
  t.match(dev, { provider: 'apns', sandbox: true, token: REMOTE, voipToken: null, appId: 'org.linphone.phone' });
  const wp = targetOf('<sip:bob@192.0.2.22;pn-type=wp10;app-id=linphone;pn-tok=https%3A%2F%2Fdb5.notify.windows.com%2F%3Ftoken%3DAw>');
  t.match(wp, { provider: 'wp10', token: 'https://db5.notify.windows.com/?token=Aw' });
});

t.test('no push parameters, or unusable ones', async (t) => {
  t.equal(readPushTarget(fromContact('<sip:door@192.0.2.5:5060;transport=udp>')), null);
  t.equal(parsePushTarget({}), null);
  t.same(readPushTarget({ 'pn-provider': 'fcm', 'pn-param': 'x' }), { problem: 'pn-prid is missing' });
  t.match(readPushTarget({ 'pn-provider': 'apns', 'pn-prid': REMOTE, 'pn-param': 'nodots' }), { problem: /pn-param "nodots" is not TEAMID/ });
  t.match(readPushTarget({ 'pn-provider': 'apns', 'pn-prid': `${VOIP}:voip`, 'pn-param': 'T.org.x.remote' }), { problem: /voip token but pn-param does not declare voip/ });
  t.match(readPushTarget({ 'pn-provider': 'apns', 'pn-prid': `${VOIP}&${REMOTE}`, 'pn-param': 'T.org.x.voip&remote' }), { problem: /several tokens/ });
  t.match(readPushTarget({ 'pn-tok': 'x' }), { problem: 'pn-tok without pn-type' });
  t.equal(parsePushTarget({ 'pn-provider': 'apns', 'pn-prid': REMOTE, 'pn-param': 'nodots' }), null);
  t.match(parsePushTarget({ 'pn-provider': 'Firebase', 'pn-prid': FCM_TOKEN, 'pn-param': 'p' }), { provider: 'fcm' }, 'a common misspelling of fcm');
  t.equal(parsePushTarget({ 'pn-provider': 'apns', 'pn-prid': REMOTE, 'pn-param': 'T.b.remote', 'pn-call-remote-push-interval': '0' })?.remotePushInterval, null, '0 switches repeats off');
  t.equal(parsePushTarget({ 'pn-provider': 'apns', 'pn-prid': REMOTE, 'pn-param': 'T.b.remote', 'pn-call-remote-push-interval': '90' })?.remotePushInterval, 30, 'at most 30 s');
});

t.test('which URI parameters are push parameters (stripped before forwarding)', async (t) => {
  const na = parseNameAddr(
    `<sip:alice@10.0.0.7:51240;transport=tls;gr=urn:uuid:x;pn-prid=${REMOTE}:remote;pn-provider=apns;pn-param=T.org.x.remote;pn-silent=1;app-id=org.x;pn-some-future-key=1;PN-Timeout=0>`,
  )!;
  const kept = [...na.uri.params.keys()].filter((k) => !isPushParam(k));
  t.same(kept, ['transport', 'gr']);
  for (const n of PUSH_PARAM_NAMES) t.ok(isPushParam(n), n);
  t.notOk(isPushParam('lr'));
  t.notOk(isPushParam('+sip.instance'));
  const a = targetOf(`<sip:a@h;pn-provider=apns;pn-prid=${REMOTE};pn-param=T.b>`);
  t.equal(targetKey(a), targetKey({ ...a, callStr: 'other' }), 'the key names the device channel only');
  t.not(targetKey(a), targetKey({ ...a, sandbox: true }));
});
