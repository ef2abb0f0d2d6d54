#include "exec/redact.hpp"

#include "exec/output.hpp"

namespace runbookd::exec {

SecretRedaction::SecretRedaction(std::vector<std::pair<std::string, std::string>> secrets) {
    for (auto& s : secrets) {
        if (!s.second.empty()) {
            secrets_.push_back(std::move(s));
        }
    }
}

std::string SecretRedaction::text(std::string_view text) const {
    if (!active() || text.empty()) {
        return std::string(text);
    }
    Redactor redactor(secrets_);
    std::string out = redactor.feed(text);
    out += redactor.finish();
    return out;
}

std::vector<std::string> SecretRedaction::argv(const std::vector<std::string>& argv) const {
    std::vector<std::string> out;
    out.reserve(argv.size());
    for (const auto& arg : argv) {
        out.push_back(text(arg));
    }
    return out;
}

void SecretRedaction::json(nlohmann::json& value) const {
    if (!active()) {
        return;
    }
    if (value.is_string()) {
        value = text(value.get_ref<const std::string&>());
    } else if (value.is_array()) {
        for (auto& item : value) {
            json(item);
        }
    } else if (value.is_object()) {
        nlohmann::json out = nlohmann::json::object();
        for (auto& [key, item] : value.items()) {
            json(item);
            out[text(key)] = std::move(item);
        }
        value = std::move(out);
    }
}

std::string SecretRedaction::json_text(const std::string& text_value) const {
    if (!active() || text_value.empty()) {
        return text_value;
    }
    auto value = nlohmann::json::parse(text_value, nullptr, false);
    if (value.is_discarded()) {
        return text(text_value);
    }
    json(value);
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace runbookd::exec
