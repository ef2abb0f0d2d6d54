#pragma once

#include <memory>
#include <string>

#include <runbookd/store.hpp>

#include "http/message.hpp"

namespace runbookd::api {

// The server-sent events of GET /api/v1/runs/{id}/follow (docs/http-api.md): the run's state,
// each attempt as it starts and ends, and its output as the output file grows, until the run
// has ended and everything of it was sent. `output_dir` is exec.output_dir (empty: no output
// files, so output comes only as the excerpts of ended attempts).
std::shared_ptr<http::BodyStream> follow_run(Store& store, RunId run, std::string output_dir);

}  // namespace runbookd::api
