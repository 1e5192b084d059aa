// Byte-level framing of SIP over a stream transport (RFC 3261 §18.3).
//
// The framer only finds message boundaries: it reads the start of each
// message up to the blank line, takes Content-Length from the head and cuts
// head + body. Everything else about the message is the parser's business.
//
// Memory: a message that lies wholly inside one pushed chunk is delivered as
// a subarray of that chunk (zero copy) and therefore shares memory with it;
// the caller must not reuse the chunk's memory (Node's socket chunks are
// never reused). A message that spans chunks is copied exactly once into a
// Buffer of its own.

export interface FramerLimits {
  /** Whole message, head + body, in bytes. Default 65535. */
  maxMessageSize: number;
  /** Head including the blank line; defaults to maxMessageSize. */
  maxHeaderSize?: number;
}

export interface FramerSink {
  /** One complete message (head + body), a Buffer the sink may keep. */
  onFrame(message: Buffer): void;
  /** A double-CRLF keep-alive ping (RFC 5626 §4.4.1); the transport answers with a single CRLF pong. */
  onPing(): void;
  /** Unrecoverable; the caller closes the connection. The framer ignores further input. */
  onFramingError(reason: string): void;
}

export const DEFAULT_MAX_MESSAGE_SIZE = 65535;

// Reasons handed to onFramingError. Exported so callers can classify without
// parsing prose.
export const FRAMING_ERROR_MISSING_LENGTH = 'missing Content-Length';
export const FRAMING_ERROR_BAD_LENGTH = 'invalid Content-Length';
export const FRAMING_ERROR_HEAD_TOO_LARGE = 'message head too large';
export const FRAMING_ERROR_MESSAGE_TOO_LARGE = 'message too large';

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;
const TERMINATOR = Buffer.from('\r\n\r\n', 'latin1');
const NAME_LONG = Buffer.from('content-length', 'latin1');
const NAME_COMPACT = 0x6c; // 'l'
// Content-Length above this is invalid whatever the limits; keeps the digit
// accumulator exact.
const MAX_CONTENT_LENGTH = 0xffffffff;

// Parser state.
const IDLE = 0; // between messages: skipping CRLFs, watching for pings
const HEAD = 1; // a head is being collected in `head`
const BODY = 2; // head done, body being collected in `message`
const FAILED = 3; // after an error or close(): input is ignored

/**
 * Finds Content-Length (full name or compact `l`, any case, optional SP/HT
 * before the colon, value possibly folded onto continuation lines) in the head
 * `buf[start, headEnd)`, where `start` is the first byte of the start line and
 * `headEnd` is the offset just past the blank line (the body's offset).
 * Returns the length, -1 when absent, -2 when invalid (not a plain decimal
 * number, or several headers that disagree).
 */
export function findContentLength(buf: Buffer, start: number, headEnd: number): number {
  const end = Math.min(headEnd, buf.length);
  let result = -1;
  // Skip the start line.
  let lf = buf.indexOf(LF, start);
  if (lf === -1 || lf >= end) return -1;
  let pos = lf + 1;
  while (pos < end) {
    const c = buf[pos];
    if (c === CR || c === LF) break; // the blank line
    lf = buf.indexOf(LF, pos);
    const lineEnd = lf === -1 || lf >= end ? end : lf;
    // Cheap first-byte test: almost all lines are rejected here.
    if (c === 0x63 || c === 0x43 || c === NAME_COMPACT || c === 0x4c) {
      const valueStart = matchContentLengthName(buf, pos, lineEnd);
      if (valueStart !== -1) {
        const value = parseLengthValue(buf, valueStart, end);
        if (value < 0) return -2;
        if (result !== -1 && result !== value) return -2;
        result = value;
      }
    }
    pos = lineEnd + 1;
  }
  return result;
}

// Returns the offset just past the colon when the line at `pos` is a
// Content-Length header, else -1.
function matchContentLengthName(buf: Buffer, pos: number, lineEnd: number): number {
  let i = pos;
  if (lowerAscii(buf[i]) === NAME_COMPACT && i + 1 < lineEnd && !isTokenByte(buf[i + 1])) {
    i += 1;
  } else {
    if (lineEnd - i < NAME_LONG.length) return -1;
    for (let k = 0; k < NAME_LONG.length; k++) {
      if (lowerAscii(buf[i + k]) !== NAME_LONG[k]) return -1;
    }
    i += NAME_LONG.length;
  }
  while (i < lineEnd && (buf[i] === SP || buf[i] === HT)) i++;
  return i < lineEnd && buf[i] === COLON ? i + 1 : -1;
}

