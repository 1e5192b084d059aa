/** Prometheus metrics and the health endpoint (issue 9, first slice). */
export { CODE_CLASSES, METHODS, PARSE_ERROR_REASONS, SipCounters, methodSlot, type MethodLabel, type ParseErrorReason } from './counters.js';
export { createRegistry, type CallStats, type MetricsSources } from './registry.js';
export { MetricsHttpServer, type Health } from './http.js';
