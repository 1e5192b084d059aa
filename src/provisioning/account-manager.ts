// Portier's answer at the account-manager URLs the provisioning XML gives
// the apps (`[assistant] xmlrpc_url` = BASE/xmlrpc, `[account_creator] url`
// = BASE/api/), instead of Belledonne's (subscribe.linhome.org).
//
// What stock Linhome calls there, from its sources, is a "push gateway"
// account for a third-party SIP account (README, "Setting up the apps"):
// - builds of 2020-2022: XML-RPC `create_push_account(user-agent, domain,
//   algorithm)` at xmlrpc_url, answered with a struct whose first three
//   strings Linhome takes for username, domain and HA1 (linhome-android
//   LinhomeAccount.kt createPushGateway, linhome-ios LinhomeAccount.swift);
// - current builds: FlexiAPI at [account_creator] url: POST
//   account_creation_tokens/send-by-push (the token comes back in a push
//   notification), POST accounts/with-account-creation-token, GET
//   accounts/me/provision (liblinphone src/account_creator/
//   connector_flexiapi.cpp, flexi-api-client.cpp), started by
//   FlexiApiPushAccountCreationViewModel.createPushAccount.
// Both builds skip it when `[app] auto_create_push_gateway_account` is false,
// which the XML sets (provisioning.push-gateway: portier): a Portier account registers with its own push token
// and Portier wakes the app. So nothing here creates an account: FlexiAPI
// paths get 404 with FlexiAPI's JSON error shape, XML-RPC calls a fault,
// except create_push_account, which gets what Flexisip Account Manager
// answers a refused call with: a string result `ERROR_...` (src/xmlrpc/
// results_values.php). A fault would be worse there: liblinphone's
// XmlRpcSession reads a fault to a string-struct request as success with an
// empty list (coreapi/xmlrpc.c parse_valid_xml_rpc_response; checked with
// Debian's liblinphone 5.1), and Linhome would then index that empty list
// (`listResponse.get(1)`) and crash; a string result is
// LinphoneXmlRpcStatusFailed, and Linhome says "failed creating push gateway".
// Requests are parsed only after HTTP digest (server.ts), and the body is
// size-limited before it is read.

import { xmlEscape } from './xml.js';

/** Largest request body taken at these URLs: Linhome's create_push_account is about 400 bytes. */
export const MAX_REQUEST_BODY = 16 * 1024;

// Fault codes of the "Specification for Fault Code Interoperability" (xmlrpc-epi), which
// XML-RPC servers commonly follow.
export const FAULT = {
  notWellFormed: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  application: -32500,
} as const;

export type XmlRpcValue = { type: 'string'; value: string } | { type: 'int'; value: number } | { type: 'other'; tag: string };

export interface MethodCall {
  method: string;
  params: XmlRpcValue[];
}

/** A fault, or a string result; `method` when the request named one (for the log). */
export type XmlRpcAnswer = { method: string | null } & ({ fault: { code: number; message: string } } | { result: string });

/** create_push_account's answer, in Flexisip Account Manager's style of refusal ("disabled features"). */
export const PUSH_ACCOUNT_REFUSED = 'ERROR_PUSH_GATEWAY_DISABLED';

// ------------------------------------------------------------ a small XML reader

interface XmlNode {
  name: string;
  children: XmlNode[];
  /** Concatenated character data directly inside the element. */
  text: string;
}

class NotWellFormed extends Error {}

const NAME = /^[A-Za-z_][A-Za-z0-9_.:-]*/;
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const MAX_DEPTH = 16;
const MAX_NODES = 2000;

