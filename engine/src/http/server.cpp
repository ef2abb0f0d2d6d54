#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

#include "common/log.hpp"
#include "http/message.hpp"

namespace runbookd::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

constexpr std::uint32_t kHeaderLimit = 16 * 1024;
// What the first read of a request takes at most; the parser reads the rest.
constexpr std::size_t kFirstReadBytes = 4096;
// How soon a streamed body is asked again after it had nothing to send.
constexpr std::chrono::milliseconds kStreamPollInterval{200};

}  // namespace

struct Server::Impl {
    Impl(ServerOptions o, const Router& r) : options(std::move(o)), router(r), acceptor(io) {}

    void accept();
    // Reads the TLS files into `tls`; a message naming the file on failure.
    Status setup_tls();
    void request_started() { ++in_flight; }
    void request_finished() {
        if (--in_flight == 0) {
            std::lock_guard lock(mutex);
            drained.notify_all();
        }
    }

    ServerOptions options;
    const Router& router;
    std::shared_ptr<spdlog::logger> log = log::get("http");
    std::atomic<std::size_t> connections{0};
    std::atomic<std::size_t> in_flight{0};
    std::atomic<bool> stopping{false};
    std::mutex mutex;
    std::condition_variable drained;
    std::uint16_t bound_port = 0;
    std::vector<std::thread> threads;
    std::optional<ssl::context> tls;  // set when options.tls is enabled
    // Declared last so that they are destroyed first: sessions still queued in the io_context
    // use the members above when they go.
    asio::io_context io;
    tcp::acceptor acceptor;
};

namespace {

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One connection: reads requests one after another, hands each to the router, and writes
// the answer. All of its handlers run on its strand. `Stream` is a tcp_stream, or an
// ssl_stream over one whose handshake start() performs first.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  public:
    template <class... Args>
    Session(Server::Impl& server, tcp::socket socket, Args&... tls)
        : stream_(std::move(socket), tls...), server_(server) {
        boost::system::error_code ec;
        const auto ep = tcp_().socket().remote_endpoint(ec);
        if (!ec) {
            const auto addr = ep.address();
            remote_ = addr.is_v6() ? fmt::format("[{}]:{}", addr.to_string(), ep.port())
                                   : fmt::format("{}:{}", addr.to_string(), ep.port());
        }
    }

    ~Session() { --server_.connections; }

