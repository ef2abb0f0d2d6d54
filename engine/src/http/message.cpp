#include "http/message.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/json_text.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::http {
namespace {

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < path.size()) {
        if (path[pos] == '/') {
            ++pos;
            continue;
        }
        const std::size_t end = std::min(path.find('/', pos), path.size());
        out.emplace_back(path.substr(pos, end - pos));
        pos = end;
    }
    return out;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

std::string percent_decode(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '+') {
            out += ' ';
        } else if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
                   hex_value(text[i + 2]) >= 0) {
            out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
            i += 2;
        } else {
            out += text[i];
        }
    }
    return out;
}

}  // namespace

std::string_view Request::header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
        if (k == name) {
            return v;
        }
    }
    return {};
}

std::string Request::query_param(std::string_view name) const {
    std::size_t pos = 0;
    while (pos <= query.size()) {
        const std::size_t end = std::min(query.find('&', pos), query.size());
        const std::string_view pair = std::string_view(query).substr(pos, end - pos);
        const std::size_t eq = pair.find('=');
        if (percent_decode(pair.substr(0, eq)) == name) {
            return eq == std::string_view::npos ? std::string()
                                                : percent_decode(pair.substr(eq + 1));
        }
        pos = end + 1;
    }
    return {};
}

Response json_response(unsigned status, const nlohmann::json& body) {
    Response r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    r.body += '\n';
    return r;
}

Response json_error(unsigned status, std::string_view code, std::string_view message,
                    std::string_view field) {
    nlohmann::json error = {{"code", code}, {"message", message}};
    if (!field.empty()) {
        error["field"] = field;
    }
    return json_response(status, {{"error", error}});
}

Response error_response(const Error& error) {
    unsigned status = 500;
    switch (error.code) {
        case ErrorCode::InvalidArgument:
            status = 400;
            break;
        case ErrorCode::NotFound:
            status = 404;
            break;
        case ErrorCode::FailedPrecondition:
            status = 409;
            break;
        case ErrorCode::Unavailable:
            status = 503;
            break;
        case ErrorCode::Cancelled:
        case ErrorCode::DeadlineExceeded:
            status = 503;
            break;
        case ErrorCode::Internal:
            status = 500;
            break;
    }
    return json_error(status, error_code_name(error.code), error.message, error.where);
}

Router::Router() {
    auto& m = metrics::runbookd_metrics();
    for (unsigned c = 1; c <= 5; ++c) {
        unmatched_[c - 1] = &m.http_requests("other", c);
    }
}

void Router::add(std::string method, std::string pattern, auth::Access access, Handler handler,
                 RejectedHook on_rejected) {
    Route route{std::move(method),      pattern, split_path(pattern), access, std::move(handler),
                std::move(on_rejected), {}};
    for (unsigned c = 1; c <= 5; ++c) {
        route.requests[c - 1] = &metrics::runbookd_metrics().http_requests(pattern, c);
    }
    routes_.push_back(std::move(route));
}

void Router::count(const StatusCounters& counters, unsigned status) {
    const unsigned status_class = status / 100;
    counters[status_class >= 1 && status_class <= 5 ? status_class - 1 : 4]->inc();
}

const Router::Route* Router::find(std::string_view method, const std::vector<std::string>& segments,
                                  std::map<std::string, std::string, std::less<>>* params,
                                  std::vector<std::string>* allowed) const {
    const Route* path_match = nullptr;
    for (const auto& route : routes_) {
        if (route.segments.size() != segments.size()) {
            continue;
        }
        std::map<std::string, std::string, std::less<>> found;
        bool match = true;
        for (std::size_t i = 0; i < segments.size() && match; ++i) {
            const auto& want = route.segments[i];
            if (want.size() > 2 && want.front() == '{' && want.back() == '}') {
                if (params != nullptr) {
                    found[want.substr(1, want.size() - 2)] = percent_decode(segments[i]);
                }
            } else {
                match = want == segments[i];
            }
        }
        if (!match) {
            continue;
        }
        if (route.method != method) {
            if (allowed != nullptr) {
                allowed->push_back(route.method);
            }
            path_match = path_match != nullptr ? path_match : &route;
            continue;
        }
        if (params != nullptr) {
            *params = std::move(found);
        }
        return &route;
    }
    // A known path with another method: counted under that path's pattern, but not run.
    return allowed != nullptr ? nullptr : path_match;
}

void Router::dispatch(Request&& request, Responder respond) const {
    const auto segments = split_path(request.path);
    std::vector<std::string> allowed;
    std::map<std::string, std::string, std::less<>> params;
    if (const Route* route = find(request.method, segments, &params, &allowed)) {
        // Every JSON body the API takes is shallow (the webhook's is four levels deep); a deeper
        // one is refused before any parser or document has to hold it.
        if (const auto at = json_text::nesting_beyond(request.body, kJsonNestingLimit);
            at != std::string_view::npos) {
            count(route->requests, 400);
            if (route->on_rejected) {
                route->on_rejected(400);
            }
            respond(json_error(400, "invalid_json",
                               fmt::format("the body nests arrays and objects more than {} "
                                           "levels deep (at byte {})",
                                           kJsonNestingLimit, at)));
            return;
        }
        request.params = std::move(params);
        request.route = route->pattern;
        Responder counted = [counters = &route->requests,
                             respond = std::move(respond)](Response r) {
            count(*counters, r.status);
            respond(std::move(r));
        };
        if (!route->access.is_open()) {
            auto refusal = guard_ ? guard_(route->access, route->pattern, request)
                                  : std::optional<Response>(json_error(
                                        503, "unavailable", "no authenticator is configured"));
            if (refusal) {
                counted(std::move(*refusal));
                return;
            }
        }
        route->handler(std::move(request), std::move(counted));
        return;
    }
    if (allowed.empty()) {
        count(unmatched_, 404);
        respond(json_error(404, "not_found", fmt::format("no route for {}", request.path)));
        return;
    }
    std::string allow;
    for (const auto& m : allowed) {
        allow += allow.empty() ? m : ", " + m;
    }
    const Route* path_route = find(request.method, segments, nullptr, nullptr);
    count(path_route != nullptr ? path_route->requests : unmatched_, 405);
    Response r = json_error(
        405, "method_not_allowed",
        fmt::format("{} does not accept {} (allowed: {})", request.path, request.method, allow));
    r.headers.emplace_back("Allow", allow);
    respond(std::move(r));
}

std::vector<Router::RouteInfo> Router::routes() const {
    std::vector<RouteInfo> out;
    for (const auto& r : routes_) {
        out.push_back({r.method, r.pattern, r.access});
    }
    return out;
}

void Router::rejected(std::string_view method, std::string_view path, unsigned status) const {
    const Route* route = find(method, split_path(path), nullptr, nullptr);
    if (route == nullptr) {
        count(unmatched_, status);
        return;
    }
    count(route->requests, status);
    if (route->on_rejected && route->method == method) {
        route->on_rejected(status);
    }
}

}  // namespace runbookd::http
