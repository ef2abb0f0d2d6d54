#include "ctl/settings.hpp"

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <runbookd/step_parser.hpp>

#include "common/yaml_file.hpp"

namespace runbookd::ctl {
namespace {

std::optional<std::string> env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') {
        return std::nullopt;
    }
    return std::string(value);
}

// The file's url and token; a missing optional file gives an empty connection.
Result<ConnectionFlags> read_config(const std::string& path, bool required) {
    ConnectionFlags out;
    auto file = load_yaml_file(path, "config file");
    if (!file) {
        if (!required && file.error().code == ErrorCode::NotFound) {
            return out;
        }
        return file.error();
    }
    const YAML::Node& root = file->root;
    ParseContext ctx(path, file->text);
    if (!root.IsNull() && ctx.check_mapping(root, "runbookctl config",
                                            {"url", "token", "ca_file", "cert_file", "key_file"})) {
        for (auto [key, target] :
             {std::pair{"url", &out.url}, std::pair{"token", &out.token},
              std::pair{"ca_file", &out.ca_file}, std::pair{"cert_file", &out.cert_file},
              std::pair{"key_file", &out.key_file}}) {
            if (const auto node = find_key(root, key); node.IsDefined()) {
                if (auto value = ctx.string(node, key)) {
                    *target = *value;
                }
            }
        }
    }
    if (ctx.failed()) {
        return make_error(ErrorCode::InvalidArgument, ctx.diagnostics().front().to_string());
    }
    // A token readable by others is as good as published; say so, as ssh does for keys.
    struct stat st {};
    if (out.token && ::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        std::fprintf(stderr,
                     "runbookctl: warning: %s holds a token and is readable by others "
                     "(chmod 600 it)\n",
                     path.c_str());
    }
    return out;
}

}  // namespace

std::string default_config_path() {
    if (auto xdg = env("XDG_CONFIG_HOME")) {
        return (std::filesystem::path(*xdg) / "runbookctl" / "config.yaml").string();
    }
    if (auto home = env("HOME")) {
        return (std::filesystem::path(*home) / ".config" / "runbookctl" / "config.yaml").string();
    }
    return {};
}

Result<Connection> resolve_connection(const ConnectionFlags& flags) {
    const std::string path = flags.config ? *flags.config : default_config_path();
    ConnectionFlags file;
    if (!path.empty()) {
        auto read = read_config(path, flags.config.has_value());
        if (!read) {
            return read.error();
        }
        file = std::move(*read);
    }
    Connection out;
    const auto pick = [](std::string& target, const std::optional<std::string>& flag,
                         const char* variable, const std::optional<std::string>& from_file) {
        if (flag) {
            target = *flag;
        } else if (auto e = env(variable)) {
            target = *e;
        } else if (from_file) {
            target = *from_file;
        }
    };
    pick(out.url, flags.url, "RUNBOOKD_URL", file.url);
    pick(out.token, flags.token, "RUNBOOKD_TOKEN", file.token);
    pick(out.ca_file, flags.ca_file, "RUNBOOKD_CA_FILE", file.ca_file);
    pick(out.cert_file, flags.cert_file, "RUNBOOKD_CERT_FILE", file.cert_file);
    pick(out.key_file, flags.key_file, "RUNBOOKD_KEY_FILE", file.key_file);
    while (!out.url.empty() && out.url.back() == '/') {
        out.url.pop_back();
    }
    return out;
}

}  // namespace runbookd::ctl