    void start() {
        asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
            if constexpr (std::is_same_v<Stream, TlsStream>) {
                self->tcp_().expires_after(self->server_.options.request_timeout);
                self->stream_.async_handshake(
                    ssl::stream_base::server, [self](beast::error_code ec) {
                        if (ec) {
                            // Not HTTP yet: nothing to answer.
                            self->server_.log->debug("tls handshake failed remote={} error={}",
                                                     log::quote(self->remote_),
                                                     log::quote(ec.message()));
                            self->close();
                            return;
                        }
                        self->read_header();
                    });
            } else {
                self->read_header();
            }
        });
    }

  private:
    beast::tcp_stream& tcp_() { return beast::get_lowest_layer(stream_); }

    // Between requests the connection may stay idle for `idle_timeout`; once a request's first
    // byte arrives, all of it (headers and body) must arrive within `request_timeout`. A client
    // that trickles its headers a byte at a time is thus cut off after request_timeout, not
    // after the much longer keep-alive time.
    void read_header() {
        parser_.emplace();
        parser_->header_limit(kHeaderLimit);
        parser_->body_limit(server_.options.body_limit);
        if (buffer_.size() > 0) {
            read_request_header();
            return;
        }
        tcp_().expires_after(server_.options.idle_timeout);
        stream_.async_read_some(
            buffer_.prepare(kFirstReadBytes),
            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                if (ec) {
                    self->on_read_error(ec);
                    return;
                }
                self->buffer_.commit(n);
                self->read_request_header();
            });
    }

    void read_request_header() {
        tcp_().expires_after(server_.options.request_timeout);
        bhttp::async_read_header(stream_, buffer_, *parser_,
                                 [self = this->shared_from_this()](
                                     beast::error_code ec, std::size_t) { self->on_header(ec); });
    }

    void on_header(beast::error_code ec) {
        if (ec) {
            on_read_error(ec);
            return;
        }
        const auto& req = parser_->get();
        if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
            // Clients like curl wait for this before sending a large body.
            auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(
                bhttp::status::continue_, req.version());
            bhttp::async_write(
                stream_, *cont,
                [self = this->shared_from_this(), cont](beast::error_code e, std::size_t) {
                    if (e) {
                        self->close();
                        return;
                    }
                    self->read_body();
                });
            return;
        }
        read_body();
    }

    void read_body() {
        bhttp::async_read(stream_, buffer_, *parser_,
                          [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) {
                                  self->on_read_error(ec);
                                  return;
                              }
                              self->dispatch();
                          });
    }

    void on_read_error(beast::error_code ec) {
        if (ec == bhttp::error::body_limit) {
            count_rejected(413);
            send_error_and_close(json_error(
                413, "payload_too_large",
                fmt::format("request body exceeds the limit of {} bytes (http.body_limit)",
                            server_.options.body_limit)));
            return;
        }
        if (ec == bhttp::error::header_limit) {
            count_rejected(431);
            send_error_and_close(
                json_error(431, "headers_too_large",
                           fmt::format("request headers exceed {} bytes", kHeaderLimit)));
            return;
        }
        if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
            ec == asio::error::eof || ec == asio::error::connection_reset ||
            ec == asio::error::operation_aborted) {
            close();
            return;
        }
        // A malformed request: answer once and drop the connection, since the stream position
        // can no longer be trusted.
        count_rejected(400);
        send_error_and_close(json_error(400, "bad_request",
                                        fmt::format("malformed HTTP request: {}", ec.message())));
    }

    void dispatch() {
        auto& msg = parser_->get();
        Request req;
        req.method = std::string(msg.method_string());
        req.target = std::string(msg.target());
        const auto q = req.target.find('?');
        req.path = req.target.substr(0, q);
        if (q != std::string::npos) {
            req.query = req.target.substr(q + 1);
        }
        for (const auto& field : msg) {
            std::string name(field.name_string());
            for (auto& c : name) {
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
            req.headers.emplace_back(std::move(name), std::string(field.value()));
        }
        req.body = std::move(msg.body());
        req.remote_addr = remote_;
        keep_alive_ = msg.keep_alive();
        version_ = msg.version();

        server_.request_started();
        auto self = this->shared_from_this();
        Responder respond = [self](Response response) {
            asio::post(self->stream_.get_executor(), [self, r = std::move(response)]() mutable {
                self->write(std::move(r), false);
                self->server_.request_finished();
            });
        };
        try {
            server_.router.dispatch(std::move(req), std::move(respond));
        } catch (const std::exception& e) {
            // Handlers report failures as responses; an exception here is a bug. The responder
            // was moved into the handler, so answer directly.
            server_.log->error("handler threw error={}", log::quote(e.what()));
            count_rejected(500);
            write(json_error(500, "internal", "internal error while handling the request"), true);
            server_.request_finished();
        }
    }

    // Counts a request answered here rather than by a route's handler, under its route when
    // its header says which.
    void count_rejected(unsigned status) {
        std::string_view method;
        std::string_view path;
        // The start line is parsed before any header field: a body over the limit is refused
        // from Content-Length with the header still incomplete.
        if (parser_) {
            const auto& msg = parser_->get();
            method = std::string_view(msg.method_string().data(), msg.method_string().size());
            path = std::string_view(msg.target().data(), msg.target().size());
            path = path.substr(0, path.find('?'));
        }
        server_.router.rejected(method, path, status);
    }

    void send_error_and_close(Response r) {
        keep_alive_ = false;
        version_ = 11;
        write(std::move(r), true);
    }

    void write(Response r, bool close_after) {
        if (r.stream) {
            write_stream(std::move(r));
            return;
        }
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
            static_cast<bhttp::status>(r.status), version_);
        res->set(bhttp::field::server, "runbookd/" RUNBOOKD_VERSION);
        res->set(bhttp::field::content_type, r.content_type);
        for (const auto& [k, v] : r.headers) {
            res->set(k, v);
        }
        res->body() = r.render_body ? r.render_body() : std::move(r.body);
        const bool keep = keep_alive_ && !close_after && !r.close && !server_.stopping;
        res->keep_alive(keep);
        res->prepare_payload();
        tcp_().expires_after(server_.options.request_timeout);
        bhttp::async_write(
            stream_, *res,
            [self = this->shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                if (ec || !keep) {
                    self->close();
                    return;
                }
                self->read_header();
            });
    }

    // A streamed body: the header, then a chunk per piece the stream gives, then the last
    // chunk; the connection closes afterwards. A client that stops reading is cut off by the
    // write deadline; one that leaves is noticed at the next write.
    void write_stream(Response r) {
        auto res = std::make_shared<bhttp::response<bhttp::empty_body>>(
            static_cast<bhttp::status>(r.status), version_);
        res->set(bhttp::field::server, "runbookd/" RUNBOOKD_VERSION);
        res->set(bhttp::field::content_type, r.content_type);
        res->set(bhttp::field::cache_control, "no-cache");
        for (const auto& [k, v] : r.headers) {
            res->set(k, v);
        }
        res->chunked(true);
        res->keep_alive(false);
        body_stream_ = std::move(r.stream);
        auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*res);
        tcp_().expires_after(server_.options.request_timeout);
        bhttp::async_write_header(
            stream_, *serializer,
            [self = this->shared_from_this(), res, serializer](beast::error_code ec, std::size_t) {
                if (ec) {
                    self->close();
                    return;
                }
                self->pump_stream();
            });
    }

    void pump_stream() {
        BodyStream::Piece piece =
            server_.stopping ? BodyStream::Piece{{}, true} : body_stream_->next();
        const bool done = piece.done;
        if (!piece.data.empty()) {
            auto data = std::make_shared<std::string>(std::move(piece.data));
            tcp_().expires_after(server_.options.request_timeout);
            asio::async_write(
                stream_, bhttp::make_chunk(asio::buffer(*data)),
                [self = this->shared_from_this(), data, done](beast::error_code ec, std::size_t) {
                    if (ec) {
                        self->close();
                    } else if (done) {
                        self->end_stream();
                    } else {
                        self->pump_stream();
                    }
                });
            return;
        }
        if (done) {
            end_stream();
            return;
        }
        if (!stream_timer_) {
            stream_timer_.emplace(stream_.get_executor());
        }
        stream_timer_->expires_after(kStreamPollInterval);
        stream_timer_->async_wait([self = this->shared_from_this()](beast::error_code ec) {
            if (ec) {
                self->close();
                return;
            }
            self->pump_stream();
        });
    }

    void end_stream() {
        body_stream_.reset();
        tcp_().expires_after(server_.options.request_timeout);
        asio::async_write(
            stream_, bhttp::make_chunk_last(),
            [self = this->shared_from_this()](beast::error_code, std::size_t) { self->close(); });
    }

    void close() {
        beast::error_code ignored;
        tcp_().socket().shutdown(tcp::socket::shutdown_send, ignored);
        tcp_().close();
    }

    Stream stream_;
    beast::flat_buffer buffer_;
    std::shared_ptr<BodyStream> body_stream_;  // while a streamed body is being sent
    std::optional<asio::steady_timer> stream_timer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    Server::Impl& server_;
    std::string remote_;
    bool keep_alive_ = true;
    unsigned version_ = 11;
};

}  // namespace

