/*
 * A liblinphone client for test/provisioning/account-manager.test.ts, built
 * at test time against Debian's liblinphone.so.10 (5.1; no headers are
 * installed, so the few functions used are declared here with opaque
 * pointers). It does what Linhome does with Portier's provisioning:
 *
 *   1. starts a core whose rc holds only the test CA and [misc] config-uri
 *      (the provisioning link), and waits until the XML is applied;
 *   2. prints the account-manager settings the XML left in the config;
 *   3. calls XML-RPC create_push_account(user agent, domain, algorithm) at
 *      [assistant] xmlrpc_url, as linhome-android's LinhomeAccount.kt
 *      createPushGateway did (liblinphone's XmlRpcSession: POST text/xml,
 *      From: the default account, digest from the core's auth info);
 *   3b. calls an XML-RPC method Portier does not know, the same way: Portier
 *      answers with a fault, which liblinphone reports as success with an
 *      empty list (why create_push_account gets a string refusal instead);
 *   4. asks FlexiAPI at [account_creator] url for an account-creation token
 *      by push, the first step of FlexiApiPushAccountCreationViewModel
 *      (linphone_account_creator_send_token_flexiapi).
 *
 * Output: one `key=value` line per fact, values with newlines escaped.
 * Usage: liblinphone-client RC DOMAIN
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void *linphone_factory_get(void);
extern void *linphone_factory_create_core_3(void *factory, const char *config_path, const char *factory_config_path, void *system_context);
extern int linphone_core_start(void *core);
extern void linphone_core_iterate(void *core);
extern void *linphone_core_get_config(void *core);
extern void *linphone_core_get_default_account(void *core);
extern const char *linphone_core_get_user_agent(void *core);
extern const char *linphone_config_get_string(void *config, const char *section, const char *key, const char *default_value);
extern void *linphone_core_create_xml_rpc_session(void *core, const char *url);
extern void *linphone_xml_rpc_session_create_request(void *session, int return_type, const char *method);
extern void linphone_xml_rpc_request_add_string_arg(void *request, const char *value);
extern void linphone_xml_rpc_session_send_request(void *session, void *request);
extern int linphone_xml_rpc_request_get_status(void *request);
extern const char *linphone_xml_rpc_request_get_raw_response(void *request);
extern const char *linphone_xml_rpc_request_get_content(void *request);
extern void *linphone_xml_rpc_request_get_list_response(void *request);
extern void *linphone_core_create_account_creator(void *core, const char *xmlrpc_url);
extern void linphone_account_creator_set_pn_provider(void *creator, const char *value);
extern void linphone_account_creator_set_pn_param(void *creator, const char *value);
extern void linphone_account_creator_set_pn_prid(void *creator, const char *value);
extern void *linphone_factory_create_account_creator_cbs(void *factory);
extern void linphone_account_creator_cbs_set_send_token(void *cbs, void (*cb)(void *creator, int status, const char *response));
extern void linphone_account_creator_add_callbacks(void *creator, void *cbs);
extern int linphone_account_creator_send_token_flexiapi(void *creator);

enum { XmlRpcArgStringStruct = 3 };      /* LinphoneXmlRpcArgType: None, Int, String, StringStruct */
enum { XmlRpcStatusPending = 0 };        /* LinphoneXmlRpcStatus: Pending, Ok, Failed */

static int token_status = -1;

static void on_send_token(void *creator, int status, const char *response) {
	(void)creator;
	(void)response;
	token_status = status;
}

static void print(const char *key, const char *value) {
	printf("%s=", key);
	for (const char *c = value ? value : "(null)"; *c; c++) {
		if (*c == '\n') fputs("\\n", stdout);
		else if (*c != '\r') putchar(*c);
	}
	putchar('\n');
	fflush(stdout);
}

