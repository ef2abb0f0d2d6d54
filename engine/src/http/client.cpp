#include "http/client.hpp"

#include <functional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

namespace runbookd::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;

struct Url {
    bool tls = false;
    std::string host;
    std::string port;
    std::string target;
};

Result<Url> parse_url(const std::string& url) {
    Url out;
    std::string rest;
    if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else if (url.rfind("https://", 0) == 0) {
        rest = url.substr(8);
        out.tls = true;
    } else {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("URL \"{}\" must start with http:// or https://", url));
    }
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
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
        out.port = out.tls ? "443" : "80";
    }
    if (out.host.empty()) {
        return make_error(ErrorCode::InvalidArgument, fmt::format("URL \"{}\" has no host", url));
    }
    return out;
}

using Parser = bhttp::response_parser<bhttp::string_body>;

// Reads the whole answer.
struct ReadWhole {
    template <class Stream>
    void operator()(Stream& stream, beast::flat_buffer& buffer, Parser& res,
                    beast::error_code& failure) const {
        bhttp::async_read(stream, buffer, res,
                          [&failure](beast::error_code ec, std::size_t) { failure = ec; });
    }
};

// Reads a streamed answer piece by piece (see stream_request), each wait bounded by
// `idle_timeout`.
struct ReadPieces {
    const std::function<bool(std::string_view)>& on_body;
    std::chrono::milliseconds idle_timeout;

    template <class Stream>
    void operator()(Stream& stream, beast::flat_buffer& buffer, Parser& res,
                    beast::error_code& failure) const {
        beast::get_lowest_layer(stream).expires_after(idle_timeout);
        bhttp::async_read_some(
            stream, buffer, res,
            [this, &stream, &buffer, &res, &failure](beast::error_code ec, std::size_t) {
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
                    (*this)(stream, buffer, res, failure);
                }
            });
    }
};

// Resolves, connects, shakes hands (TLS) and sends the request, then hands over to `read`.
// Returns the failure, and names the stage it happened in.
template <class Stream, class Read>
beast::error_code run_exchange(asio::io_context& io, Stream& stream, const Url& url,
                               bhttp::request<bhttp::string_body>& req, Parser& res,
                               std::string& stage, const Read& read) {
    asio::ip::tcp::resolver resolver(io);
    beast::flat_buffer buffer;
    beast::error_code failure;
    auto& tcp = beast::get_lowest_layer(stream);
    const auto send = [&] {
        stage = "sending";
        bhttp::async_write(stream, req, [&](beast::error_code ec, std::size_t) {
            if (ec) {
                failure = ec;
                return;
            }
            stage = "reading";
            read(stream, buffer, res, failure);
        });
    };
    stage = "resolving";
    resolver.async_resolve(url.host, url.port, [&](beast::error_code ec, auto results) {
        if (ec) {
            failure = ec;
            return;
        }
        stage = "connecting";
        tcp.async_connect(results, [&](beast::error_code ec2, auto) {
            if (ec2) {
                failure = ec2;
                return;
            }
            if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
                send();
            } else {
                stage = "in the TLS handshake";
                stream.async_handshake(ssl::stream_base::client, [&](beast::error_code ec3) {
                    if (ec3) {
                        failure = ec3;
                        return;
                    }
                    send();
                });
            }
        });
    });
    io.run();
    return failure;
}

// A client TLS context that verifies the server against `tls.ca_file` (or the system's CAs)
// and the URL's host.
Result<std::unique_ptr<ssl::context>> client_context(const ClientTls& tls) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    beast::error_code ec;
    if (tls.ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
    } else {
        ctx->load_verify_file(tls.ca_file, ec);
    }
    if (ec) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("cannot load CA file {}: {}", tls.ca_file, ec.message()));
    }
    if (!tls.cert_file.empty()) {
        if (ctx->use_certificate_chain_file(tls.cert_file, ec); !ec) {
            ctx->use_private_key_file(tls.key_file, ssl::context::pem, ec);
        }
        if (ec) {
            return make_error(ErrorCode::InvalidArgument,
                              fmt::format("cannot load client certificate {} or key {}: {}",
                                          tls.cert_file, tls.key_file, ec.message()));
        }
    }
    ctx->set_verify_mode(ssl::verify_peer);
    return ctx;
}

// One request on a new connection (TLS for https:// URLs); `read` reads the answer.
template <class Read>
Result<ClientResponse> exchange(const std::string& method, const std::string& url,
                                const std::string& body,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                std::chrono::milliseconds timeout, const ClientTls& tls,
                                const Read& read) {
    auto parsed = parse_url(url);
    if (!parsed) {
        return parsed.error();
    }
    asio::io_context io;
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
    std::string stage;
    if (parsed->tls) {
        auto ctx = client_context(tls);
        if (!ctx) {
            return ctx.error();
        }
        beast::ssl_stream<beast::tcp_stream> stream(io, **ctx);
        // SNI (for names, not addresses), and the name the certificate must carry.
        beast::error_code not_address;
        asio::ip::make_address(parsed->host, not_address);
        if (not_address) {
            SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                     TLSEXT_NAMETYPE_host_name, const_cast<char*>(parsed->host.c_str()));
        }
        stream.set_verify_callback(ssl::host_name_verification(parsed->host));
        beast::get_lowest_layer(stream).expires_after(timeout);
        failure = run_exchange(io, stream, *parsed, req, res, stage, read);
    } else {
        beast::tcp_stream stream(io);
        stream.expires_after(timeout);
        failure = run_exchange(io, stream, *parsed, req, res, stage, read);
    }
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

}  // namespace

Result<ClientResponse> send_request(const std::string& method, const std::string& url,
                                    const std::string& body,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::chrono::milliseconds timeout, const ClientTls& tls) {
    return exchange(method, url, body, headers, timeout, tls, ReadWhole{});
}

Result<ClientResponse> stream_request(
    const std::string& method, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::function<bool(std::string_view)>& on_body, std::chrono::milliseconds idle_timeout,
    const ClientTls& tls) {
    return exchange(method, url, {}, headers, idle_timeout, tls, ReadPieces{on_body, idle_timeout});
}

}  // namespace runbookd::http
