// Push parameters of a binding (RFC 8599 and Linphone's own) read into the
// one thing a provider client needs: where to send, with which token, and
// the strings the app localises. Values are percent-decoded here because
// liblinphone escapes some characters of its Contact-URI parameters.

import { isPushParam } from '../sip/push-params.js';

/** RFC 8599 providers the native clients speak; anything else goes through the generic gateway. */
export type NativeProvider = 'fcm' | 'apns';

export interface PushTarget {
  /** `fcm`, `apns` (also for apns.dev: see `sandbox`), or another provider name, lower-cased, that only the generic gateway can carry. */
  readonly provider: string;
  /** APNs development environment: pn-provider apns.dev, or a legacy app-id ending in `.dev`. */
  readonly sandbox: boolean;
  /** Token for ordinary pushes: the FCM registration token, the APNs remote-notification token; null when the device gave only a VoIP token. */
  readonly token: string | null;
  /** APNs PushKit (VoIP) token; null when the device has none. */
  readonly voipToken: string | null;
  /** pn-param as the device wrote it (decoded): FCM project or sender id; APNs `TEAMID.bundle.id.services`. */
  readonly param: string;
  /** The application: the bundle id on APNs (pn-param between its first and last dot), pn-param (or legacy app-id) elsewhere. Flexisip's `$app-id`. */
  readonly appId: string;
  /** APNs team id from pn-param; null for the legacy form, which has none. */
  readonly teamId: string | null;
  /** Localisation keys (Linphone's pn-*-str), with Flexisip's defaults. */
  readonly callStr: string;
  readonly msgStr: string;
  readonly groupChatStr: string;
  readonly missedCallStr: string;
  readonly acceptedElsewhereStr: string;
  readonly declinedElsewhereStr: string;
  /** Sounds named by the app (pn-call-snd, pn-msg-snd); null: the system default. */
  readonly callSound: string | null;
  readonly msgSound: string | null;
  /** pn-silent=1: the app wants silent (data/background) pushes where it has a choice. */
  readonly silent: boolean;
  /** pn-timeout: seconds the device asks the server to wait before pushing (0: at once). */
  readonly timeout: number;
  /** pn-call-remote-push-interval: seconds between repeated call alerts (1..30); null when not asked for or 0. */
  readonly remotePushInterval: number | null;
  /** Read from the legacy pn-type / app-id / pn-tok family. */
  readonly legacy: boolean;
}

/**
 * URI parameters that carry push information (RFC 8599 §4.1 and the ones
 * Linphone and Flexisip add). The proxy strips these from a Request-URI and
 * Contact before a request goes to the device: they are meant for the server.
 * Any other `pn-*` is one too (see isPushParam): new Linphone versions add keys.
 */
export const PUSH_PARAM_NAMES: readonly string[] = [
  'pn-provider',
  'pn-prid',
  'pn-param',
  'pn-purr',
  'pn-silent',
  'pn-timeout',
  'pn-msg-str',
  'pn-call-str',
  'pn-groupchat-str',
  'pn-call-snd',
  'pn-msg-snd',
  'pn-call-remote-push-interval',
  'pn-missing-call-str',
  'pn-call-accepted-elsewhere-str',
  'pn-call-declined-elsewhere-str',
  'pn-type',
  'pn-tok',
  'app-id',
];

/** True for a push parameter name (case-insensitive): every `pn-*` and Linphone's `app-id`; the one rule is src/sip's. */
export { isPushParam } from '../sip/push-params.js';

