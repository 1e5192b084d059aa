// The registrar and its location service: REGISTER processing (RFC 3261
// §10.3), bindings and their store, GRUUs for the proxy.

export {
  Registrar,
  buildRegisterResponse,
  flowTimerFor,
  sortBindings,
  DEFAULT_REGISTRAR_CONFIG,
  REGISTRAR_OPTION_TAGS,
  type RegistrarConfig,
  type RegistrarOptions,
  type RegistrarEvents,
  type RegistrarStats,
  type RegisterResult,
  type RegisterOutcome,
  type UnbindCause,
} from './registrar.js';
export {
  MemoryLocationStore,
  type MemoryLocationStoreOptions,
  type LocationStore,
  type Binding,
  type GruuData,
  type ChangeSet,
  type UpdateDecision,
  type UpdateOutcome,
  type GruuRef,
  type GruuResolution,
  type BindingCounts,
} from './location-store.js';
export { aorOf, contactKey, canonicalDomain, instanceKey } from './aor.js';
export { gruuRefOf, pubGruuUri, tempGruuUri, TEMP_GRUU_PREFIX } from './gruu.js';
export { parseQ, pushParamsOf } from './contact.js';
export type { RemovalCause } from './plan.js';
