#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include <runbookd/result.hpp>

#include "auth/access.hpp"

namespace runbookd::metrics {
class Counter;
}

namespace runbookd::auth {
struct Principal;
}

// HTTP requests and responses as plain values, so that handlers never see Boost.Beast types.
namespace runbookd::http {

struct Request {
    std::string method;                                        // "GET", "POST", ...
    std::string target;                                        // as received: path and query
    std::string path;                                          // target without the query
    std::string query;                                         // after '?', undecoded
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
    std::string body;
    std::string remote_addr;                                 // "127.0.0.1:53412"
    std::map<std::string, std::string, std::less<>> params;  // from the route pattern
    std::string route;                                       // the pattern it matched
    // Who sent it, once the router's guard has authenticated it; null on open routes and
    // when runbookd runs without tokens. See auth::actor().
    std::shared_ptr<const auth::Principal> principal;

    // The first value of a header (name in lower case), or empty.
    std::string_view header(std::string_view name) const;
    // A query parameter, percent-decoded, or empty.
    std::string query_param(std::string_view name) const;
};

// A response body produced piece by piece while the connection stays open (server-sent events).
// The server asks for the next piece once the previous one is written, and again after a short
// pause when nothing was ready; it ends the body early when runbookd stops or the client goes.
class BodyStream {
  public:
    struct Piece {
        std::string data;   // to send now; may be empty
        bool done = false;  // the body ends after `data`
    };
    virtual ~BodyStream() = default;
    // Runs on the connection's thread; must not block for long (a quick SQLite read is fine).
    virtual Piece next() = 0;
};

struct Response {
    unsigned status = 200;
    std::string content_type = "application/json";
    std::string body;
    // When set, produces the body on the connection's own thread just before writing, so that
    // a handler completing on another thread (the store's) can answer without doing the work
    // there and without an extra hop.
    std::function<std::string()> render_body;
    std::vector<std::pair<std::string, std::string>> headers;
    bool close = false;  // close the connection after this response
    // When set, the body is sent chunked from this stream instead of `body`, and the connection
    // closes when it ends.
    std::shared_ptr<BodyStream> stream;
};

// Sends the response. Call exactly once, from any thread.
using Responder = std::function<void(Response)>;
using Handler = std::function<void(Request&&, Responder)>;

Response json_response(unsigned status, const nlohmann::json& body);
// {"error": {"code": ..., "message": ..., "field": ...}}; `field` is left out when empty.
Response json_error(unsigned status, std::string_view code, std::string_view message,
                    std::string_view field = {});
// Maps an Error to a status (InvalidArgument 400, NotFound 404, Unavailable 503, ...).
Response error_response(const Error& error);

// How deep arrays and objects may nest in a request body; deeper bodies get 400 invalid_json.
constexpr std::size_t kJsonNestingLimit = 64;

// Routes requests by method and path. Patterns are exact paths whose segments may be `{name}`
// placeholders, e.g. "/api/v1/runs/{id}". An unknown path answers 404; a known path with
// another method answers 405 with an Allow header. Every answer is counted in
// runbookd_http_requests_total under its route pattern ("other" for unknown paths).
//
// Each route is added with its access (docs/auth.md). Before a protected route's handler runs,
// the guard checks the request; without a guard every protected route answers 503, so that
// nothing is served unchecked by mistake. Routes and the guard are set up before the server
// starts; dispatch() is then called from any io thread.
class Router {
  public:
    // Called for a request to the route that was refused before its handler ran (413, 431 by
    // the server; 400 for a body nested too deep).
    using RejectedHook = std::function<void(unsigned status)>;
    // Checks a request to a protected route: returns the answer refusing it, or nullopt to let
    // it through (after setting request.principal). `route` is the route's pattern.
    using Guard = std::function<std::optional<Response>(const auth::Access& access,
                                                        std::string_view route, Request& request)>;

    struct RouteInfo {
        std::string method;
        std::string pattern;
        auth::Access access;
    };

    Router();
    void add(std::string method, std::string pattern, auth::Access access, Handler handler,
             RejectedHook on_rejected = {});
    void set_guard(Guard guard) { guard_ = std::move(guard); }
    void dispatch(Request&& request, Responder respond) const;
    // Counts a request the server answered itself, before dispatch, with `status`.
    void rejected(std::string_view method, std::string_view path, unsigned status) const;
    // Every route with its access, in the order added (the auth tests walk this table).
    std::vector<RouteInfo> routes() const;

  private:
    using StatusCounters = std::array<metrics::Counter*, 5>;  // by status class, 1xx first
    struct Route {
        std::string method;
        std::string pattern;
        std::vector<std::string> segments;
        auth::Access access;
        Handler handler;
        RejectedHook on_rejected;
        StatusCounters requests{};
    };
    const Route* find(std::string_view method, const std::vector<std::string>& segments,
                      std::map<std::string, std::string, std::less<>>* params,
                      std::vector<std::string>* allowed) const;
    static void count(const StatusCounters& counters, unsigned status);

    std::vector<Route> routes_;
    StatusCounters unmatched_{};
    Guard guard_;
};

// TLS on the listener (docs/auth.md, TLS): PEM files. Off while cert_file is empty.
struct TlsOptions {
    std::string cert_file;       // certificate chain, the server's first
    std::string key_file;        // its private key
    std::string client_ca_file;  // set: clients must present a certificate signed by these CAs
    bool enabled() const { return !cert_file.empty(); }
};

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 9095;
    std::size_t body_limit = 8 * 1024 * 1024;
    std::size_t threads = 2;
    std::size_t max_connections = 1024;
    std::chrono::milliseconds idle_timeout{120'000};    // keep-alive, between requests
    std::chrono::milliseconds request_timeout{30'000};  // to receive one whole request
    TlsOptions tls;
};

// The HTTP/1.1 listener: keep-alive, `Expect: 100-continue`, a body limit answered with 413,
// a bounded number of connections and threads, and optional TLS (with client certificates).
// Implemented on Boost.Beast in server.cpp.
class Server {
  public:
    Server(ServerOptions options, const Router& router);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds and starts the worker threads. Fails when the address cannot be bound.
    Status start();

    std::uint16_t port() const;

    // Stops accepting, waits up to `drain` for requests in progress to be answered, then
    // closes every connection and joins the threads.
    void stop(std::chrono::milliseconds drain);

    struct Impl;  // defined in server.cpp, where the connection code needs it

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace runbookd::http
