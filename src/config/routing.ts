// The routing sections of the configuration: `groups`, `aliases`, `policy`
// and `routes` (door stations → ring groups → overflow; numbers for a PBX).
// Each value is checked alone here; what needs the whole file (names that
// must exist, loops between groups) is checked by `checkRouting`.

import { checkName, RoutingNames, type Ref } from '../routing/names.js';
import { checkTimezone, formatClock, formatDays, parseClock, parseDays } from '../routing/schedule.js';
import { parseUri } from '../sip/index.js';
import { Invalid, boolean, integer, list, oneOf, record, section, text, type Field } from './schema.js';
import {
  DOOR_CALL_TARGETS,
  GROUP_STRATEGIES,
  type DoorCallTarget,
  type ExternalRoute,
  type GroupConfig,
  type GroupStrategy,
  type PolicyConfig,
  type ScheduleWindow,
} from './types.js';

const nameText = text<string>({
  convert(s) {
    try {
      checkName(s);
    } catch (err) {
      throw new Invalid((err as Error).message);
    }
    return s;
  },
  format: (s) => s,
  expected: 'a name',
});

const reference = text<string>({
  convert(s) {
    if (s.trim() === '') throw new Invalid('must not be empty');
    return s.trim();
  },
  format: (s) => s,
  expected: 'a group name, an account (user@domain) or a SIP URI',
});

const clock = (key: string): Field<number> =>
  text<number>({
    convert(s) {
      try {
        return parseClock(s);
      } catch (err) {
        throw new Invalid((err as Error).message);
      }
    },
    format: formatClock,
    expected: `a time of day in quotes (${key}: "07:30")`,
  });

const window: Field<ScheduleWindow> = section({
  days: text<number[]>({
    convert(s) {
      try {
        return parseDays(s);
      } catch (err) {
        throw new Invalid((err as Error).message);
      }
    },
    format: formatDays,
    expected: 'days such as mon-fri',
    default: () => [0, 1, 2, 3, 4, 5, 6],
  }),
  from: clock('from'),
  to: clock('to'),
}, {
  check(w, report) {
    if (w.from === w.to) report('to', 'must differ from "from" (an empty window)');
  },
});

const timezone = text<string>({
  convert(s) {
    try {
      checkTimezone(s);
    } catch (err) {
      throw new Invalid((err as Error).message);
    }
    return s;
  },
  format: (s) => s,
  expected: 'an IANA time zone such as Europe/Paris',
  // The machine's own zone; a city sets it explicitly (containers often run UTC).
  default: () => Intl.DateTimeFormat().resolvedOptions().timeZone,
});

const group: Field<GroupConfig> = section({
  members: list(reference, { min: 1, example: '[alice@example.test, bob@example.test]' }),
  strategy: oneOf<GroupStrategy>(GROUP_STRATEGIES, { default: 'parallel' }),
  'ring-time': integer({ min: 1, max: 3600, default: 25 }),
  overflow: {
    ...reference,
    parse: (v, p, c) => (v === null || v === false || v === 'off' ? null : reference.parse(v, p, c)),
    format: (v: string | null) => v ?? 'off',
    default: () => null,
  } as Field<string | null>,
  schedule: list(window, { default: () => [] }),
  timezone,
});

export const groups = record(group, { key: (k) => nameText.parse(k, [], { issues: [] }), default: () => ({}) });

export const aliases = record(reference, { key: (k) => nameText.parse(k, [], { issues: [] }), default: () => ({}) });

const doorTargets: Field<'any' | DoorCallTarget[]> = {
  parse(value, path, ctx) {
    if (value === 'any') return 'any';
    return list(oneOf<DoorCallTarget>(DOOR_CALL_TARGETS)).parse(value, path, ctx);
  },
  format: (v) => v,
  // Not other door stations, and not the PBX's numbers: a stolen door-station password must not call out.
  default: () => ['groups', 'aliases', 'phones'],
};

export const policy: Field<PolicyConfig> = section({
  'doors-may-call': doorTargets,
  'phones-may-call-phones': boolean({ default: true }),
  'phones-may-call-doors': boolean({ default: true }),
});

const route: Field<ExternalRoute> = section({
  match: text<string>({
    convert(s) {
      try {
        new RegExp(s);
      } catch (err) {
        throw new Invalid(`not a regular expression: ${(err as Error).message}`);
      }
      return s;
    },
    format: (s) => s,
    expected: 'a regular expression in quotes (match: "^\\\\+?33")',
  }),
  to: text<string>({
    convert(s) {
      const u = parseUri(s.trim());
      if (u === null || !u.isSip) throw new Invalid(`"${s}" is not a SIP URI (e.g. sip:pbx.example.test;transport=tcp)`);
      return s.trim();
    },
    format: (s) => s,
    expected: 'a SIP URI',
  }),
});

export const routes = list(route, { default: () => [] });

/**
 * Checks that need the whole configuration: every member, overflow and
 * alias names something that can exist, and no group reaches itself (by
 * nesting, or through its chain of overflows). Reports with the top-level key.
 */
export function checkRouting(c: { domains: string[]; groups: Record<string, GroupConfig>; aliases: Record<string, string> }, report: (key: string, reason: string) => void): void {
  let names: RoutingNames;
  try {
    names = new RoutingNames(c.domains, Object.keys(c.groups), c.aliases);
  } catch (err) {
    report('aliases', (err as Error).message);
    return;
  }
  const refs = new Map<string, { members: Ref[]; overflow: Ref | null }>();
  for (const [name, g] of Object.entries(c.groups)) {
    const members: Ref[] = [];
    g.members.forEach((m, i) => {
      try {
        members.push(names.resolve(m, name));
      } catch (err) {
        report('groups', `${name}.members[${i}]: ${(err as Error).message}`);
      }
    });
    let overflow: Ref | null = null;
    if (g.overflow !== null) {
      try {
        overflow = names.resolve(g.overflow);
      } catch (err) {
        report('groups', `${name}.overflow: ${(err as Error).message}`);
      }
    }
    refs.set(name, { members, overflow });
  }
  for (const name of refs.keys()) {
    const nested = memberCycle(name, refs, [name]);
    if (nested !== null) {
      report('groups', `${name}: the group contains itself: ${nested.join(' → ')}`);
      continue;
    }
    const chain = [name];
    for (let next = refs.get(name)?.overflow; next?.kind === 'group'; next = refs.get(next.name)?.overflow) {
      chain.push(next.name);
      if (next.name === name) {
        report('groups', `${name}: overflow loops back to the group: ${chain.join(' → ')}`);
        break;
      }
      if (chain.indexOf(next.name) < chain.length - 1) break; // a loop further on, reported for its own group
    }
  }
}

function memberCycle(name: string, refs: Map<string, { members: Ref[] }>, path: string[]): string[] | null {
  for (const m of refs.get(name)?.members ?? []) {
    if (m.kind !== 'group') continue;
    if (m.name === path[0]) return [...path, m.name];
    if (path.includes(m.name)) continue;
    const found = memberCycle(m.name, refs, [...path, m.name]);
    if (found !== null) return found;
  }
  return null;
}
