export { DoorRouter, type RouterOptions, type RoutingSettings } from './router.js';
export { RoutingNames, checkName, plainUser, type Ref } from './names.js';
export { isOpen, localTime, parseClock, parseDays, formatClock, formatDays, checkTimezone } from './schedule.js';
