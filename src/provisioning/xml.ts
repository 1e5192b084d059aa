// Linphone's XML remote-provisioning format (liblinphone
// `linphone_config_load_from_xml_string`, schema lpconfig.xsd): sections of
// entries, each entry a key of the app's linphonerc. `overwrite="true"`
// replaces a value the app already has. What each key means, and which
// liblinphone 5 code reads it, is in README ("Setting up the apps") and in
// the comments below.

export const LPCONFIG_NS = 'http://www.linphone.org/xsds/lpconfig.xsd';

export type Sections = Array<[section: string, entries: Array<[key: string, value: string]>]>;

/** XML 1.0 text and attribute escaping; control characters other than tab, CR and LF cannot appear in XML 1.0 at all. */
export function xmlEscape(s: string): string {
  return s
    .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

export function renderLpConfig(sections: Sections): string {
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<config xmlns="${LPCONFIG_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="${LPCONFIG_NS} lpconfig.xsd">`,
  ];
  for (const [name, entries] of sections) {
    out.push(`  <section name="${xmlEscape(name)}">`);
    for (const [key, value] of entries) out.push(`    <entry name="${xmlEscape(key)}" overwrite="true">${xmlEscape(value)}</entry>`);
    out.push('  </section>');
  }
  out.push('</config>', '');
  return out.join('\n');
}

export interface AccountXml {
  user: string;
  domain: string;
  realm: string;
  /** Null in a refresh (the app keeps the password it has). */
  password: string | null;
  /** The SIP server the app registers to. */
  server: { host: string; port: number; transport: 'tls' | 'tcp' | 'udp' };
  regExpires: number;
}

export interface NatXml {
  /** `host:port` of the STUN (and TURN) server. */
  stunServer: string;
  turn: { username: string; password: string; transport: 'udp' | 'tcp' | 'tls' } | null;
}

export interface DefaultActionsXml {
  method: 'sipinfo' | 'rfc2833' | 'sipmessage';
  actions: Array<{ type: string; code: string }>;
}

export interface ProvisioningXml {
  account: AccountXml;
  nat: NatXml | null;
  /** misc.contacts-vcard-list: Linhome's device list (vCard 4.0), fetched with the account's digest credentials. */
  vcardUrl: string | null;
  /** misc.config-uri for later starts (digest-authenticated, fresh TURN credentials); null: transient provisioning. */
  refreshUrl: string | null;
  /** Linhome's [default_actions]: the door-open buttons of a call from a door station not in its device list. */
  defaultActions: DefaultActionsXml | null;
  /** Portier's account-manager URLs, instead of the vendor's, and no push gateway account; null: the app's factory settings. */
  accountManager: AccountManagerXml | null;
}

export interface AccountManagerXml {
  /** [assistant] xmlrpc_url: BASE/xmlrpc. */
  xmlrpcUrl: string;
  /** [account_creator] url, FlexiAPI's base (liblinphone appends paths to it): BASE/api/. */
  flexiApiUrl: string;
}

/** The reference of the NAT policy Portier provisions (nat_policy_0, named by net.nat_policy_ref and proxy_0.nat_policy_ref). */
export const NAT_POLICY_REF = 'portier';

const ACTION_KEYS: Record<string, string> = {
  'open-door': 'action_open_door',
  'open-gate': 'action_open_gate',
  'light-up': 'action_lightup',
  unlock: 'action_unlock',
};

const METHOD_KEYS: Record<string, string> = {
  sipinfo: 'method_dtmf_sip_info',
  rfc2833: 'method_dtmf_rfc_4733',
  sipmessage: 'method_sip_message',
};

/** Linhome's action-type key for a configured action (`open-door` → `action_open_door`). */
export function linhomeActionKey(type: string): string {
  return ACTION_KEYS[type] ?? type;
}