void Server::Impl::accept() {
    acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
        if (ec) {
            if (ec != asio::error::operation_aborted && !stopping) {
                log->warn("accept failed error={}", log::quote(ec.message()));
                accept();
            }
            return;
        }
        if (connections.load() >= options.max_connections) {
            log->warn("connection refused: too many connections limit={}", options.max_connections);
            beast::error_code ignored;
            socket.close(ignored);
        } else {
            ++connections;
            // Answers are single small writes after a request; do not let Nagle hold them back.
            beast::error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            if (tls) {
                std::make_shared<Session<TlsStream>>(*this, std::move(socket), *tls)->start();
            } else {
                std::make_shared<Session<PlainStream>>(*this, std::move(socket))->start();
            }
        }
        accept();
    });
}

Server::Server(ServerOptions options, const Router& router)
    : impl_(std::make_unique<Impl>(std::move(options), router)) {}

Server::~Server() {
    stop(std::chrono::milliseconds(0));
}

Status Server::Impl::setup_tls() {
    const TlsOptions& t = options.tls;
    tls.emplace(ssl::context::tls_server);
    tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    beast::error_code ec;
    const auto fail = [&](std::string_view what, const std::string& file) {
        tls.reset();
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("http.tls: cannot load {} {}: {}", what, file, ec.message()));
    };
    if (tls->use_certificate_chain_file(t.cert_file, ec); ec) {
        return fail("cert_file", t.cert_file);
    }
    if (tls->use_private_key_file(t.key_file, ssl::context::pem, ec); ec) {
        return fail("key_file", t.key_file);
    }
    if (!t.client_ca_file.empty()) {
        if (tls->load_verify_file(t.client_ca_file, ec); ec) {
            return fail("client_ca_file", t.client_ca_file);
        }
        tls->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
    return {};
}

