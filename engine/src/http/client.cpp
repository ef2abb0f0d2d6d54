#include "http/client.hpp"

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

}  // namespace

Result<ClientResponse> send_request(const std::string& method, const std::string& url,
                                    const std::string& body,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::chrono::milliseconds timeout) {
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
    bhttp::response_parser<bhttp::string_body> res;
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
                bhttp::async_read(stream, buffer, res,
                                  [&](beast::error_code ec4, std::size_t) { failure = ec4; });
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
    out.www_authenticate = std::string(res.get()[bhttp::field::www_authenticate]);
    out.body = std::move(res.get().body());
    return out;
}

}  // namespace runbookd::http
