import t from 'tap';
import { pino } from 'pino';
import { ConnectionTable, now, type CloseReason, type TableConnection } from '../../src/transport/connections.js';
import {
  createTransportStats,
  DEFAULT_TRANSPORT_LIMITS,
  endpointKey,
  TransportLayer,
  type TransportLimits,
  type TransportLog,
} from '../../src/transport/index.js';

class Fake implements TableConnection {
  readonly protocol = 'tcp' as const;
  readonly key: string;
  lastActivity: number;
  delivered = false;
  closedFor: CloseReason | null = null;
  constructor(
    private readonly table: ConnectionTable<Fake>,
    readonly id: number,
    readonly remoteAddress: string,
    port: number,
    readonly inbound: boolean,
    readonly openedAt: number,
    public connecting = false,
  ) {
    this.key = endpointKey('tcp', remoteAddress, port);
    this.lastActivity = openedAt;
  }
  timeout(reason: CloseReason): void {
    this.closedFor = reason;
    this.table.remove(this);
  }
}

const limits: TransportLimits = { ...DEFAULT_TRANSPORT_LIMITS, idleTimeoutMs: 1000, firstMessageTimeoutMs: 100, maxConnectionsPerSource: 2, maxConnections: 3 };

t.test('lookup, bounds and per-source counts', async (t) => {
  const stats = createTransportStats();
  const table = new ConnectionTable<Fake>(limits, stats);
  t.teardown(() => table.stop());
  const a = new Fake(table, table.nextId(), '10.0.0.1', 5060, true, now());
  const b = new Fake(table, table.nextId(), '10.0.0.1', 5061, true, now());
  t.ok(table.admitInbound('10.0.0.1'));
  table.add(a);
  t.ok(table.admitInbound('10.0.0.1'));
  table.add(b);
  t.notOk(table.admitInbound('10.0.0.1'), 'per-source bound');
  t.ok(table.admitInbound('10.0.0.2'), 'other sources unaffected');
  const c = new Fake(table, table.nextId(), '10.0.0.3', 5060, false, now());
  t.ok(table.admitOutbound());
  table.add(c);
  t.notOk(table.admitOutbound(), 'total bound');
  t.notOk(table.admitInbound('10.0.0.2'), 'total bound, inbound');
  t.equal(stats.dropped['connection-limit'], 3);
  t.equal(table.countFrom('10.0.0.1'), 2);
  t.equal(table.countFrom('10.0.0.3'), 0, 'outbound connections are not counted per source');
  t.equal(table.get(b.id), b);
  t.equal(table.find(endpointKey('tcp', '10.0.0.1', 5061)), b);
  t.equal(table.count('tcp'), 3);
  t.equal(table.count('tls'), 0);
  table.remove(a);
  table.remove(a);
  t.equal(table.countFrom('10.0.0.1'), 1, 'removal is idempotent');
  t.equal(table.find(a.key), undefined);
  t.ok(a.id < b.id && b.id < c.id, 'ids increase');
});

t.test('the sweep applies first-message, idle and connect timeouts', async (t) => {
  const stats = createTransportStats();
  const table = new ConnectionTable<Fake>(limits, stats);
  t.teardown(() => table.stop());
  const n = now();
  const fresh = new Fake(table, table.nextId(), '10.0.0.1', 1, true, n);
  const silent = new Fake(table, table.nextId(), '10.0.0.1', 2, true, n - 200);
  const talked = new Fake(table, table.nextId(), '10.0.0.2', 3, true, n - 200);
  talked.delivered = true;
  const idle = new Fake(table, table.nextId(), '10.0.0.2', 4, true, n - 5000);
  idle.delivered = true;
  idle.lastActivity = n - 1500;
  const outbound = new Fake(table, table.nextId(), '10.0.0.3', 5, false, n - 200);
  const connecting = new Fake(table, table.nextId(), '10.0.0.4', 6, false, n - 200, true);
  for (const f of [fresh, silent, talked, idle, outbound, connecting]) table.add(f);
  table.sweep();
  t.equal(fresh.closedFor, null);
  t.equal(silent.closedFor, 'first-message-timeout');
  t.equal(talked.closedFor, null);
  t.equal(idle.closedFor, 'idle');
  t.equal(outbound.closedFor, null, 'no first-message timeout for our own connections');
  t.equal(connecting.closedFor, 'connect-timeout');
  t.equal(stats.dropped.timeout, 3);
  t.equal(table.size, 3);
  table.sweep();
  t.equal(stats.dropped.timeout, 3, 'nothing counted twice');
});

t.test('a layer with no listeners, pino as its log', async (t) => {
  const log: TransportLog = pino({ level: 'silent' });
  const layer = new TransportLayer([], DEFAULT_TRANSPORT_LIMITS, { onMessage() {} }, log);
  await layer.start();
  t.same(layer.listening(), []);
  t.equal(layer.connectionCount(), 0);
  layer.send(Buffer.from('x'), { protocol: 'udp', address: '127.0.0.1', port: 5060 });
  layer.send(Buffer.from('x'), { protocol: 'ws', address: '127.0.0.1', port: 5060 });
  t.equal(layer.stats.dropped['send-error'], 2);
  await layer.stop();
  await layer.stop();
  await t.rejects(layer.start(), /cannot start/);
});
