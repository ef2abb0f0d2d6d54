#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <runbookd/result.hpp>

namespace runbookd::http {

struct ClientResponse {
    unsigned status = 0;
    std::string content_type;
    std::string body;
    std::string retry_after;       // the Retry-After header, or empty
    std::string www_authenticate;  // the WWW-Authenticate header, or empty
};

// For https:// URLs: PEM files. Without ca_file the system's CAs are trusted. The server's
// certificate must name the URL's host (DNS name or IP address).
struct ClientTls {
    std::string ca_file;
    std::string cert_file;  // a client certificate, for servers that ask for one
    std::string key_file;
};

// One HTTP/1.1 request to an http:// or https:// URL, on a new connection, with a deadline for
// the whole exchange. Used by runbookctl and the tests; Beast stays inside client.cpp.
Result<ClientResponse> send_request(
    const std::string& method, const std::string& url, const std::string& body = {},
    const std::vector<std::pair<std::string, std::string>>& headers = {},
    std::chrono::milliseconds timeout = std::chrono::seconds(10), const ClientTls& tls = {});

// Like send_request, for a streamed answer (server-sent events): a 2xx body goes to `on_body`
// piece by piece as it arrives, and is not kept; `on_body` returns false to stop reading. Any
// other answer's body is kept in the result. `idle_timeout` bounds connecting and each wait for
// more data, not the whole exchange.
Result<ClientResponse> stream_request(
    const std::string& method, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::function<bool(std::string_view)>& on_body,
    std::chrono::milliseconds idle_timeout = std::chrono::seconds(60), const ClientTls& tls = {});

}  // namespace runbookd::http