function hostForUri(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** The whole document for one account. */
export function provisioningXml(p: ProvisioningXml): string {
  const a = p.account;
  const server = `sip:${hostForUri(a.server.host)}:${a.server.port};transport=${a.server.transport}`;
  const identity = `sip:${a.user}@${hostForUri(a.domain)}`;
  const sections: Sections = [];

  const sip: Array<[string, string]> = [['default_proxy', '0']];
  sections.push(['sip', sip]);

  const proxy: Array<[string, string]> = [
    ['reg_proxy', `<${server}>`],
    // Calls go through Portier too, not straight to a callee's Contact.
    ['reg_route', `<${server};lr>`],
    ['reg_identity', `"${a.user.replace(/["\\]/g, '')}" <${identity}>`],
    ['realm', a.realm],
    ['reg_expires', String(a.regExpires)],
    ['reg_sendregister', '1'],
    ['publish', '0'],
    // Push: FCM (Android) and PushKit (iOS), and remote (alert) pushes for iOS apps without VoIP pushes (Linhome).
    ['push_notification_allowed', '1'],
    ['remote_push_notification_allowed', '1'],
    ['dial_escape_plus', '0'],
  ];
  if (p.nat !== null) proxy.push(['nat_policy_ref', NAT_POLICY_REF]);
  sections.push(['proxy_0', proxy]);

  if (a.password !== null) {
    sections.push([
      'auth_info_0',
      [
        ['username', a.user],
        ['userid', a.user],
        ['passwd', a.password],
        ['realm', a.realm],
        ['domain', a.domain],
      ],
    ]);
  }

  const net: Array<[string, string]> = [
    // liblinphone's core-wide push switch.
    ['push_notification', '1'],
  ];
  if (p.nat !== null) {
    net.push(['nat_policy_ref', NAT_POLICY_REF]);
    // Linhome's factory configuration turns ICE off (force_ice_disablement=1); the user configuration wins.
    net.push(['force_ice_disablement', '0']);
  }
  sections.push(['net', net]);

  if (p.nat !== null) {
    const protocols = p.nat.turn === null ? 'stun,ice' : 'stun,turn,ice';
    const nat: Array<[string, string]> = [
      ['ref', NAT_POLICY_REF],
      ['stun_server', p.nat.stunServer],
      ['protocols', protocols],
    ];
    if (p.nat.turn !== null) {
      nat.push(['stun_server_username', p.nat.turn.username]);
      nat.push(['turn_enable_udp', p.nat.turn.transport === 'udp' ? '1' : '0']);
      nat.push(['turn_enable_tcp', p.nat.turn.transport === 'tcp' ? '1' : '0']);
      nat.push(['turn_enable_tls', p.nat.turn.transport === 'tls' ? '1' : '0']);
    }
    sections.push(['nat_policy_0', nat]);
    if (p.nat.turn !== null) {
      // The TURN credential: liblinphone answers the TURN server's 401 with the auth info of stun_server_username (any realm).
      sections.push([
        'auth_info_1',
        [
          ['username', p.nat.turn.username],
          ['userid', p.nat.turn.username],
          ['passwd', p.nat.turn.password],
        ],
      ]);
    }
  }

  const misc: Array<[string, string]> = [];
  if (p.refreshUrl !== null) misc.push(['config-uri', p.refreshUrl], ['transient_provisioning', '0']);
  // Without a refresh URL, the one-time link is forgotten once applied instead of being fetched at every start.
  else misc.push(['transient_provisioning', '1']);
  if (p.vcardUrl !== null) misc.push(['contacts-vcard-list', p.vcardUrl]);
  sections.push(['misc', misc]);

  if (p.defaultActions !== null && p.defaultActions.actions.length > 0) {
    const d: Array<[string, string]> = [['method_type', METHOD_KEYS[p.defaultActions.method]]];
    p.defaultActions.actions.slice(0, 3).forEach((act, i) => {
      d.push([`action_${i + 1}_type`, linhomeActionKey(act.type)]);
      d.push([`action_${i + 1}_code`, act.code]);
    });
    sections.push(['default_actions', d]);
  }

  if (p.accountManager !== null) {
    // Linhome (CorePreferences.automaticallyCreatePushGatewayAccount; default false on Android, true
    // on iOS) then creates no second account on a push gateway after a remote provisioning: the
    // account registers with its own push token, and Portier wakes the app.
    sections.push(['app', [['auto_create_push_gateway_account', '0']]]);
    // Anything that still asks an account manager asks Portier, not subscribe.linhome.org.
    sections.push(['assistant', [['xmlrpc_url', p.accountManager.xmlrpcUrl]]]);
    sections.push(['account_creator', [['url', p.accountManager.flexiApiUrl]]]);
  }
  return renderLpConfig(sections);
}

// ---------------------------------------------------------------- Linhome's device list

export interface VcardDevice {
  /** `sip:portail@example.test` */
  uri: string;
  name: string;
  type: string;
  dtmf: 'sipinfo' | 'rfc2833' | 'sipmessage';
  actions: Array<{ type: string; code: string }>;
}

/** vCard 4.0 text escaping (RFC 6350 §3.4) of a property value. */
function vcardText(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/,/g, '\\,').replace(/;/g, '\\;').replace(/\r?\n/g, '\\n');
}

/**
 * Linhome's remote device list (`misc.contacts-vcard-list`), in the format
 * of Belledonne's account manager (FlexiAPI `GET /contacts/vcard`): one
 * vCard 4.0 per door station, IMPP its SIP address, and Linhome's
 * X-LINPHONE-ACCOUNT-TYPE (device type), -DTMF-PROTOCOL and -ACTION
 * (`action_open_door;CODE`) properties. CRLF line ends (RFC 6350).
 */
export function vcardList(devices: VcardDevice[]): string {
  const lines: string[] = [];
  for (const d of devices) {
    lines.push('BEGIN:VCARD', 'VERSION:4.0', 'KIND:individual', `IMPP:${d.uri}`, `FN:${vcardText(d.name)}`);
    lines.push(`X-LINPHONE-ACCOUNT-TYPE:${vcardText(d.type)}`);
    lines.push(`X-LINPHONE-ACCOUNT-DTMF-PROTOCOL:${d.dtmf}`);
    // The ';' between action type and code is the separator Linhome splits on: not escaped.
    for (const a of d.actions) lines.push(`X-LINPHONE-ACCOUNT-ACTION:${linhomeActionKey(a.type)};${a.code}`);
    lines.push('END:VCARD');
  }
  return lines.map((l) => `${l}\r\n`).join('');
}