/** Percent-decodes what decodes to valid UTF-8 and keeps anything else as written. */
export function decodeParam(value: string): string {
  if (!value.includes('%')) return value;
  return value.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/** Why push parameters that are present cannot be used. */
export interface PushParamProblem {
  readonly problem: string;
}

const APNS_PARAM_WITH_SERVICES = /^([^.]+)\.(.+)\.((?:voip|remote|&)+)$/;
const APNS_PARAM = /^([^.]+)\.(.+)$/;
const PRID_ONE = /^([^:]+)(?::(voip|remote))?$/;
const PRID_TYPED = /^([^:]+):(voip|remote)$/;

/**
 * Reads a binding's push parameters (Binding.pushParams: names as registered,
 * values as written). Null when there are none that name a device to push to;
 * a problem when they are there but unusable (logged by the caller, once).
 */
export function readPushTarget(params: Readonly<Record<string, string>>): PushTarget | PushParamProblem | null {
  const p = new Map<string, string>();
  for (const [k, v] of Object.entries(params)) if (isPushParam(k)) p.set(k.toLowerCase(), decodeParam(v).trim());
  const provider = p.get('pn-provider');
  if (provider !== undefined && provider !== '') return readRfc8599(provider.toLowerCase(), p);
  if ((p.get('pn-tok') ?? '') !== '') return readLegacy(p);
  return null;
}

/** readPushTarget without the reason: null for no usable push parameters. */
export function parsePushTarget(params: Readonly<Record<string, string>>): PushTarget | null {
  const r = readPushTarget(params);
  return r === null || 'problem' in r ? null : r;
}

export function isPushTarget(r: PushTarget | PushParamProblem | null): r is PushTarget {
  return r !== null && !('problem' in r);
}

function common(p: Map<string, string>): Omit<PushTarget, 'provider' | 'sandbox' | 'token' | 'voipToken' | 'param' | 'appId' | 'teamId' | 'legacy'> {
  const str = (k: string, dflt: string) => (p.get(k) || dflt);
  const interval = integerParam(p.get('pn-call-remote-push-interval'));
  return {
    callStr: str('pn-call-str', 'IC_MSG'),
    msgStr: str('pn-msg-str', 'IM_MSG'),
    groupChatStr: str('pn-groupchat-str', 'GC_MSG'),
    missedCallStr: str('pn-missing-call-str', 'Missing call'),
    acceptedElsewhereStr: str('pn-call-accepted-elsewhere-str', 'Accepted elsewhere'),
    declinedElsewhereStr: str('pn-call-declined-elsewhere-str', 'Declined elsewhere'),
    callSound: p.get('pn-call-snd') || null,
    msgSound: p.get('pn-msg-snd') || null,
    silent: p.get('pn-silent') === '1' || p.get('pn-silent')?.toLowerCase() === 'true',
    timeout: Math.max(0, integerParam(p.get('pn-timeout')) ?? 0),
    // Flexisip's bounds for the same parameter: [0;30], 0 switching repetition off.
    remotePushInterval: interval === null || interval <= 0 ? null : Math.min(interval, 30),
  };
}

function integerParam(v: string | undefined): number | null {
  if (v === undefined || !/^-?\d{1,9}$/.test(v)) return null;
  return Number(v);
}

function readRfc8599(rawProvider: string, p: Map<string, string>): PushTarget | PushParamProblem {
  const prid = p.get('pn-prid') ?? '';
  const param = p.get('pn-param') ?? '';
  if (prid === '') return { problem: 'pn-prid is missing' };
  // RFC 8599 names Firebase `fcm`; `firebase` and `android` are common mistakes with one meaning.
  const provider = rawProvider === 'firebase' || rawProvider === 'android' ? 'fcm' : rawProvider;
  if (provider === 'apns' || provider === 'apns.dev') return readApns(provider === 'apns.dev', prid, param, p);
  const base = { ...common(p), param, appId: param, teamId: null, sandbox: false, voipToken: null, legacy: false };
  // An FCM token never ends in ":remote"; some clients append the APNs-style type anyway.
  if (provider === 'fcm') return { ...base, provider, token: prid.replace(/:remote$/, '') };
  return { ...base, provider, token: prid };
}

function readApns(sandbox: boolean, prid: string, param: string, p: Map<string, string>): PushTarget | PushParamProblem {
  let teamId: string;
  let bundle: string;
  let services: Set<string>;
  let m = APNS_PARAM_WITH_SERVICES.exec(param);
  if (m) {
    [, teamId, bundle] = m;
    services = new Set(m[3].split('&').filter((s) => s !== ''));
  } else if ((m = APNS_PARAM.exec(param))) {
    // No service named: a remote-notification token (Flexisip reads it so too).
    [, teamId, bundle] = m;
    services = new Set(['remote']);
  } else {
    return { problem: `pn-param ${JSON.stringify(param)} is not TEAMID.bundle.id[.voip|.remote|.voip&remote]` };
  }
  const tokens = prid.split('&').filter((s) => s !== '');
  const found: Record<string, string> = {};
  if (tokens.length === 1) {
    const one = PRID_ONE.exec(tokens[0]);
    if (!one) return { problem: 'pn-prid is not TOKEN or TOKEN:voip|remote' };
    // An untyped single token belongs to the single service, else to remote (as Flexisip).
    const type = one[2] ?? (services.size === 1 ? [...services][0] : 'remote');
    found[type] = one[1];
  } else {
    for (const tok of tokens) {
      const typed = PRID_TYPED.exec(tok);
      if (!typed) return { problem: 'pn-prid with several tokens must be TOKEN:voip&TOKEN:remote' };
      found[typed[2]] = typed[1];
    }
  }
  for (const type of Object.keys(found)) {
    if (!services.has(type)) return { problem: `pn-prid has a ${type} token but pn-param does not declare ${type}` };
  }
  return {
    ...common(p),
    provider: 'apns',
    sandbox,
    token: found.remote ?? null,
    voipToken: found.voip ?? null,
    param,
    appId: bundle,
    teamId,
    legacy: false,
  };
}

function readLegacy(p: Map<string, string>): PushTarget | PushParamProblem {
  const type = (p.get('pn-type') ?? '').toLowerCase();
  const appId = p.get('app-id') ?? '';
  const tok = p.get('pn-tok') ?? '';
  if (type === '') return { problem: 'pn-tok without pn-type' };
  const base = { ...common(p), teamId: null, legacy: true };
  if (type === 'apple') {
    if (appId === '') return { problem: 'pn-type=apple without app-id' };
    // Linphone's legacy app-id is the bundle id, `.voip` for PushKit, then `.prod` or `.dev`.
    const env = /\.(prod|dev)$/.exec(appId);
    const bundleAndVoip = env ? appId.slice(0, env.index) : appId;
    const voip = bundleAndVoip.endsWith('.voip');
    const bundle = voip ? bundleAndVoip.slice(0, -'.voip'.length) : bundleAndVoip;
    return { ...base, provider: 'apns', sandbox: env?.[1] === 'dev', token: voip ? null : tok, voipToken: voip ? tok : null, param: appId, appId: bundle };
  }
  const provider = type === 'firebase' || type === 'android' || type === 'google' ? 'fcm' : type;
  return { ...base, provider, sandbox: false, token: tok, voipToken: null, param: appId, appId };
}

/** Identifies the device's push channel: two bindings with the same key are one device as far as pushing goes. */
export function targetKey(t: PushTarget): string {
  return `${t.provider}${t.sandbox ? '.dev' : ''}|${t.token ?? ''}|${t.voipToken ?? ''}`;
}
