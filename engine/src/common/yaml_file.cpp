#include "common/yaml_file.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include <runbookd/step_parser.hpp>

namespace runbookd {

Result<YamlFile> load_yaml_file(const std::string& path, std::string_view what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        const int error = errno;
        return make_error(error == ENOENT ? ErrorCode::NotFound : ErrorCode::InvalidArgument,
                          fmt::format("{}: cannot read {}: {}", path, what, std::strerror(error)));
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    YamlFile out{buffer.str(), {}};
    try {
        out.root = YAML::Load(out.text);
    } catch (const YAML::ParserException& e) {
        const ParseContext ctx(path, out.text);
        return make_error(
            ErrorCode::InvalidArgument,
            fmt::format("{}: YAML syntax error: {}", ctx.location(e.mark).to_string(), e.msg));
    }
    return out;
}

}  // namespace runbookd
