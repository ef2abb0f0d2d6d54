#include "http/client.hpp"

#include <functional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

namespace runbookd::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct Url {
    std::string host;
    std::string port;
    std::string target;
};

Result<Url> parse_url(const std::string& url) {
    constexpr std::string_view kScheme = "http://";
    if (url.rfind(kScheme, 0) != 0) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("URL \"{}\" must start with http://", url));
    }
    const std::string rest = url.substr(kScheme.size());
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    Url out;
    out.target = slash == std::string::npos ? "/" : rest.substr(slash);
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            return make_error(ErrorCode::InvalidArgument, fmt::format("bad URL \"{}\"", url));
        }
        out.host = authority.substr(1, close - 1);
        out.port = close + 2 <= authority.size() ? authority.substr(close + 2) : "";
    } else {
        const auto colon = authority.rfind(':');
        out.host = authority.substr(0, colon);
        out.port = colon == std::string::npos ? "" : authority.substr(colon + 1);
    }
    if (out.port.empty()) {
        out.port = "80";
    }
    if (out.host.empty()) {
        return make_error(ErrorCode::InvalidArgument, fmt::format("URL \"{}\" has no host", url));
    }
    return out;
}

using Parser = bhttp::response_parser<bhttp::string_body>;
// Reads the answer once the request is sent; sets `failure` when it fails.
using ReadAnswer = std::function<void(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                      Parser& res, beast::error_code& failure)>;

// Resolves, connects and sends the request within `timeout`, then hands over to `read`.
Result<ClientResponse> exchange(const std::string& method, const std::string& url,
                                const std::string& body,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                std::chrono::milliseconds timeout, const ReadAnswer& read) {
    auto parsed = parse_url(url);
    if (!parsed) {
        return parsed.error();
    }
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    beast::flat_buffer buffer;
    bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), parsed->target, 11);
    req.set(bhttp::field::host, parsed->host + ":" + parsed->port);
    req.set(bhttp::field::user_agent, "runbookctl/" RUNBOOKD_VERSION);
    for (const auto& [k, v] : headers) {
        req.set(k, v);
    }
    req.body() = body;
    req.prepare_payload();
    req.keep_alive(false);
    Parser res;
    res.body_limit(64 * 1024 * 1024);

    beast::error_code failure;
    std::string stage = "resolving";
    stream.expires_after(timeout);
    resolver.async_resolve(parsed->host, parsed->port, [&](beast::error_code ec, auto results) {
        if (ec) {
            failure = ec;
            return;
        }
        stage = "connecting";
        stream.async_connect(results, [&](beast::error_code ec2, auto) {
            if (ec2) {
                failure = ec2;
                return;
            }
            stage = "sending";
            bhttp::async_write(stream, req, [&](beast::error_code ec3, std::size_t) {
                if (ec3) {
                    failure = ec3;
                    return;
                }
                stage = "reading";
                read(stream, buffer, res, failure);
            });
        });
    });
    io.run();
    if (failure) {
        return make_error(ErrorCode::Unavailable, fmt::format("{} {} failed while {}: {}", method,
                                                              url, stage, failure.message()));
    }
    ClientResponse out;
    out.status = res.get().result_int();
    out.content_type = std::string(res.get()[bhttp::field::content_type]);
    out.retry_after = std::string(res.get()[bhttp::field::retry_after]);
    out.body = std::move(res.get().body());
    return out;
}

}  // namespace

Result<ClientResponse> send_request(const std::string& method, const std::string& url,
                                    const std::string& body,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::chrono::milliseconds timeout) {
    return exchange(method, url, body, headers, timeout,
                    [](beast::tcp_stream& stream, beast::flat_buffer& buffer, Parser& res,
                       beast::error_code& failure) {
                        bhttp::async_read(
                            stream, buffer, res,
                            [&failure](beast::error_code ec, std::size_t) { failure = ec; });
                    });
}

Result<ClientResponse> stream_request(
    const std::string& method, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::function<bool(std::string_view)>& on_body, std::chrono::milliseconds idle_timeout) {
    std::function<void(beast::tcp_stream&, beast::flat_buffer&, Parser&, beast::error_code&)>
        read_more = [&](beast::tcp_stream& stream, beast::flat_buffer& buffer, Parser& res,
                        beast::error_code& failure) {
            stream.expires_after(idle_timeout);
            bhttp::async_read_some(stream, buffer, res, [&](beast::error_code ec, std::size_t) {
                if (ec) {
                    failure = ec;
                    return;
                }
                // Only a 2xx body is streamed; an error's JSON is kept for the caller.
                auto& got = res.get().body();
                if (res.is_header_done() && res.get().result_int() / 100 == 2 && !got.empty()) {
                    if (!on_body(got)) {
                        return;
                    }
                    got.clear();
                }
                if (!res.is_done()) {
                    read_more(stream, buffer, res, failure);
                }
            });
        };
    return exchange(method, url, {}, headers, idle_timeout, read_more);
}

}  // namespace runbookd::http