// Parses `*LWS 1*DIGIT *LWS` starting after the colon, following folded
// continuation lines. Returns -2 when it is not that.
function parseLengthValue(buf: Buffer, pos: number, end: number): number {
  let value = 0;
  let digits = 0;
  let afterDigits = false;
  let i = pos;
  while (i < end) {
    const b = buf[i];
    if (b >= 0x30 && b <= 0x39) {
      if (afterDigits) return -2; // "4 2"
      value = value * 10 + (b - 0x30);
      if (value > MAX_CONTENT_LENGTH) return -2;
      digits++;
      i++;
    } else if (b === SP || b === HT) {
      if (digits > 0) afterDigits = true;
      i++;
    } else if (b === CR || b === LF) {
      // End of line: the value goes on only if the next line is a continuation.
      let next = i + 1;
      if (b === CR && next < end && buf[next] === LF) next++;
      if (next < end && (buf[next] === SP || buf[next] === HT)) {
        if (digits > 0) afterDigits = true;
        i = next;
      } else {
        break;
      }
    } else {
      return -2;
    }
  }
  return digits === 0 ? -2 : value;
}

function lowerAscii(b: number): number {
  return b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
}

// Bytes that may continue a header name (RFC 3261 token), so that `lr:` or
// `l-foo:` is not taken for the compact `l`.
function isTokenByte(b: number): boolean {
  return b !== SP && b !== HT && b !== COLON && b > 0x20 && b < 0x7f;
}

/**
 * Cuts a SIP byte stream into messages. Not reentrant: a sink must not call
 * push() from inside its callbacks.
 */
export class StreamFramer {
  private readonly sink: FramerSink;
  private readonly maxMessage: number;
  private readonly maxHead: number;

  private state = IDLE;
  // IDLE: how many bytes of "\r\n\r\n" have been seen (0..3).
  private crlfSeen = 0;
  // HEAD: the bytes of an unfinished head, held across chunks. It never
  // contains the terminator, so only the last 3 bytes need looking at again
  // when more arrive: each byte is searched once, however the data trickles in.
  private head: Buffer | null = null;
  private headLen = 0;
  // BODY: the message's own buffer, sized exactly, filled up to messageLen.
  private message: Buffer | null = null;
  private messageLen = 0;

  constructor(sink: FramerSink, limits: FramerLimits) {
    this.sink = sink;
    this.maxMessage = limits.maxMessageSize > 0 ? limits.maxMessageSize : DEFAULT_MAX_MESSAGE_SIZE;
    const head = limits.maxHeaderSize ?? this.maxMessage;
    this.maxHead = Math.min(head > 0 ? head : this.maxMessage, this.maxMessage);
  }

  /** Bytes of an unfinished message held by the framer. */
  get buffered(): number {
    if (this.state === HEAD) return this.headLen;
    if (this.state === BODY) return this.messageLen;
    return 0;
  }

  /** True after a framing error or close(). */
  get failed(): boolean {
    return this.state === FAILED;
  }

  /** Stops delivery (also of the rest of a chunk being pushed) and frees buffers. */
  close(): void {
    this.state = FAILED;
    this.head = null;
    this.message = null;
    this.headLen = 0;
    this.messageLen = 0;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    const len = chunk.length;
    if (this.state === BODY) {
      pos = this.continueBody(chunk);
      if (pos === -1) return;
    } else if (this.state === HEAD) {
      pos = this.continueHead(chunk);
      if (pos === -1) return;
    }
    // Fast path: messages wholly inside the chunk are delivered in place.
    while (pos < len && this.state === IDLE) {
      pos = this.skipIdle(chunk, pos);
      if (pos >= len || this.state !== IDLE) break;
      pos = this.startMessage(chunk, pos);
    }
  }

  // Consumes CRLFs between messages; returns the offset of the first byte of
  // the next message (or len).
  private skipIdle(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    while (pos < len) {
      const b = chunk[pos];
      switch (this.crlfSeen) {
        case 0:
          if (b !== CR) return pos;
          this.crlfSeen = 1;
          pos++;
          break;
        case 1:
          // A CR not followed by LF is noise; it is dropped and `b` looked at afresh.
          this.crlfSeen = 0;
          if (b === LF) {
            this.crlfSeen = 2;
            pos++;
          }
          break;
        case 2:
          if (b === CR) {
            this.crlfSeen = 3;
            pos++;
          } else {
            // A lone CRLF between messages is skipped (RFC 3261 §7.5).
            this.crlfSeen = 0;
            return pos;
          }
          break;
        default:
          this.crlfSeen = 0;
          if (b === LF) {
            pos++;
            this.sink.onPing();
            if (this.state !== IDLE) return len; // closed from the callback
          }
          // else: CRLF skipped, stray CR dropped, `b` looked at afresh.
          break;
      }
    }
    return pos;
  }

  // A message starts at `pos` in `chunk` (not a CR). Returns where the next
  // one starts, or len when the rest was taken into the held state.
  private startMessage(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    const t = chunk.indexOf(TERMINATOR, pos);
    if (t === -1) {
      const have = len - pos;
      // Without the terminator in maxHead bytes the head must exceed maxHead.
      if (have >= this.maxHead) return this.fail(FRAMING_ERROR_HEAD_TOO_LARGE);
      this.holdHead(chunk, pos, len);
      return len;
    }
    const headEnd = t + 4;
    const headSize = headEnd - pos;
    if (headSize > this.maxHead) return this.fail(FRAMING_ERROR_HEAD_TOO_LARGE);
    const total = this.messageSize(chunk, pos, headEnd);
    if (total < 0) return len;
    const end = pos + total;
    if (end <= len) {
      this.sink.onFrame(chunk.subarray(pos, end));
      return end;
    }
    // The body goes on in later chunks: from here on the message is copied.
    this.beginBody(total, chunk, pos, len);
    return len;
  }

