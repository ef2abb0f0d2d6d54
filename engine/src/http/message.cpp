#include "http/message.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

void Router::add(std::string method, std::string pattern, Handler handler) {
    routes_.push_back(Route{std::move(method), split_path(pattern), std::move(handler)});
}

void Router::dispatch(Request&& request, Responder respond) const {
    const auto segments = split_path(request.path);
    std::vector<std::string> allowed;
    for (const auto& route : routes_) {
        if (route.segments.size() != segments.size()) {
            continue;
        }
        std::map<std::string, std::string, std::less<>> params;
        bool match = true;
        for (std::size_t i = 0; i < segments.size() && match; ++i) {
            const auto& want = route.segments[i];
            if (want.size() > 2 && want.front() == '{' && want.back() == '}') {
                params[want.substr(1, want.size() - 2)] = percent_decode(segments[i]);
            } else {
                match = want == segments[i];
            }
        }
        if (!match) {
            continue;
        }
        if (route.method != request.method) {
            allowed.push_back(route.method);
            continue;
        }
        request.params = std::move(params);
        route.handler(std::move(request), std::move(respond));
        return;
    }
    if (allowed.empty()) {
        respond(json_error(404, "not_found", fmt::format("no route for {}", request.path)));
        return;
    }
    std::string allow;
    for (const auto& m : allowed) {
        allow += allow.empty() ? m : ", " + m;
    }
    Response r = json_error(
        405, "method_not_allowed",
        fmt::format("{} does not accept {} (allowed: {})", request.path, request.method, allow));
    r.headers.emplace_back("Allow", allow);
    respond(std::move(r));
}

}  // namespace runbookd::http
