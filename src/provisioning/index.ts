// Remote provisioning of Linhome/Linphone apps by QR code, and TURN credentials (README: "Setting up the apps").
export { ProvisioningServer, appSipServer, devicesFor, groupsOf, usedTokensPath, type ProvisioningDeps, type ProvisioningLog } from './server.js';
export { TokenRegistry, addToken, isTokenSyntax, newToken, parseTokens, seal, tokenId, unseal, type Lookup, type TokenRecord } from './tokens.js';
export { iceServer, turnCredentials, turnPassword, type IceServer, type TurnCredentials } from './turn.js';
export { LPCONFIG_NS, NAT_POLICY_REF, provisioningXml, renderLpConfig, vcardList, xmlEscape, type ProvisioningXml, type VcardDevice } from './xml.js';
