#pragma once

#include <memory>

#include <runbookd/runbook.hpp>
#include <runbookd/store.hpp>

#include "http/message.hpp"
#include "intake/alertmanager_intake.hpp"
#include "run/scheduler.hpp"

namespace runbookd::api {

struct ApiContext {
    Store* store = nullptr;
    std::shared_ptr<const RunbookCatalog> catalog;
    intake::AlertmanagerIntake* intake = nullptr;
    run::Scheduler* scheduler = nullptr;
};

// Registers the HTTP API (docs/http-api.md) on `router`. `context` must outlive the router.
void add_routes(http::Router& router, const ApiContext& context);

// True for "application/json", with or without parameters such as "; charset=utf-8".
bool is_json_media_type(std::string_view content_type);

}  // namespace runbookd::api
