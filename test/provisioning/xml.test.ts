// Linphone's XML provisioning document and Linhome's vCard device list, read
// back with a real XML parser: well-formed, in the lpconfig namespace, and
// carrying the keys liblinphone 5 and Linhome read.

import t from 'tap';
import { provisioningXml, vcardList, xmlEscape } from '../../src/provisioning/xml.js';
import { parseLpConfig } from './helpers.js';

const account = {
  user: 'directrice',
  domain: 'ecole.example.test',
  realm: 'ecole.example.test',
  password: 'p<a>s&s"w\'ord',
  server: { host: 'portier.ville.example', port: 5061, transport: 'tls' as const },
  regExpires: 3600,
};

t.test('one account with TURN, devices and a refresh URL', async (t) => {
  const xml = provisioningXml({
    account,
    nat: { stunServer: 'turn.ville.example:3478', turn: { username: '1700000000:directrice@ecole.example.test', password: 'abc+/=', transport: 'udp' } },
    vcardUrl: 'https://portier.ville.example:8443/contacts/vcard',
    refreshUrl: 'https://portier.ville.example:8443/config',
    defaultActions: { method: 'sipinfo', actions: [{ type: 'open-door', code: '*1' }] },
    accountManager: { xmlrpcUrl: 'https://portier.ville.example:8443/xmlrpc', flexiApiUrl: 'https://portier.ville.example:8443/api/' },
  });
  t.match(xml, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<config xmlns="http:\/\/www\.linphone\.org\/xsds\/lpconfig\.xsd"/);
  const c = parseLpConfig(xml);
  t.same(Object.keys(c), ['sip', 'proxy_0', 'auth_info_0', 'net', 'nat_policy_0', 'auth_info_1', 'misc', 'default_actions', 'app', 'assistant', 'account_creator']);
  t.same(c.sip, { default_proxy: '0' });
  t.same(c.proxy_0, {
    reg_proxy: '<sip:portier.ville.example:5061;transport=tls>',
    reg_route: '<sip:portier.ville.example:5061;transport=tls;lr>',
    reg_identity: '"directrice" <sip:directrice@ecole.example.test>',
    realm: 'ecole.example.test',
    reg_expires: '3600',
    reg_sendregister: '1',
    publish: '0',
    push_notification_allowed: '1',
    remote_push_notification_allowed: '1',
    dial_escape_plus: '0',
    nat_policy_ref: 'portier',
  });
  t.same(c.auth_info_0, { username: 'directrice', userid: 'directrice', passwd: account.password, realm: 'ecole.example.test', domain: 'ecole.example.test' }, 'the password survives XML escaping');
  t.same(c.net, { push_notification: '1', nat_policy_ref: 'portier', force_ice_disablement: '0' }, "ICE on, against Linhome's factory force_ice_disablement=1");
  t.same(c.nat_policy_0, {
    ref: 'portier',
    stun_server: 'turn.ville.example:3478',
    protocols: 'stun,turn,ice',
    stun_server_username: '1700000000:directrice@ecole.example.test',
    turn_enable_udp: '1',
    turn_enable_tcp: '0',
    turn_enable_tls: '0',
  });
  t.same(c.auth_info_1, { username: '1700000000:directrice@ecole.example.test', userid: '1700000000:directrice@ecole.example.test', passwd: 'abc+/=' }, 'the TURN credential, for any realm');
  t.same(c.misc, { 'config-uri': 'https://portier.ville.example:8443/config', transient_provisioning: '0', 'contacts-vcard-list': 'https://portier.ville.example:8443/contacts/vcard' });
  t.same(c.default_actions, { method_type: 'method_dtmf_sip_info', action_1_type: 'action_open_door', action_1_code: '*1' });
  // Linhome's CorePreferences: [app] auto_create_push_gateway_account; [assistant] xmlrpc_url; liblinphone's [account_creator] url.
  t.same(c.app, { auto_create_push_gateway_account: '0' }, 'no push gateway account');
  t.same(c.assistant, { xmlrpc_url: 'https://portier.ville.example:8443/xmlrpc' });
  t.same(c.account_creator, { url: 'https://portier.ville.example:8443/api/' }, 'FlexiAPI base, with the slash liblinphone appends paths to');
});

t.test('STUN only, no devices: transient provisioning, no password in a refresh', async (t) => {
  const c = parseLpConfig(provisioningXml({ account: { ...account, password: null, server: { host: '2001:db8::5', port: 5060, transport: 'tcp' } }, nat: { stunServer: 'stun.example.test:3478', turn: null }, vcardUrl: null, refreshUrl: null, defaultActions: null, accountManager: null }));
  t.notOk('auth_info_0' in c, 'no credentials when there is no password to give');
  t.notOk('auth_info_1' in c);
  t.equal(c.proxy_0.reg_proxy, '<sip:[2001:db8::5]:5060;transport=tcp>');
  t.same(c.nat_policy_0, { ref: 'portier', stun_server: 'stun.example.test:3478', protocols: 'stun,ice' });
  t.same(c.misc, { transient_provisioning: '1' }, 'the one-time link is forgotten once applied');
  t.notOk('default_actions' in c);
  for (const section of ['app', 'assistant', 'account_creator']) t.notOk(section in c, `no ${section} section with push-gateway: vendor: the app's factory settings apply`);
  const none = parseLpConfig(provisioningXml({ account, nat: null, vcardUrl: null, refreshUrl: null, defaultActions: null, accountManager: null }));
  t.notOk('nat_policy_0' in none);
  t.same(none.net, { push_notification: '1' });
  t.notOk('nat_policy_ref' in none.proxy_0);
});

t.test('escaping', async (t) => {
  t.equal(xmlEscape(`<a href="x">&'\u0001`), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;');
});

t.test("Linhome's vCard list", async (t) => {
  const text = vcardList([
    { uri: 'sip:portail@example.test', name: 'Portail, côté rue; nord', type: 'intercom', dtmf: 'sipinfo', actions: [{ type: 'open-door', code: '*1' }, { type: 'light-up', code: '5' }] },
    { uri: 'sip:barriere@example.test', name: 'Barrière', type: 'gate', dtmf: 'rfc2833', actions: [] },
  ]);
  t.equal(
    text,
    [
      'BEGIN:VCARD', 'VERSION:4.0', 'KIND:individual', 'IMPP:sip:portail@example.test', 'FN:Portail\\, côté rue\\; nord', 'X-LINPHONE-ACCOUNT-TYPE:intercom',
      'X-LINPHONE-ACCOUNT-DTMF-PROTOCOL:sipinfo', 'X-LINPHONE-ACCOUNT-ACTION:action_open_door;*1', 'X-LINPHONE-ACCOUNT-ACTION:action_lightup;5', 'END:VCARD',
      'BEGIN:VCARD', 'VERSION:4.0', 'KIND:individual', 'IMPP:sip:barriere@example.test', 'FN:Barrière', 'X-LINPHONE-ACCOUNT-TYPE:gate',
      'X-LINPHONE-ACCOUNT-DTMF-PROTOCOL:rfc2833', 'END:VCARD', '',
    ].join('\r\n'),
  );
  t.equal(vcardList([]), '');
});