/** Character data with its five predefined entities and character references decoded; any other `&` is not XML. */
function decodeText(s: string): string {
  return s.replace(/&(?:(#x[0-9A-Fa-f]{1,6}|#[0-9]{1,7}|[A-Za-z]{1,8});)?/g, (_, ref: string | undefined) => {
    if (ref === undefined) throw new NotWellFormed('an & that starts no entity reference');
    if (ref[0] !== '#') {
      if (!Object.hasOwn(ENTITIES, ref)) throw new NotWellFormed(`unknown entity &${ref};`);
      return ENTITIES[ref];
    }
    const cp = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : Number(ref.slice(1));
    if (cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw new NotWellFormed(`&${ref}; is no character`);
    return String.fromCodePoint(cp);
  });
}

/**
 * Elements, attributes (skipped), character data, CDATA and comments; no
 * DOCTYPE (so no entity can be declared or expanded) and no processing
 * instruction but the XML declaration. One pass, bounded depth and size.
 */
function parseXml(src: string): XmlNode {
  let i = src.charCodeAt(0) === 0xfeff ? 1 : 0;
  const decl = /^<\?xml\s[^?]*\?>/.exec(src.slice(i, i + 200));
  if (decl !== null) i += decl[0].length;
  const stack: XmlNode[] = [];
  let root: XmlNode | null = null;
  let nodes = 0;
  const text = (s: string) => {
    if (stack.length > 0) stack[stack.length - 1].text += s;
    else if (s.trim() !== '') throw new NotWellFormed('text outside the root element');
  };
  while (i < src.length) {
    const lt = src.indexOf('<', i);
    if (lt < 0) {
      text(decodeText(src.slice(i)));
      break;
    }
    if (lt > i) text(decodeText(src.slice(i, lt)));
    if (src.startsWith('<!--', lt)) {
      const end = src.indexOf('-->', lt + 4);
      if (end < 0) throw new NotWellFormed('unterminated comment');
      i = end + 3;
    } else if (src.startsWith('<![CDATA[', lt)) {
      const end = src.indexOf(']]>', lt + 9);
      if (end < 0 || stack.length === 0) throw new NotWellFormed('bad CDATA section');
      text(src.slice(lt + 9, end));
      i = end + 3;
    } else if (src.startsWith('<!', lt) || src.startsWith('<?', lt)) {
      throw new NotWellFormed('DOCTYPE and processing instructions are not accepted');
    } else if (src.startsWith('</', lt)) {
      const m = NAME.exec(src.slice(lt + 2, lt + 2 + 200));
      const end = src.indexOf('>', lt);
      const open = stack.pop();
      if (m === null || end < 0 || open === undefined || open.name !== m[0] || src.slice(lt + 2 + m[0].length, end).trim() !== '') {
        throw new NotWellFormed('mismatched end tag');
      }
      i = end + 1;
    } else {
      const m = NAME.exec(src.slice(lt + 1, lt + 1 + 200));
      if (m === null) throw new NotWellFormed('bad element name');
      let j = lt + 1 + m[0].length;
      // Attributes: name="value" or name='value', skipped.
      for (;;) {
        const a = /^\s+[A-Za-z_][A-Za-z0-9_.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*')/.exec(src.slice(j, j + 4096));
        if (a === null) break;
        j += a[0].length;
      }
      const close = /^\s*(\/?)>/.exec(src.slice(j, j + 200));
      if (close === null) throw new NotWellFormed(`bad start tag <${m[0]}>`);
      if (root !== null && stack.length === 0) throw new NotWellFormed('more than one root element');
      if (++nodes > MAX_NODES || stack.length >= MAX_DEPTH) throw new NotWellFormed('too deep or too many elements');
      const node: XmlNode = { name: m[0], children: [], text: '' };
      if (stack.length > 0) stack[stack.length - 1].children.push(node);
      else root = node;
      if (close[1] !== '/') stack.push(node);
      i = j + close[0].length;
    }
  }
  if (root === null || stack.length > 0) throw new NotWellFormed(root === null ? 'no root element' : `<${stack[stack.length - 1].name}> is not closed`);
  return root;
}

// ------------------------------------------------------------ XML-RPC

class Invalid extends Error {}

function only(node: XmlNode, name: string): XmlNode[] {
  if (node.text.trim() !== '' || node.children.some((c) => c.name !== name)) throw new Invalid(`<${node.name}> may only hold <${name}>`);
  return node.children;
}

function value(v: XmlNode): XmlRpcValue {
  if (v.children.length === 0) return { type: 'string', value: v.text }; // XML-RPC: no type element means string
  if (v.children.length > 1 || v.text.trim() !== '') throw new Invalid('a <value> holds one typed element');
  const typed = v.children[0];
  if (typed.name === 'string') {
    if (typed.children.length > 0) throw new Invalid('<string> holds text');
    return { type: 'string', value: typed.text };
  }
  if (typed.name === 'int' || typed.name === 'i4') {
    const n = Number(typed.text.trim());
    if (!/^[+-]?\d{1,10}$/.test(typed.text.trim()) || n < -(2 ** 31) || n >= 2 ** 31) throw new Invalid('<int> out of range');
    return { type: 'int', value: n };
  }
  return { type: 'other', tag: typed.name };
}

/** The method and parameters of an XML-RPC methodCall; throws NotWellFormed or Invalid. */
export function parseMethodCall(body: string): MethodCall {
  const root = parseXml(body);
  if (root.name !== 'methodCall' || root.text.trim() !== '') throw new Invalid('the root element is not <methodCall>');
  const names = root.children.filter((c) => c.name === 'methodName');
  const params = root.children.filter((c) => c.name === 'params');
  if (names.length !== 1 || params.length > 1 || root.children.length !== names.length + params.length) throw new Invalid('<methodCall> holds one <methodName> and at most one <params>');
  const method = names[0].text.trim();
  if (names[0].children.length > 0 || !/^[A-Za-z0-9_.:/]{1,128}$/.test(method)) throw new Invalid('bad <methodName>');
  const values = (params.length === 0 ? [] : only(params[0], 'param')).map((p) => {
    const v = only(p, 'value');
    if (v.length !== 1) throw new Invalid('a <param> holds one <value>');
    return value(v[0]);
  });
  return { method, params: values };
}

/** What Portier answers one XML-RPC request body with (see the top of this file). */
export function answerXmlRpc(body: string): XmlRpcAnswer {
  let call: MethodCall;
  try {
    call = parseMethodCall(body);
  } catch (err) {
    if (err instanceof NotWellFormed) return { method: null, fault: { code: FAULT.notWellFormed, message: `parse error. not well formed: ${err.message}` } };
    if (err instanceof Invalid) return { method: null, fault: { code: FAULT.invalidRequest, message: `server error. invalid xml-rpc. not conforming to spec: ${err.message}` } };
    throw err;
  }
  const method = call.method;
  if (method !== 'create_push_account') return { method, fault: { code: FAULT.methodNotFound, message: `server error. requested method ${method} not found` } };
  // Lindoor sent the user agent only; Linhome adds [assistant] domain and password_algo.
  if (call.params.length < 1 || call.params.length > 3 || call.params.some((p) => p.type !== 'string')) {
    return { method, fault: { code: FAULT.invalidParams, message: 'server error. invalid method parameters: create_push_account takes 1 to 3 strings' } };
  }
  return { method, result: PUSH_ACCOUNT_REFUSED };
}

/** The methodResponse for an answer: a fault (XML-RPC spec: sent with HTTP 200), or one string. */
export function renderXmlRpc(answer: XmlRpcAnswer): string {
  const value =
    'result' in answer
      ? [`  <params>`, `    <param><value><string>${xmlEscape(answer.result)}</string></value></param>`, `  </params>`]
      : [
          '  <fault>',
          '    <value>',
          '      <struct>',
          `        <member><name>faultCode</name><value><int>${answer.fault.code}</int></value></member>`,
          `        <member><name>faultString</name><value><string>${xmlEscape(answer.fault.message)}</string></value></member>`,
          '      </struct>',
          '    </value>',
          '  </fault>',
        ];
  return ['<?xml version="1.0" encoding="UTF-8"?>', '<methodResponse>', ...value, '</methodResponse>', ''].join('\n');
}

/** FlexiAPI's error body (Laravel's `{"message": ...}`) for the paths Portier does not serve: all of them. */
export const FLEXIAPI_NOT_FOUND = `${JSON.stringify({ message: 'Not offered by Portier: no push gateway account, the provisioned account registers for push notifications itself' })}\n`;