/* Iterates the core until done() or `seconds` pass; 0 on time-out. */
static int run(void *core, int seconds, int (*done)(void *), void *arg) {
	time_t end = time(NULL) + seconds;
	while (time(NULL) < end) {
		linphone_core_iterate(core);
		if (done(arg)) return 1;
		usleep(20000);
	}
	return 0;
}

static int provisioned(void *core) {
	return linphone_config_get_string(linphone_core_get_config(core), "account_creator", "url", NULL) != NULL && linphone_core_get_default_account(core) != NULL;
}

static int answered(void *request) {
	return linphone_xml_rpc_request_get_status(request) != XmlRpcStatusPending;
}

static int token_answered(void *unused) {
	(void)unused;
	return token_status != -1;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s RC DOMAIN\n", argv[0]);
		return 2;
	}
	void *factory = linphone_factory_get();
	void *core = linphone_factory_create_core_3(factory, argv[1], NULL, NULL);
	if (core == NULL || linphone_core_start(core) != 0) {
		print("error", "cannot start the core");
		return 1;
	}
	int ok = run(core, 20, (int (*)(void *))provisioned, core);
	print("provisioned", ok ? "yes" : "no");
	if (!ok) return 1;
	void *config = linphone_core_get_config(core);
	print("auto_create_push_gateway_account", linphone_config_get_string(config, "app", "auto_create_push_gateway_account", NULL));
	const char *xmlrpc_url = linphone_config_get_string(config, "assistant", "xmlrpc_url", NULL);
	print("xmlrpc_url", xmlrpc_url);
	print("account_creator_url", linphone_config_get_string(config, "account_creator", "url", NULL));

	void *session = linphone_core_create_xml_rpc_session(core, xmlrpc_url);
	void *request = linphone_xml_rpc_session_create_request(session, XmlRpcArgStringStruct, "create_push_account");
	linphone_xml_rpc_request_add_string_arg(request, linphone_core_get_user_agent(core));
	linphone_xml_rpc_request_add_string_arg(request, argv[2]);
	linphone_xml_rpc_request_add_string_arg(request, "SHA-256");
	print("xmlrpc_request", linphone_xml_rpc_request_get_content(request));
	linphone_xml_rpc_session_send_request(session, request);
	ok = run(core, 20, (int (*)(void *))answered, request);
	char status[16];
	snprintf(status, sizeof status, "%d", ok ? linphone_xml_rpc_request_get_status(request) : -1);
	print("xmlrpc_status", status);
	print("xmlrpc_response", linphone_xml_rpc_request_get_raw_response(request));

	void *probe = linphone_xml_rpc_session_create_request(session, XmlRpcArgStringStruct, "get_push_account_probe");
	linphone_xml_rpc_request_add_string_arg(probe, "x");
	linphone_xml_rpc_session_send_request(session, probe);
	ok = run(core, 20, (int (*)(void *))answered, probe);
	snprintf(status, sizeof status, "%d", ok ? linphone_xml_rpc_request_get_status(probe) : -1);
	print("fault_status", status);
	print("fault_list", linphone_xml_rpc_request_get_list_response(probe) == NULL ? "empty" : "not empty");

	void *creator = linphone_core_create_account_creator(core, NULL);
	void *cbs = linphone_factory_create_account_creator_cbs(factory);
	linphone_account_creator_cbs_set_send_token(cbs, on_send_token);
	linphone_account_creator_add_callbacks(creator, cbs);
	linphone_account_creator_set_pn_provider(creator, "fcm");
	linphone_account_creator_set_pn_param(creator, "linhome-test-project");
	linphone_account_creator_set_pn_prid(creator, "a-device-token");
	snprintf(status, sizeof status, "%d", linphone_account_creator_send_token_flexiapi(creator));
	print("flexiapi_sent", status);
	ok = run(core, 20, token_answered, NULL);
	snprintf(status, sizeof status, "%d", ok ? token_status : -1);
	print("flexiapi_status", status);
	print("done", "yes");
	return 0;
}
