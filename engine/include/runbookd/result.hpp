#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace runbookd {

// What kind of failure an Error is. HTTP handlers map these to status codes, so keep the list
// short and about the consequence, not the cause.
enum class ErrorCode {
    InvalidArgument,  // the input is wrong; retrying the same input fails again
    NotFound,
    FailedPrecondition,  // the target is not in a state that allows it (a finished run)
    Unavailable,         // a dependency (database, disk) failed; retrying later may work
    Cancelled,
    DeadlineExceeded,
    Internal,
};

const char* error_code_name(ErrorCode code);

// A failure from outside the daemon, carried as a value. `message` reads
// "operation failed: cause", lower case and without a final period.
struct Error {
    ErrorCode code = ErrorCode::Internal;
    std::string message;
    // Where the problem is, when input was at fault: a payload field path
    // ("alerts[1].startsAt") or a file position ("runbooks/disk.yaml:12:7"). May be empty.
    std::string where;

    // "where: message", or just the message when `where` is empty.
    std::string describe() const { return where.empty() ? message : where + ": " + message; }
};

// Either a value or an Error. Functions that can fail because of input, the database or a
// child process return one of these instead of throwing.
template <typename T>
class [[nodiscard]] Result {
  public:
    Result(T value) : data_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
    Result(Error error) : data_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return std::holds_alternative<T>(data_); }
    explicit operator bool() const { return ok(); }

    T& value() & {
        assert(ok());
        return std::get<T>(data_);
    }
    const T& value() const& {
        assert(ok());
        return std::get<T>(data_);
    }
    T&& value() && {
        assert(ok());
        return std::get<T>(std::move(data_));
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const {
        assert(!ok());
        return std::get<Error>(data_);
    }

  private:
    std::variant<T, Error> data_;
};

// Success or an Error, for operations without a value.
class [[nodiscard]] Status {
  public:
    Status() = default;
    Status(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

    static Status ok_status() { return {}; }

    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    const Error& error() const {
        assert(failed_);
        return error_;
    }

  private:
    Error error_;
    bool failed_ = false;
};

inline Error make_error(ErrorCode code, std::string message, std::string where = {}) {
    return Error{code, std::move(message), std::move(where)};
}

}  // namespace runbookd
