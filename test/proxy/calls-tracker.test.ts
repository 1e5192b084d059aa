import t from 'tap';
import { CallTracker } from '../../src/proxy/calls.js';

t.test('calls are counted from 2xx to BYE, bounded in size and time', async (t) => {
  const c = new CallTracker({ max: 2, ttlMs: 50 });
  c.established('a');
  c.established('a');
  t.same(c.stats(), { active: 1, established: 1, ended: 0, expired: 0 }, 'a re-INVITE of a known call is not a new call');
  c.ended('a');
  c.ended('a');
  t.same(c.stats(), { active: 0, established: 1, ended: 1, expired: 0 }, 'BYE ends it once');
  c.established('b');
  c.established('c');
  c.established('d');
  t.equal(c.stats().active, 2, 'size bound holds');
  t.equal(c.stats().expired, 1, 'the oldest was forgotten and counted');
  await new Promise((r) => setTimeout(r, 80));
  t.equal(c.stats().active, 0, 'a call whose BYE was lost is forgotten after the TTL');
  t.equal(c.stats().expired, 3, 'and counted as expired');
});

t.test('what a call carries comes back at its BYE, once, or to onForgotten when its BYE never comes', async (t) => {
  const forgotten: string[] = [];
  const c = new CallTracker<string>({ max: 10, ttlMs: 30, onForgotten: (call) => forgotten.push(call.record ?? '') });
  c.established('a', 1000, 'record a');
  c.established('b', 1000, 'record b');
  t.same(c.ended('a'), { at: 1000, record: 'record a' });
  t.equal(c.ended('a'), undefined, 'once');
  await new Promise((r) => setTimeout(r, 60));
  c.stats();
  t.same(forgotten, ['record b'], 'the call whose BYE was lost still reaches its log');
});
