/** Prometheus metrics, health and readiness, the status page (issue 9). */
export { CODE_CLASSES, METHODS, PARSE_ERROR_REASONS, SipCounters, methodSlot, type MethodLabel, type ParseErrorReason } from './counters.js';
export { createRegistry, PortierRegistry, REFUSAL_REASONS, type CallStats, type MetricsSources, type OverloadSources, type RefusalReason, type SecuritySources } from './registry.js';
export { MetricsHttpServer, type Health, type OperationsPages, type Readiness } from './http.js';
export { DeviceCensus, kindFromUserAgent, DEVICE_KINDS, DOOR_STATES, MAX_TRACKED, type DeviceKind, type DeviceSnapshot, type DeviceSources, type Door, type DoorState } from './devices.js';
export { renderStatus, escapeHtml, formatDuration, formatTime, type StatusInfo } from './status.js';
