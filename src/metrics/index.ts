/** Prometheus metrics and the health endpoint (issue 9, first slice). */
export { CODE_CLASSES, METHODS, PARSE_ERROR_REASONS, SipCounters, methodSlot, type MethodLabel, type ParseErrorReason } from './counters.js';
export { createRegistry, REFUSAL_REASONS, type CallStats, type MetricsSources, type RefusalReason, type SecuritySources } from './registry.js';
export { MetricsHttpServer, type Health } from './http.js';
