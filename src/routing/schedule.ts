// Opening hours of a ring group: windows of days and local times in an IANA
// time zone. Outside them a group's calls go straight to its overflow.
//
// The clock is passed in (ms since the epoch) so tests inject the time
// instead of waiting for it, and so one call sees one decision.

import type { ScheduleWindow } from '../config/types.js';

export const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

/**
 * `mon-fri`, `sat`, `mon,wed,fri`, `fri-mon` (wraps over the weekend), `all`:
 * the days of the week, 0 = Sunday, ascending. Throws with a reason.
 */
export function parseDays(text: string): number[] {
  const days = new Set<number>();
  const t = text.trim().toLowerCase();
  if (t === 'all' || t === 'daily' || t === 'every day') return [0, 1, 2, 3, 4, 5, 6];
  for (const part of t.split(',')) {
    const range = part.trim().split('-');
    if (range.length > 2 || range[0] === '') throw new Error(`"${part.trim()}" is not a day or a range of days (mon-fri)`);
    const from = dayIndex(range[0]);
    const to = range.length === 2 ? dayIndex(range[1]) : from;
    for (let d = from, n = 0; n < 7; d = (d + 1) % 7, n++) {
      days.add(d);
      if (d === to) break;
    }
  }
  return [...days].sort((a, b) => a - b);
}

function dayIndex(name: string): number {
  const key = name.trim().slice(0, 3);
  const i = (DAY_NAMES as readonly string[]).indexOf(key);
  // "monday" and "mon" both name Monday; "mo" or "mond" do not.
  const full = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
  if (i < 0 || (name.trim() !== key && name.trim() !== full[i])) throw new Error(`unknown day "${name.trim()}" (expected ${DAY_NAMES.join(', ')})`);
  return i;
}

/** The days as the config would write them: `mon,tue,wed,thu,fri`. */
export function formatDays(days: readonly number[]): string {
  return days.map((d) => DAY_NAMES[d]).join(',');
}

/** `07:30` → 450; `24:00` is the end of the day (1440). Throws with a reason. */
export function parseClock(text: string): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(text.trim());
  if (m === null) throw new Error(`"${text}" is not a time of day (HH:MM, e.g. 07:30)`);
  const h = Number(m[1]);
  const min = Number(m[2]);
  if (min > 59 || h > 24 || (h === 24 && min !== 0)) throw new Error(`"${text}" is not a time of day (00:00 to 24:00)`);
  return h * 60 + min;
}

export function formatClock(minutes: number): string {
  return `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
}

/** Throws when `tz` is not a time zone this Node (its ICU data) knows. */
export function checkTimezone(tz: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
  } catch {
    throw new Error(`unknown time zone "${tz}" (an IANA name such as Europe/Paris)`);
  }
}

// Formatters are costly to build; one per zone, built on first use.
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Day of the week (0 = Sunday) and minutes after midnight at `now` in `tz`. */
export function localTime(now: number, tz: string): { day: number; minutes: number } {
  let f = formatters.get(tz);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(tz, f);
  }
  let day = 0;
  let hour = 0;
  let minute = 0;
  for (const p of f.formatToParts(now)) {
    if (p.type === 'weekday') day = (DAY_NAMES as readonly string[]).indexOf(p.value.toLowerCase());
    else if (p.type === 'hour') hour = Number(p.value);
    else if (p.type === 'minute') minute = Number(p.value);
  }
  return { day, minutes: hour * 60 + minute };
}

/**
 * Whether `now` falls in one of the windows. An empty schedule is always
 * open. A window whose `to` is before its `from` runs past midnight: it
 * opens on its days and closes the next morning.
 */
export function isOpen(windows: readonly ScheduleWindow[], tz: string, now: number): boolean {
  if (windows.length === 0) return true;
  const { day, minutes } = localTime(now, tz);
  const yesterday = (day + 6) % 7;
  for (const w of windows) {
    if (w.from <= w.to) {
      if (w.days.includes(day) && minutes >= w.from && minutes < w.to) return true;
    } else {
      if (w.days.includes(day) && minutes >= w.from) return true;
      if (w.days.includes(yesterday) && minutes < w.to) return true;
    }
  }
  return false;
}
