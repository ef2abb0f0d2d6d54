#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <yaml-cpp/yaml.h>

#include <runbookd/result.hpp>

namespace runbookd {

// A YAML file read whole: its text (which a ParseContext pointing into it needs to outlive it)
// and its parsed root.
struct YamlFile {
    std::string text;
    YAML::Node root;
};

// Reads and parses `path`. Errors: NotFound when the file does not exist, InvalidArgument
// ("PATH: cannot read WHAT: cause", or "PATH:LINE:COLUMN: YAML syntax error: ...") otherwise.
Result<YamlFile> load_yaml_file(const std::string& path, std::string_view what);

}  // namespace runbookd
