#include <runbookd/result.hpp>

namespace runbookd {

const char* error_code_name(ErrorCode code) {
    switch (code) {
        case ErrorCode::InvalidArgument:
            return "invalid_argument";
        case ErrorCode::NotFound:
            return "not_found";
        case ErrorCode::FailedPrecondition:
            return "failed_precondition";
        case ErrorCode::Unavailable:
            return "unavailable";
        case ErrorCode::Cancelled:
            return "cancelled";
        case ErrorCode::DeadlineExceeded:
            return "deadline_exceeded";
        case ErrorCode::Internal:
            return "internal";
    }
    return "internal";
}

}  // namespace runbookd
