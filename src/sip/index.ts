// The SIP message layer: parsing, validation, inspection, changes and
// serialization of SIP messages. Knows nothing of sockets.

export { parseAndValidate, SipParseError, DEFAULT_PARSE_LIMITS, type ParseLimits, type ParseOptions } from './parser.js';
export { SipMessage, HeaderField, splitList, type CSeq } from './message.js';
export { Uri, parseUri, hostForUri, stripBrackets, type UriParams } from './uri.js';
export { NameAddr, parseNameAddr, parseNameAddrList } from './address.js';
export { Via, parseVias } from './via.js';
export { headerKey, headerDisplayName, LIST_HEADERS } from './names.js';
export type { Params } from './params.js';
export { unquote, quote } from './chars.js';
export { detach } from './detach.js';
export {
  buildResponse,
  buildResponseBytes,
  reasonPhrase,
  randomToken,
  responseAddress,
  responsePort,
  stampedVia,
  REASON_PHRASES,
  type ResponseOptions,
} from './response.js';
export { parseCredentials, type Credentials } from './credentials.js';
export { StreamFramer, findContentLength, type FramerLimits, type FramerSink } from './framer.js';
export { isPushParam, scrubContactPush, withoutPushParams } from './push-params.js';
export { callIdHash, ownerOf } from './owner.js';
