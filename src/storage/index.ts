/** Where registrations live (issue 8): memory, a SQLite file (the default) or Redis. */
import type { StorageConfig } from '../config/types.js';
import { MemoryLocationStore, type LocationStore } from '../registrar/index.js';
import { SqliteLocationStore, type StoredBan } from './sqlite-store.js';

export { SqliteLocationStore, type SqliteStoreOptions, type StoredBan } from './sqlite-store.js';

export interface OpenedStore {
  store: LocationStore;
  /** Whether the store can be written now (portier_storage_up). */
  up(): boolean;
  /** Bans kept across restarts (and shared by the nodes of one Redis), when the store is persistent. */
  bans: { load(now: number): Promise<StoredBan[]>; save(ban: StoredBan): Promise<void> } | null;
}

export interface StorageLogger {
  warn(obj: object, msg: string): void;
}

/** Opens the configured store; rejects with a message naming the key when it cannot (Portier then does not start). */
export async function openStore(config: StorageConfig, log?: StorageLogger): Promise<OpenedStore> {
  switch (config.type) {
    case 'memory':
      return { store: new MemoryLocationStore(), up: () => true, bans: null };
    case 'sqlite': {
      const s = await SqliteLocationStore.open({ path: config.path, flushIntervalMs: config.flushInterval });
      return { store: s, up: () => s.lastError === null, bans: { load: async (now) => s.loadBans(now), save: async (b) => s.saveBan(b) } };
    }
    case 'redis': {
      const { RedisLocationStore } = await import('./redis-store.js');
      const s = await RedisLocationStore.open({ url: config.url, prefix: config.prefix, logger: log });
      return { store: s, up: () => s.up, bans: { load: (now) => s.loadBans(now), save: (b) => s.saveBan(b, Date.now()) } };
    }
  }
}
