// Keeping sleeping apps registered (Flexisip's register-wakeup): a silent
// push to a device whose binding will expire within `leadMs`, so that the
// app wakes up and registers again before it falls off the registrar.
//
// Driven by the registrar's events: each registration (re)schedules one
// wake-up for its binding, each removal forgets it; one coarse interval
// timer sends what is due. Bindings loaded from storage at start are
// scheduled when they next register (they do before expiry when awake).

import { parsePushTarget } from './params.js';
import type { PushOutcome, PushRequest } from './types.js';

/** The part of a binding this needs (src/registrar's Binding has it). */
export interface WakeupBinding {
  readonly aor: string;
  readonly key: string;
  readonly contact: string;
  readonly expiresAt: number;
  readonly updatedAt: number;
  readonly instance: string | null;
  readonly pushParams: Readonly<Record<string, string>>;
}

interface Due {
  at: number;
  request: PushRequest;
}

export interface WakeupOptions {
  now?: () => number;
  /** How often due wake-ups are looked for, ms (0: never by itself; tests call tick()). */
  intervalMs?: number;
}

export class RegisterWakeup {
  private readonly due = new Map<string, Due>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  /** Wake-ups sent, for tests and logs. */
  sent = 0;

  constructor(
    private readonly push: { send(req: PushRequest): Promise<PushOutcome> },
    private readonly leadMs: number,
    opts: WakeupOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    const every = opts.intervalMs ?? 10_000;
    if (every > 0) {
      this.timer = setInterval(() => this.tick(), every);
      this.timer.unref();
    }
  }

  /** A binding was registered or refreshed: its wake-up is `leadMs` before it expires (halfway there when that is already past). */
  registered(b: WakeupBinding): void {
    const id = b.aor + '\n' + b.key;
    const target = Object.keys(b.pushParams).length > 0 ? parsePushTarget(b.pushParams) : null;
    if (target === null) {
      this.due.delete(id);
      return;
    }
    const now = this.now();
    let at = b.expiresAt - this.leadMs;
    // A registration shorter than the lead: wake it halfway, not at once (no push storm).
    if (at <= now) at = now + (b.expiresAt - now) / 2;
    this.due.set(id, {
      at,
      request: {
        target,
        kind: 'wakeup',
        callId: `wakeup-${b.updatedAt}@${b.aor.replace(/^sips?:/, '')}`,
        fromUri: b.aor,
        fromName: '',
        toUri: b.aor,
        instance: b.instance === null ? '' : b.instance.replace(/^<|>$/g, ''),
        binding: { aor: b.aor, key: b.key },
      },
    });
  }

  unregistered(b: { aor: string; key: string }): void {
    this.due.delete(b.aor + '\n' + b.key);
  }

  /** Sends the wake-ups that are due; each binding once per registration. */
  tick(): void {
    const now = this.now();
    for (const [id, d] of this.due) {
      if (d.at > now) continue;
      this.due.delete(id);
      this.sent++;
      void this.push.send(d.request).catch(() => {});
    }
  }

  /** Wake-ups waiting. */
  get size(): number {
    return this.due.size;
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.due.clear();
  }
}
