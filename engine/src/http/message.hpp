#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include <runbookd/result.hpp>

namespace runbookd::metrics {
class Counter;
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
class Router {
  public:
    // Called for a request to the route that was refused before its handler ran (413, 431 by
    // the server; 400 for a body nested too deep).
    using RejectedHook = std::function<void(unsigned status)>;

    Router();
    void add(std::string method, std::string pattern, Handler handler,
             RejectedHook on_rejected = {});
    void dispatch(Request&& request, Responder respond) const;
    // Counts a request the server answered itself, before dispatch, with `status`.
    void rejected(std::string_view method, std::string_view path, unsigned status) const;

  private:
    using StatusCounters = std::array<metrics::Counter*, 5>;  // by status class, 1xx first
    struct Route {
        std::string method;
        std::string pattern;
        std::vector<std::string> segments;
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
};

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 9095;
    std::size_t body_limit = 8 * 1024 * 1024;
    std::size_t threads = 2;
    std::size_t max_connections = 1024;
    std::chrono::milliseconds idle_timeout{120'000};    // keep-alive, between requests
    std::chrono::milliseconds request_timeout{30'000};  // to receive one whole request
};

// The HTTP/1.1 listener: keep-alive, `Expect: 100-continue`, a body limit answered with 413,
// and a bounded number of connections and threads. Implemented on Boost.Beast in server.cpp.
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
