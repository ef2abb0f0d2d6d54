#pragma once

#include <optional>
#include <string>

#include <runbookd/result.hpp>

// Where runbookctl finds runbookd and its token (docs/runbookctl.md, Connection).
namespace runbookd::ctl {

struct Connection {
    std::string url = "http://127.0.0.1:9095";
    std::string token;  // empty: send no credentials
    // For https:// URLs: the CA to trust (empty: the system's), and a client certificate.
    std::string ca_file, cert_file, key_file;
};

// The values given on the command line (nullopt: not given).
struct ConnectionFlags {
    std::optional<std::string> url;
    std::optional<std::string> token;
    std::optional<std::string> config;  // --config
    std::optional<std::string> ca_file, cert_file, key_file;
};

// The config file runbookctl reads when --config is not given:
// $XDG_CONFIG_HOME/runbookctl/config.yaml, else ~/.config/runbookctl/config.yaml.
std::string default_config_path();

// Resolves each setting from its flag, else its environment variable (RUNBOOKD_URL,
// RUNBOOKD_TOKEN, RUNBOOKD_CA_FILE, RUNBOOKD_CERT_FILE, RUNBOOKD_KEY_FILE), else the config
// file, else the default. A config file named
// with --config must exist; the default one may be missing. A bad file is an error with
// file:line:column.
Result<Connection> resolve_connection(const ConnectionFlags& flags);

}  // namespace runbookd::ctl
