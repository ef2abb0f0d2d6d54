#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

// A minimal Prometheus client: counters, gauges and histograms with fixed buckets, grouped in
// labelled families and rendered in the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/). Debian 12 packages no C++
// Prometheus client, so runbookd carries this one.
//
// Updating a metric is one or two relaxed atomic operations and may happen on any thread.
// Looking up a labelled child takes the family's mutex: hot paths look their children up once
// and keep the reference, which stays valid as long as the registry.
namespace runbookd::metrics {

enum class Type { Counter, Gauge, Histogram };

// A count that only goes up (a `_total` metric).
class Counter {
  public:
    void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
  public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
    double value() const { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<double> value_{0.0};
};

// Observations counted in fixed buckets (upper bounds, ascending; +Inf is implicit). Buckets
// are stored per bucket and made cumulative when rendered, so an observation is two atomic
// adds and a short search.
class Histogram {
  public:
    explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);

    void observe(double value);

    struct Snapshot {
        std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf (== count)
        double sum = 0.0;
        std::uint64_t count = 0;
    };
    Snapshot snapshot() const;
    const std::vector<double>& bounds() const { return *bounds_; }

  private:
    std::shared_ptr<const std::vector<double>> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_->size() + 1
    std::atomic<double> sum_{0.0};
};

// Bucket bounds in seconds for durations from a few milliseconds to an hour.
std::vector<double> duration_buckets();

// One metric name with its HELP and TYPE lines and its labelled children.
class FamilyBase {
  public:
    FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels);
    virtual ~FamilyBase() = default;
    FamilyBase(const FamilyBase&) = delete;
    FamilyBase& operator=(const FamilyBase&) = delete;

    const std::string& name() const { return name_; }
    void render(std::string& out) const;

  protected:
    // Appends every child's samples; called with HELP and TYPE already written.
    virtual void render_samples(std::string& out) const = 0;
    void append_sample(std::string& out, std::string_view suffix,
                       const std::vector<std::string>& values, std::string_view extra_label,
                       std::string_view extra_value, double value) const;

    std::string name_;
    std::string help_;
    Type type_;
    std::vector<std::string> labels_;
};

// The children of one family, by label values. At most `max_children` exist: past that, new
// label combinations are counted under a child whose every value is "other", so a family can
// never grow without bound.
template <class T>
class Family final : public FamilyBase {
  public:
    using Factory = std::function<std::unique_ptr<T>()>;

    Family(std::string name, std::string help, Type type, std::vector<std::string> labels,
           std::size_t max_children, Factory factory)
        : FamilyBase(std::move(name), std::move(help), type, std::move(labels)),
          max_children_(max_children),
          factory_(std::move(factory)) {}

    // The child for `values` (one per label name, in order), created at first use.
    T& with(const std::vector<std::string>& values) {
        std::lock_guard lock(mutex_);
        if (auto it = children_.find(values); it != children_.end()) {
            return *it->second;
        }
        if (children_.size() + 1 >= max_children_) {
            const std::vector<std::string> other(values.size(), "other");
            return child_locked(other);
        }
        return child_locked(values);
    }

    // The only child of a family without labels.
    T& get() { return with({}); }

  private:
    T& child_locked(const std::vector<std::string>& values) {
        auto& slot = children_[values];
        if (!slot) {
            slot = factory_();
        }
        return *slot;
    }

    void render_samples(std::string& out) const override;

    std::size_t max_children_;
    Factory factory_;
    mutable std::mutex mutex_;
    std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

// Defined in registry.cpp, one per kind of metric.
template <>
void Family<Counter>::render_samples(std::string& out) const;
template <>
void Family<Gauge>::render_samples(std::string& out) const;
template <>
void Family<Histogram>::render_samples(std::string& out) const;

// The families of one process, rendered in the order they were registered. Registering is
// not meant for hot paths (it takes a mutex); a name may be registered once.
class Registry {
  public:
    static constexpr std::size_t kDefaultMaxChildren = 1000;

    Family<Counter>& counter(std::string name, std::string help,
                             std::vector<std::string> labels = {},
                             std::size_t max_children = kDefaultMaxChildren);
    Family<Gauge>& gauge(std::string name, std::string help, std::vector<std::string> labels = {},
                         std::size_t max_children = kDefaultMaxChildren);
    Family<Histogram>& histogram(std::string name, std::string help, std::vector<double> bounds,
                                 std::vector<std::string> labels = {},
                                 std::size_t max_children = kDefaultMaxChildren);

    // Every family in the text format 0.0.4.
    std::string render() const;

  private:
    template <class F>
    F& add(std::unique_ptr<F> family);

    mutable std::mutex mutex_;
    std::deque<std::unique_ptr<FamilyBase>> families_;
};

// Content-Type of the text format.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Appends a family of one unlabelled sample, for values read at scrape time (process_*,
// readiness, queue depth) rather than kept in the registry.
void append_single(std::string& out, std::string_view name, std::string_view help, Type type,
                   double value);

// Text-format helpers, exposed for tests.
std::string escape_label_value(std::string_view value);
std::string escape_help(std::string_view help);
std::string format_value(double value);

}  // namespace runbookd::metrics
