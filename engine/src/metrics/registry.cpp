#include "metrics/registry.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace runbookd::metrics {
namespace {

const char* type_name(Type type) {
    switch (type) {
        case Type::Counter:
            return "counter";
        case Type::Gauge:
            return "gauge";
        case Type::Histogram:
            return "histogram";
    }
    return "untyped";
}

}  // namespace

Histogram::Histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_->size() + 1)) {}

void Histogram::observe(double value) {
    const auto& b = *bounds_;
    // Prometheus buckets are "less than or equal": a value on a bound belongs to that bucket.
    const auto index =
        static_cast<std::size_t>(std::lower_bound(b.begin(), b.end(), value) - b.begin());
    buckets_[index].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    s.cumulative.reserve(bounds_->size() + 1);
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_->size(); ++i) {
        running += buckets_[i].load(std::memory_order_relaxed);
        s.cumulative.push_back(running);
    }
    // The count is the +Inf bucket by construction, so the two always agree in a scrape.
    s.count = running;
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
}

std::vector<double> duration_buckets() {
    return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600};
}

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        switch (c) {
            case '\\':
                out += "\\\\";
                break;
            case '"':
                out += "\\\"";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::string escape_help(std::string_view help) {
    std::string out;
    out.reserve(help.size());
    for (const char c : help) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

std::string format_value(double value) {
    if (std::isnan(value)) {
        return "NaN";
    }
    if (std::isinf(value)) {
        return value > 0 ? "+Inf" : "-Inf";
    }
    // Shortest text that reads back as the same double; whole numbers print without ".0".
    return fmt::format("{}", value);
}

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)) {}

void FamilyBase::render(std::string& out) const {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name_, escape_help(help_), name_,
                       type_name(type_));
    render_samples(out);
}

void FamilyBase::append_sample(std::string& out, std::string_view suffix,
                               const std::vector<std::string>& values, std::string_view extra_label,
                               std::string_view extra_value, double value) const {
    out += name_;
    out += suffix;
    const bool any = !values.empty() || !extra_label.empty();
    if (any) {
        out += '{';
        for (std::size_t i = 0; i < values.size(); ++i) {
            out += fmt::format("{}{}=\"{}\"", i == 0 ? "" : ",", labels_[i],
                               escape_label_value(values[i]));
        }
        if (!extra_label.empty()) {
            out += fmt::format("{}{}=\"{}\"", values.empty() ? "" : ",", extra_label,
                               escape_label_value(extra_value));
        }
        out += '}';
    }
    out += ' ';
    out += format_value(value);
    out += '\n';
}

template <>
void Family<Counter>::render_samples(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, child] : children_) {
        append_sample(out, "", values, {}, {}, static_cast<double>(child->value()));
    }
}

template <>
void Family<Gauge>::render_samples(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, child] : children_) {
        append_sample(out, "", values, {}, {}, child->value());
    }
}

template <>
void Family<Histogram>::render_samples(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, child] : children_) {
        const auto snap = child->snapshot();
        const auto& bounds = child->bounds();
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            append_sample(out, "_bucket", values, "le", format_value(bounds[i]),
                          static_cast<double>(snap.cumulative[i]));
        }
        append_sample(out, "_bucket", values, "le", "+Inf",
                      static_cast<double>(snap.cumulative.back()));
        append_sample(out, "_sum", values, {}, {}, snap.sum);
        append_sample(out, "_count", values, {}, {}, static_cast<double>(snap.count));
    }
}

template <class F>
F& Registry::add(std::unique_ptr<F> family) {
    std::lock_guard lock(mutex_);
    for (const auto& f : families_) {
        if (f->name() == family->name()) {
            // A bug in runbookd's own registration code, not something outside can cause.
            throw std::logic_error("metric registered twice: " + family->name());
        }
    }
    F& ref = *family;
    families_.push_back(std::move(family));
    return ref;
}

Family<Counter>& Registry::counter(std::string name, std::string help,
                                   std::vector<std::string> labels, std::size_t max_children) {
    return add(std::make_unique<Family<Counter>>(std::move(name), std::move(help), Type::Counter,
                                                 std::move(labels), max_children,
                                                 [] { return std::make_unique<Counter>(); }));
}

Family<Gauge>& Registry::gauge(std::string name, std::string help, std::vector<std::string> labels,
                               std::size_t max_children) {
    return add(std::make_unique<Family<Gauge>>(std::move(name), std::move(help), Type::Gauge,
                                               std::move(labels), max_children,
                                               [] { return std::make_unique<Gauge>(); }));
}

Family<Histogram>& Registry::histogram(std::string name, std::string help,
                                       std::vector<double> bounds, std::vector<std::string> labels,
                                       std::size_t max_children) {
    assert(std::is_sorted(bounds.begin(), bounds.end()));
    auto shared = std::make_shared<const std::vector<double>>(std::move(bounds));
    return add(std::make_unique<Family<Histogram>>(
        std::move(name), std::move(help), Type::Histogram, std::move(labels), max_children,
        [shared] { return std::make_unique<Histogram>(shared); }));
}

std::string Registry::render() const {
    std::string out;
    out.reserve(16 * 1024);
    std::lock_guard lock(mutex_);
    for (const auto& family : families_) {
        family->render(out);
    }
    return out;
}

void append_single(std::string& out, std::string_view name, std::string_view help, Type type,
                   double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, escape_help(help), name,
                       type_name(type), name, format_value(value));
}

}  // namespace runbookd::metrics
