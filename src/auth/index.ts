/** Who gets in: accounts (HA1 only), digest authentication, trusted and exempt sources, rate limits and bans (issues 5 and 13). */
export { Authenticator, accountFor, type AuthFailureReason, type Gate, type GateKind, type Identity } from './authenticator.js';
export { DigestAuthenticator, type DigestAlgorithm, type DigestCheck, type DigestOptions } from './digest.js';
export { AddressSet, parseCidr, type Cidr } from './cidr.js';
export { SourceGuard, isScanner, SCANNER_USER_AGENTS, type Admission, type Ban, type GuardSettings } from './guard.js';
export { Accounts, loadUsersFile, type Account, type AccountKind, type UsersProblem } from './users.js';
