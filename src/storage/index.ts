/** Where registrations live (issue 8): memory, a SQLite file (the default) or Redis. */
import { randomBytes } from 'node:crypto';
import type { StorageConfig } from '../config/types.js';
import { MemoryLocationStore, type LocationStore } from '../registrar/index.js';
import { SqliteLocationStore, type StoredBan } from './sqlite-store.js';

export { SqliteLocationStore, type SqliteStoreOptions, type StoredBan } from './sqlite-store.js';

export interface OpenedStore {
  store: LocationStore;
  /** Whether the store can be written now (portier_storage_up). */
  up(): boolean;
  /** The server's secret (nonces, Record-Route tokens): kept with the store when it is persistent, so it survives restarts and is shared by nodes. */
  secret: Buffer;
  /** Bans kept across restarts (and shared by the nodes of one Redis), when the store is persistent. */
  bans: { load(now: number): Promise<StoredBan[]>; save(ban: StoredBan): Promise<void> } | null;
  /** Shared by several nodes: tells of AORs another node changed (so that calls ringing them here hear of new devices); null for a store of one process. */
  changes: { listen(onChange: (aor: string) => void): void } | null;
}

export interface StorageLogger {
  warn(obj: object, msg: string): void;
}

/** Opens the configured store; rejects with a message naming the key when it cannot (Portier then does not start). */
export async function openStore(config: StorageConfig, log?: StorageLogger): Promise<OpenedStore> {
  switch (config.type) {
    case 'memory':
      return { store: new MemoryLocationStore(), up: () => true, bans: null, secret: randomBytes(32), changes: null };
    case 'sqlite': {
      const s = await SqliteLocationStore.open({ path: config.path, flushIntervalMs: config.flushInterval });
      return { store: s, up: () => s.lastError === null, secret: s.secret(), bans: { load: async (now) => s.loadBans(now), save: async (b) => s.saveBan(b) }, changes: null };
    }
    case 'redis': {
      const { RedisLocationStore } = await import('./redis-store.js');
      const s = await RedisLocationStore.open({ url: config.url, prefix: config.prefix, logger: log });
      return {
        store: s,
        up: () => s.up,
        secret: await s.secret(),
        bans: { load: (now) => s.loadBans(now), save: (b) => s.saveBan(b, Date.now()) },
        changes: {
          listen(onChange) {
            s.onChange = onChange;
          },
        },
      };
    }
  }
}
