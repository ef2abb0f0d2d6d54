#include "runbook_module.hpp"

PYBIND11_MODULE(_core, module) {
    runbookd::bindings::define_runbook_module(module);
}