  // HEAD state: the head so far is in this.head. Returns the offset in `chunk`
  // past the message if it completed, else -1.
  private continueHead(chunk: Buffer): number {
    const len = chunk.length;
    const head = this.head as Buffer;
    const held = this.headLen;
    // The terminator may straddle the held bytes and the chunk: try ending it
    // after 1, 2 or 3 bytes of the chunk before searching the chunk itself.
    let headEndInChunk = -1;
    for (let j = 1; j <= 3 && j <= len; j++) {
      if (held < 4 - j) continue;
      if (straddles(head, held, chunk, j)) {
        headEndInChunk = j;
        break;
      }
    }
    if (headEndInChunk === -1) {
      const t = chunk.indexOf(TERMINATOR);
      if (t !== -1) headEndInChunk = t + 4;
    }
    if (headEndInChunk === -1) {
      if (held + len >= this.maxHead) {
        this.fail(FRAMING_ERROR_HEAD_TOO_LARGE);
        return -1;
      }
      this.holdHead(chunk, 0, len);
      return -1;
    }
    const headSize = held + headEndInChunk;
    if (headSize > this.maxHead) {
      this.fail(FRAMING_ERROR_HEAD_TOO_LARGE);
      return -1;
    }
    this.holdHead(chunk, 0, headEndInChunk);
    const total = this.messageSize(this.head as Buffer, 0, headSize);
    if (total < 0) return -1;
    // Build the message's own buffer from the held head, then the body as far
    // as this chunk has it.
    const message = Buffer.allocUnsafe(total);
    (this.head as Buffer).copy(message, 0, 0, headSize);
    this.head = null;
    this.headLen = 0;
    this.message = message;
    this.messageLen = headSize;
    this.state = BODY;
    const rest = chunk.subarray(headEndInChunk);
    const used = this.continueBody(rest);
    return used === -1 ? -1 : headEndInChunk + used;
  }

  // BODY state: fills the message buffer. Returns the offset in `chunk` past
  // the message if it completed, else -1.
  private continueBody(chunk: Buffer): number {
    const message = this.message as Buffer;
    const need = message.length - this.messageLen;
    const n = need < chunk.length ? need : chunk.length;
    chunk.copy(message, this.messageLen, 0, n);
    this.messageLen += n;
    if (this.messageLen < message.length) return -1;
    this.message = null;
    this.messageLen = 0;
    this.state = IDLE;
    this.sink.onFrame(message);
    return this.state === IDLE ? n : -1;
  }

  // Reads Content-Length from a complete head; returns head + body size, or
  // -1 after reporting an error.
  private messageSize(buf: Buffer, start: number, headEnd: number): number {
    const cl = findContentLength(buf, start, headEnd);
    if (cl === -1) return this.fail(FRAMING_ERROR_MISSING_LENGTH);
    if (cl === -2) return this.fail(FRAMING_ERROR_BAD_LENGTH);
    const total = headEnd - start + cl;
    if (total > this.maxMessage) return this.fail(FRAMING_ERROR_MESSAGE_TOO_LARGE);
    return total;
  }

  private beginBody(total: number, chunk: Buffer, from: number, to: number): void {
    const message = Buffer.allocUnsafe(total);
    chunk.copy(message, 0, from, to);
    this.message = message;
    this.messageLen = to - from;
    this.state = BODY;
  }

  // Appends chunk[from, to) to the held head, growing it geometrically so a
  // head arriving byte by byte costs amortised O(1) per byte.
  private holdHead(chunk: Buffer, from: number, to: number): void {
    const n = to - from;
    const need = this.headLen + n;
    let head = this.head;
    if (head === null || head.length < need) {
      let size = head === null ? 256 : head.length * 2;
      while (size < need) size *= 2;
      if (size > this.maxHead) size = Math.max(this.maxHead, need);
      const grown = Buffer.allocUnsafe(size);
      if (head !== null) head.copy(grown, 0, 0, this.headLen);
      head = grown;
      this.head = grown;
    }
    chunk.copy(head, this.headLen, from, to);
    this.headLen = need;
    this.state = HEAD;
  }

  private fail(reason: string): -1 {
    this.close();
    this.sink.onFramingError(reason);
    return -1;
  }
}

// True when the last 4-j held bytes and the first j bytes of `chunk` together
// make "\r\n\r\n".
function straddles(head: Buffer, held: number, chunk: Buffer, j: number): boolean {
  const fromHead = 4 - j;
  for (let k = 0; k < fromHead; k++) {
    if (head[held - fromHead + k] !== TERMINATOR[k]) return false;
  }
  for (let k = 0; k < j; k++) {
    if (chunk[k] !== TERMINATOR[fromHead + k]) return false;
  }
  return true;
}
