// The transaction layer (RFC 3261 §17, RFC 6026): client and server
// transactions, INVITE and non-INVITE, on one timer wheel.

export { TransactionLayer, type TransactionLayerOptions } from './layer.js';
export { ServerTransaction, InviteServerTransaction, NonInviteServerTransaction } from './server.js';
export { ClientTransaction, InviteClientTransaction, NonInviteClientTransaction } from './client.js';
export {
  TransactionState,
  Timer,
  DEFAULT_TIMERS,
  type TransactionTimers,
  type TransactionTransport,
  type TransactionUser,
  type ClientTransactionOwner,
  type TransactionStats,
} from './types.js';
export { TimerWheel, TimerHandle, type TimerTarget, type TimerWheelOptions } from './timer-wheel.js';
export { newBranch, buildAck, buildAckBytes, buildCancel, BRANCH_COOKIE } from './messages.js';
export { responseDestination, isReliable } from './destination.js';
export { OverloadControl, statelessTag, type OverloadOptions, type RefusedClass } from './overload.js';