Status Server::start() {
    auto& im = *impl_;
    if (im.options.tls.enabled()) {
        if (auto s = im.setup_tls(); !s) {
            return s;
        }
    }
    beast::error_code ec;
    const auto address = asio::ip::make_address(im.options.host, ec);
    if (ec) {
        return make_error(ErrorCode::InvalidArgument, fmt::format("bad listen address \"{}\": {}",
                                                                  im.options.host, ec.message()));
    }
    const tcp::endpoint endpoint(address, im.options.port);
    const auto fail = [&](const char* what) {
        return make_error(ErrorCode::Unavailable, fmt::format("listening on {} failed: {}: {}",
                                                              endpoint.address().to_string() + ":" +
                                                                  std::to_string(endpoint.port()),
                                                              what, ec.message()));
    };
    if (im.acceptor.open(endpoint.protocol(), ec); ec) {
        return fail("open");
    }
    if (im.acceptor.set_option(asio::socket_base::reuse_address(true), ec); ec) {
        return fail("setsockopt");
    }
    if (im.acceptor.bind(endpoint, ec); ec) {
        return fail("bind");
    }
    if (im.acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
        return fail("listen");
    }
    im.bound_port = im.acceptor.local_endpoint().port();
    im.accept();
    const std::size_t n = std::max<std::size_t>(1, im.options.threads);
    for (std::size_t i = 0; i < n; ++i) {
        im.threads.emplace_back([&im] { im.io.run(); });
    }
    return {};
}

std::uint16_t Server::port() const {
    return impl_->bound_port;
}

void Server::stop(std::chrono::milliseconds drain) {
    auto& im = *impl_;
    if (im.stopping.exchange(true)) {
        return;
    }
    asio::post(im.io, [&im] {
        beast::error_code ignored;
        im.acceptor.close(ignored);
    });
    {
        std::unique_lock lock(im.mutex);
        im.drained.wait_for(lock, drain, [&im] { return im.in_flight.load() == 0; });
    }
    im.io.stop();
    for (auto& t : im.threads) {
        t.join();
    }
    im.threads.clear();
}

}  // namespace runbookd::http
